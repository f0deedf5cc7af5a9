"""``--resume``: a run stopped part-way and resumed ends with the very weights of a run that never stopped."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from generation import train
from generation.training_state import INFO_FILE, STATE_FOLDER, find_state
from tests.conftest import train_tiny

STEPS = ("--vae-steps", "4", "--save-state", "all")
"""Autoencoder states at its steps 2 and 4, checkpoints (and states) at UNet steps 2 and 4."""


class Stopped(Exception):
    """Stands for the process being killed."""


def _stop_at(monkeypatch, name: str, call: int) -> None:
    """Make the ``call``-th call of ``generation.train.<name>`` stop the run, as a kill would."""
    real, calls = getattr(train, name), []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise Stopped
        return real(*args, **kwargs)

    monkeypatch.setattr(train, name, stopping)


def _weights(folder):
    return {part: load_file(folder / part / "diffusion_pytorch_model.safetensors") for part in ("unet", "vae")}


@pytest.fixture(scope="module")
def unbroken(tiny_data, tmp_path_factory):
    return train_tiny(tiny_data, tmp_path_factory.mktemp("unbroken"), *STEPS)


@pytest.mark.parametrize("stop", [("training_step", 3), ("vae_step", 3)], ids=["in-stage-1", "in-autoencoder"])
def test_a_stopped_and_resumed_run_ends_bit_for_bit_where_an_unbroken_one_does(unbroken, tiny_data, tmp_path, monkeypatch, stop):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _stop_at(patch, *stop)
        with pytest.raises(Stopped):
            train_tiny(tiny_data, out, *STEPS)
    assert not (out / "checkpoint-4").exists()
    newest = find_state(out)
    assert newest.parent.name == ("checkpoint-2" if stop[0] == "training_step" else "autoencoder-2")

    train_tiny(tiny_data, out, *STEPS, "--resume", str(out))

    expected, resumed = _weights(unbroken / "checkpoint-4"), _weights(out / "checkpoint-4")
    for part in ("unet", "vae"):
        assert expected[part].keys() == resumed[part].keys()
        different = [k for k in expected[part] if not torch.equal(expected[part][k], resumed[part][k])]
        assert not different, f"{part}: {len(different)} tensors differ, e.g. {different[:3]}"
    states = [torch.load(run / "checkpoint-4" / STATE_FOLDER / "state.pth", weights_only=True) for run in (unbroken, out)]
    for name in ("model", "ema"):
        assert all(torch.equal(states[0][name][k], states[1][name][k]) for k in states[0][name])
    assert json.loads((out / "checkpoint-4" / "polypturing.json").read_text())["schedule"]["resumed_from"] == str(out)


def test_save_state_last_keeps_only_the_newest_state_and_none_writes_none(tiny_data, tmp_path):
    last = train_tiny(tiny_data, tmp_path / "last", "--vae-steps", "4")
    assert [p.parent.parent.name for p in last.glob(f"*/{STATE_FOLDER}/{INFO_FILE}")] == ["checkpoint-4"]
    assert not list(last.glob("autoencoder-*"))
    none = train_tiny(tiny_data, tmp_path / "none", "--save-state", "none")
    assert not list(none.glob(f"**/{STATE_FOLDER}"))
    with pytest.raises(SystemExit):
        train.parse_args(["--data", str(tiny_data), "--out", str(none), "--resume", str(none)])


def test_resume_refuses_a_folder_without_state_and_a_state_of_another_model(tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        train.parse_args(["--data", str(tiny_data), "--out", str(tmp_path), "--resume", str(tmp_path)])
    assert stopped.value.code == 2
    assert "--resume" in (err := capsys.readouterr().err) and "no training state" in err
    run = train_tiny(tiny_data, tmp_path / "run")
    code = train.cli(["--data", str(tiny_data), "--out", str(tmp_path / "other"), "--preset", "demo", "--no-validation",
                      "--resume", str(run), "--device", "cpu", "--batch-size", "4"])
    assert code == 2
    assert "the state was trained otherwise" in capsys.readouterr().err
