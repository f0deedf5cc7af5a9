"""A user's own weights: LoRA adapters (made with peft here), checkpoint-N/unet_ema/, single files."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from appconfig import AppConfig, Services
from database import checkpoints as checkpoint_store
from generation import sample
from generation.checkpoints import LORA_FILE, NotACheckpoint, discover_checkpoints, inspect_checkpoint
from generation.library import generate_and_record
from generation.pipelines import CheckpointLoadError, load_pipeline
from generation.sampling import SamplingRequest, generate
from tests.tiny_pipelines import make_lora, write_sd_single_file

CPU = torch.device("cpu")


def _pixels(info, **request):
    fields = {"label": "AD", "prompt": "a polyp", "n": 1, "steps": 2, "scheduler": None, **request}
    return np.asarray(generate(load_pipeline(info, CPU), info, SamplingRequest(**fields))[0].image).astype(int)


def _cli_rows(out, *args):
    assert sample.cli([*args, "--label", "AD", "--n", "2", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    with (out / "provenance.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def sd_lora(tiny_sd, tmp_path_factory):
    return make_lora(tiny_sd, tmp_path_factory.mktemp("lora") / "lora-sd")


def test_a_lora_with_base_changes_the_pixels_and_is_named_in_the_provenance(tmp_path, tiny_sd, sd_lora):
    base_rows = _cli_rows(tmp_path / "base", "--checkpoint", str(tiny_sd))
    rows = _cli_rows(tmp_path / "lora", "--checkpoint", str(sd_lora), "--base", str(tiny_sd), "--lora-scale", "0.7")
    assert {r["sha256"] for r in rows}.isdisjoint(r["sha256"] for r in base_rows)
    info = inspect_checkpoint(sd_lora, tiny_sd, adapter_scale=0.7)
    assert [(r["family"], r["layout"], r["adapter_scale"], r["adapter_fingerprint"], r["base_fingerprint"]) for r in rows] == [
        ("sd", "lora", "0.7", info.adapter_fingerprint, inspect_checkpoint(tiny_sd).fingerprint)] * 2
    assert "LoRA ×0.7 on tiny-sd" in info.label


def test_lora_scale_zero_gives_the_base_pixels_and_scale_is_part_of_the_identity(tiny_sd, sd_lora):
    zero, one = inspect_checkpoint(sd_lora, tiny_sd, adapter_scale=0.0), inspect_checkpoint(sd_lora, tiny_sd)
    assert np.array_equal(_pixels(zero), _pixels(inspect_checkpoint(tiny_sd)))
    assert not np.array_equal(_pixels(one), _pixels(zero))
    assert zero.fingerprint != one.fingerprint and zero.adapter_fingerprint == one.adapter_fingerprint
    with pytest.raises(NotACheckpoint, match="LoRA scale must be between 0 and 2, got 3"):
        inspect_checkpoint(sd_lora, tiny_sd, adapter_scale=3)


@pytest.mark.parametrize("family", ["flux", "kandinsky22"])
def test_a_lora_finds_its_base_in_the_adapter_metadata_and_changes_the_pixels(tmp_path, tiny_family, family):
    base = tiny_family(family)
    lora = make_lora(base, tmp_path / f"{family}-lora", metadata_base=str(base))
    info = inspect_checkpoint(lora)
    assert (info.family, info.layout, info.base) == (family, "lora", base)
    assert not np.array_equal(_pixels(info), _pixels(inspect_checkpoint(base)))
    assert np.array_equal(_pixels(inspect_checkpoint(lora, adapter_scale=0.0)), _pixels(inspect_checkpoint(base)))


def test_a_lora_without_base_or_with_a_hub_base_says_what_to_do(tmp_path, tiny_family):
    base = tiny_family("flux")
    with pytest.raises(NotACheckpoint, match=r"FLUX LoRA needs its base: --base DIR"):
        inspect_checkpoint(make_lora(base, tmp_path / "bare"))
    with pytest.raises(NotACheckpoint, match=r"black-forest-labs/FLUX.1-dev, is not a local pipeline folder .*nothing is downloaded"):
        inspect_checkpoint(make_lora(base, tmp_path / "hub", metadata_base="black-forest-labs/FLUX.1-dev"))


def test_several_adapters_over_one_base_are_separate_checkpoints_and_checkpoint_n_may_hold_one(tmp_path, tiny_sd, sd_lora):
    root = tmp_path / "adapters"
    shutil.copytree(sd_lora, root / "lora-a")
    make_lora(tiny_sd, root / "lora-b", seed=2)
    run = shutil.copytree(sd_lora, root / "run" / "checkpoint-300")
    (run / "optimizer.bin").write_bytes(b"accelerate state, not weights of the adapter")
    found = discover_checkpoints(root, tiny_sd)
    assert [(c.name, c.step, c.layout) for c in found] == [("lora-a", 0, "lora"), ("lora-b", 0, "lora"), ("run/checkpoint-300", 300, "lora")]
    assert found[0].fingerprint != found[1].fingerprint
    assert found[0].fingerprint == found[2].fingerprint, "the optimizer state beside the adapter is not its weights"


def test_the_generate_flow_records_the_adapter(tmp_path, tiny_sd, sd_lora):
    services = Services(AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "c", db_path=tmp_path / "s.db", device="cpu",
                                  demo_dir=tmp_path / "none", base=tiny_sd))
    rows = generate_and_record(services, sd_lora, SamplingRequest(label="AD", prompt="a polyp", n=1, steps=2))
    with services.db() as db:
        stored = checkpoint_store.list_checkpoints(db)[0]
    info = inspect_checkpoint(sd_lora, tiny_sd)
    assert stored["kind"] == "training-output" and stored["fingerprint"] == info.fingerprint
    assert stored["metadata"]["loading"] == {
        "family": "sd", "layout": "lora", "base": str(tiny_sd), "base_fingerprint": info.base_fingerprint,
        "adapter_fingerprint": info.adapter_fingerprint, "adapter_scale": 1.0,
    }
    assert rows[0]["adapter_fingerprint"] == info.adapter_fingerprint


def _training_output(tmp_path, tiny_sd, with_ema: bool):
    from diffusers import UNet2DConditionModel

    folder = tmp_path / "checkpoint-20"
    unet = UNet2DConditionModel.from_pretrained(tiny_sd / "unet")
    unet.save_pretrained(folder / "unet")
    if with_ema:
        with torch.no_grad():
            for param in unet.parameters():
                param.mul_(0.5)
        unet.save_pretrained(folder / "unet_ema")
        config = json.loads((folder / "unet_ema" / "config.json").read_text())
        (folder / "unet_ema" / "config.json").write_text(json.dumps({**config, "decay": 0.9999, "optimization_step": 20}))
    return folder


def test_unet_ema_is_preferred_shown_and_recorded(tmp_path, tiny_sd):
    plain = inspect_checkpoint(_training_output(tmp_path / "plain", tiny_sd, with_ema=False), tiny_sd)
    ema = inspect_checkpoint(_training_output(tmp_path / "ema", tiny_sd, with_ema=True), tiny_sd)
    assert (plain.layout, ema.layout, ema.step) == ("unet", "unet_ema", 20)
    assert "EMA weights (unet_ema/)" in ema.label and "EMA" not in plain.label
    assert ema.loading["layout"] == "unet_ema"
    rows = _cli_rows(tmp_path / "out", "--checkpoint", str(ema.path), "--base", str(tiny_sd))
    assert {r["layout"] for r in rows} == {"unet_ema"}
    assert not np.array_equal(_pixels(ema), _pixels(plain)), "the EMA weights were used"


def test_a_single_file_without_config_or_with_an_incomplete_one_names_what_is_missing(tmp_path, tiny_sd):
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"\0" * 16)
    with pytest.raises(NotACheckpoint, match="single-file checkpoint; offline it needs .*--config DIR.*never looked up on the hub"):
        inspect_checkpoint(single)
    config = shutil.copytree(tiny_sd, tmp_path / "config")
    shutil.rmtree(config / "tokenizer")
    with pytest.raises(NotACheckpoint, match=r"it lacks .*config/tokenizer/tokenizer_config.json"):
        inspect_checkpoint(single, config=config)
    assert sample.cli(["--checkpoint", str(single), "--label", "AD", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    info = inspect_checkpoint(single, config=tiny_sd)
    assert (info.layout, info.family, info.config) == ("single-file", "sd", tiny_sd)


def test_a_lora_for_another_model_is_a_load_error_not_a_silent_no_op(tiny_family, sd_lora):
    with pytest.raises(CheckpointLoadError, match="matched no layer of its base .*FLUX.1.*trained on another model"):
        load_pipeline(inspect_checkpoint(sd_lora, tiny_family("flux")), CPU)


def test_a_lora_on_a_family_without_a_lora_loader_is_refused(tmp_path, tiny_family, sd_lora):
    with pytest.raises(NotACheckpoint, match="PixArt.*loads no LoRA"):
        inspect_checkpoint(sd_lora, tiny_family("pixart"))
    assert (sd_lora / LORA_FILE).is_file()


def test_a_single_file_written_from_a_tiny_sd_round_trips_through_config(tmp_path, tiny_sd):
    single = write_sd_single_file(tiny_sd, tmp_path / "polyps-v1.safetensors")
    config = shutil.copytree(tiny_sd, tmp_path / "config", ignore=shutil.ignore_patterns("*.safetensors"))
    info = inspect_checkpoint(single, config=config)
    assert np.array_equal(_pixels(info), _pixels(inspect_checkpoint(tiny_sd))), "the same weights give the same pixels"
    rows = _cli_rows(tmp_path / "out", "--checkpoint", str(single), "--config", str(config))
    assert {(r["family"], r["layout"]) for r in rows} == {("sd", "single-file")}
    assert "single file, config config" in info.label


@pytest.mark.slow
def test_accelerate_launch_samples_a_lora_over_its_base(tmp_path, tiny_sd, sd_lora):
    import os
    import subprocess
    import sys

    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    out = tmp_path / "bulk"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "generation.sample", "--checkpoint", str(sd_lora), "--base", str(tiny_sd),
               "--label", "AD", "--n", "3", "--steps", "2", "--batch-size", "1", "--out", str(out)]
    result = subprocess.run(command, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    with (out / "provenance.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((int(r["seed"]), r["layout"]) for r in rows) == [(0, "lora"), (1, "lora"), (2, "lora")]
