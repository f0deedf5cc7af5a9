"""``--lora-rank``: both stages train a LoRA adapter on a Stable Diffusion UNet; each checkpoint is an adapter that loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from generation import train
from generation.checkpoints import LORA_FILE, discover_checkpoints, inspect_checkpoint
from generation.pipelines import load_pipeline
from generation.sampling import SamplingRequest, generate
from tests.conftest import train_tiny, write_labelled_folder


def _images(info) -> list[np.ndarray]:
    made = generate(load_pipeline(info, torch.device("cpu")), info, SamplingRequest(label="AD", prompt="a polyp", n=2, steps=3))
    return [np.asarray(item.image, dtype=np.int16) for item in made]


@pytest.fixture(scope="module")
def lora_run(tiny_sd, tmp_path_factory):
    data = write_labelled_folder(tmp_path_factory.mktemp("lora-data"), per_label=2)
    return train_tiny(data, tmp_path_factory.mktemp("lora"), "--base", str(tiny_sd), "--lora-rank", "4", "--lr", "0.05")


def test_lora_training_writes_adapters_of_both_stages_and_leaves_the_base_alone(lora_run, tiny_sd):
    assert sorted(p.name for p in lora_run.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    for name, stage in (("checkpoint-2", 1), ("checkpoint-4", 2)):
        folder = lora_run / name
        assert (folder / LORA_FILE).is_file() and not (folder / "unet").exists()
        keys = load_file(folder / LORA_FILE).keys()
        assert keys and all(".lora" in key and key.startswith("unet.") for key in keys)
        meta = json.loads((folder / "polypturing.json").read_text())
        assert (meta["stage"], meta["model"], meta["lora"]["rank"]) == (stage, "lora", 4)
        assert meta["base"] == str(tiny_sd.resolve())
    state = torch.load(lora_run / "checkpoint-4" / "training_state" / "state.pth", weights_only=True)
    assert state["model"] and all("lora_" in key for key in state["model"]), "only the adapter trains"


def test_the_adapter_loads_like_any_checkpoint_and_changes_the_images(lora_run, tiny_sd):
    found = discover_checkpoints(lora_run)
    assert [(info.layout, info.step) for info in found] == [("lora", 2), ("lora", 4)]
    adapter = inspect_checkpoint(lora_run / "checkpoint-4")
    assert adapter.base == tiny_sd.resolve() or str(adapter.base) == str(tiny_sd.resolve())
    with_adapter, base_only = _images(adapter), _images(inspect_checkpoint(tiny_sd))
    assert all(a.shape == b.shape for a, b in zip(with_adapter, base_only))
    assert max(np.abs(a - b).max() for a, b in zip(with_adapter, base_only)) > 0


def test_lora_rank_needs_a_base(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--data", "d", "--out", "o", "--lora-rank", "4"])
    assert "--lora-rank" in capsys.readouterr().err
