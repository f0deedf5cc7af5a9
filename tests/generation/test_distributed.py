"""Data-parallel training: two CPU processes over gloo train the tiny model, and its checkpoint loads and samples.

``torch.distributed.run`` starts the processes as ``accelerate launch`` does on GPUs (the same
environment variables); ``accelerate``'s own launcher runs one process when told ``--cpu``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from generation.checkpoints import inspect_checkpoint
from generation.pipelines import load_pipeline
from generation.sampling import SamplingRequest, generate
from tests.conftest import REPO


@pytest.mark.slow
def test_two_gloo_processes_train_together_and_write_one_checkpoint_that_loads(tiny_data, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "generation.train", "--data", str(tiny_data), "--out", str(out), "--tiny", "--vae-steps", "2",
               "--stage1-steps", "2", "--stage2-steps", "2", "--checkpoint-every", "2", "--batch-size", "4",
               "--device", "cpu", "--no-validation", "--log-every", "1"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    for rank in (0, 1):
        assert f"process {rank} of 2 on cpu" in log, log[-3000:]
    assert log.count("wrote ") == 2, "only the main process writes checkpoints"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-2", "checkpoint-4"]

    meta = json.loads((out / "checkpoint-4" / "polypturing.json").read_text())
    assert meta["schedule"]["processes"] == 2
    state = torch.load(out / "checkpoint-4" / "training_state" / "state.pth", weights_only=True)
    generators = [rng["generator"] for rng in state["rng"]]
    assert len(generators) == 2 and not torch.equal(*generators), "each process draws its own share of a batch"

    info = inspect_checkpoint(out / "checkpoint-4")
    images = generate(load_pipeline(info, torch.device("cpu")), info, SamplingRequest(label="AD", prompt="a polyp", n=1, steps=2))
    assert images[0].image.size == (16, 16)
