"""``generation.masks.train --resume`` (the trainer core's): a stopped and resumed ControlNet run ends bit for bit as an unbroken one."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from generation.masks import train as mask_train
from generation.phantom.frames import write_phantom_set


class Stopped(Exception):
    """Stands for the process being killed."""


def _run(base, pairs, out, *extra) -> None:
    args = mask_train.parse_args(["--base", str(base), "--data", str(pairs), "--out", str(out), "--steps", "4",
                                  "--checkpoint-every", "2", "--batch-size", "2", "--device", "cpu", *extra])
    assert mask_train.main(args) == 0


def test_a_resumed_controlnet_run_ends_where_an_unbroken_one_does(tiny_run, tmp_path, monkeypatch):
    pairs = tmp_path / "pairs"
    write_phantom_set(pairs, n_per_label=2, seed=2, size=(64, 64))
    base = tiny_run / "checkpoint-4"
    _run(base, pairs, tmp_path / "unbroken")
    real, calls = mask_train.training_step, []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Stopped
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(mask_train, "training_step", stopping)
        with pytest.raises(Stopped):
            _run(base, pairs, tmp_path / "stopped")
    assert sorted(p.name for p in (tmp_path / "stopped").iterdir()) == ["controlnet-2"]
    _run(base, pairs, tmp_path / "stopped", "--resume", str(tmp_path / "stopped"))
    name = "controlnet-4/diffusion_pytorch_model.safetensors"
    expected, resumed = load_file(tmp_path / "unbroken" / name), load_file(tmp_path / "stopped" / name)
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
