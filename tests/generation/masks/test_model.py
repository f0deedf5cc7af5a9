"""The mask-conditioned model: a tiny ControlNet on a tiny compact model, trained, saved, loaded and sampled."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import torch
from PIL import Image

from appconfig import AppConfig, Services
from database import checkpoints as checkpoint_store
from database import images as image_store
from database import masks as mask_store
from generation.checkpoints import NotACheckpoint
from generation.masks import sample as mask_sample
from generation.masks import train as mask_train
from generation.masks.model import (
    build_controlnet,
    conditioning_channels,
    discover_controlnets,
    inspect_controlnet,
    load_controlnet_pipeline,
    mask_condition,
    write_controlnet_folder,
)
from generation.masks.sampling import generate_pairs
from generation.masks.shapes import sample_masks
from generation.model import CompactModelConfig, build_noise_scheduler, build_unet
from generation.phantom.frames import write_phantom_set
from generation.pipelines import CheckpointLoadError
from review import register

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    write_phantom_set(folder, n_per_label=2, seed=2, size=(64, 64))
    return folder


@pytest.fixture(scope="module")
def controlnet_run(pairs, tiny_run, tmp_path_factory):
    """Two steps of the real trainer on the tiny compact checkpoint-4: OUT/controlnet-1 and controlnet-2."""
    out = tmp_path_factory.mktemp("controlnet")
    args = mask_train.parse_args(["--base", str(tiny_run / "checkpoint-4"), "--data", str(pairs), "--out", str(out),
                                  "--steps", "2", "--checkpoint-every", "1", "--batch-size", "2", "--device", "cpu"])
    assert mask_train.main(args) == 0
    return out


@pytest.fixture
def services(tmp_path, tiny_run):
    return Services(AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "checkpoints", db_path=tmp_path / "s.db",
                              device="cpu", demo_dir=tiny_run))


@pytest.mark.parametrize("weighting", ["x0", "eps"])
def test_training_step_moves_the_controlnet_and_not_the_unet(weighting):
    torch.manual_seed(0)
    unet = build_unet(CompactModelConfig.tiny()).requires_grad_(False)
    controlnet = build_controlnet(unet, vae_scale_factor=2)
    unet_before = [p.clone() for p in unet.parameters()]
    zero_before = controlnet.controlnet_mid_block.weight.clone()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-3)
    conditions = (torch.rand(2, 1, 16, 16) > 0.5).float().expand(-1, 3, -1, -1)
    loss = mask_train.training_step(controlnet, unet, build_noise_scheduler(), torch.randn(2, 4, 8, 8),
                                    torch.randn(2, 5, 384), conditions, optimizer, weighting=weighting)
    assert np.isfinite(loss) and loss > 0
    assert all(torch.equal(a, b) for a, b in zip(unet_before, unet.parameters()))
    assert not torch.equal(zero_before, controlnet.controlnet_mid_block.weight)


def test_unknown_loss_weighting_is_named():
    unet = build_unet(CompactModelConfig.tiny())
    with pytest.raises(ValueError, match="weighting must be one of x0, eps, got 'snr'"):
        mask_train.training_step(build_controlnet(unet, 2), unet, build_noise_scheduler(), torch.randn(1, 4, 8, 8),
                                 torch.randn(1, 5, 384), torch.zeros(1, 3, 16, 16), None, weighting="snr")


def test_conditioning_encoder_matches_the_autoencoder_factor():
    assert conditioning_channels(8) == (16, 32, 96, 256)  # diffusers' default for Stable Diffusion
    assert conditioning_channels(4) == (16, 32, 96)
    with pytest.raises(ValueError, match="vae_scale_factor must be 1, 2, 4 or 8, got 3"):
        conditioning_channels(3)


def test_trainer_writes_controlnet_folders_with_their_base_and_data(controlnet_run, tiny_run, pairs):
    assert sorted(p.name for p in controlnet_run.iterdir()) == ["controlnet-1", "controlnet-2"]
    folder = controlnet_run / "controlnet-2"
    assert json.loads((folder / "config.json").read_text())["_class_name"] == "ControlNetModel"
    meta = json.loads((folder / "polypturing.json").read_text())
    assert (meta["model"], meta["step"], meta["image_size"]) == ("controlnet", 2, 16)
    assert meta["base"] == str((tiny_run / "checkpoint-4").resolve())
    assert meta["training_data"]["n_pairs"] == 4 and meta["training_data"]["mask_sources"] == ["phantom"]
    assert len(meta["training_data"]["image_sha256_digest"]) == 64
    info = inspect_controlnet(folder)
    assert info.step == 2 and info.base.fingerprint == meta["base_fingerprint"]
    assert info.fingerprint != inspect_controlnet(controlnet_run / "controlnet-1").fingerprint
    found = discover_controlnets([controlnet_run, tiny_run / "missing", tiny_run])
    assert [c.path for c in found] == [controlnet_run / "controlnet-1", folder]


def test_save_and_load_round_trip(tmp_path, controlnet_run):
    from diffusers import ControlNetModel

    model = ControlNetModel.from_pretrained(controlnet_run / "controlnet-2")
    write_controlnet_folder(tmp_path / "controlnet-9", model, {"step": 9, "base": "elsewhere"})
    again = ControlNetModel.from_pretrained(tmp_path / "controlnet-9")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_the_pipeline_generates_from_a_mask_and_follows_it(controlnet_run):
    info = inspect_controlnet(controlnet_run / "controlnet-2")
    pipe = load_controlnet_pipeline(info, CPU)
    mask = sample_masks([], 1, seed=0, size=16, procedural_share=1.0)[0].mask

    def run(m):
        return pipe(prompt="a polyp", image=mask_condition(m, 16), height=16, width=16, num_inference_steps=2,
                    generator=torch.Generator().manual_seed(3), output_type="np").images[0]

    first = run(mask)
    assert first.shape == (16, 16, 3) and np.array_equal(first, run(mask))
    controlnet, latents = pipe.controlnet, torch.randn(1, 4, 8, 8)
    text = torch.randn(1, 48, 384)
    residuals = [controlnet(latents, 500, encoder_hidden_states=text, controlnet_cond=torch.tensor(c, dtype=torch.float32)
                            .expand(1, 3, 16, 16), return_dict=False)[1] for c in (mask * 1.0, np.zeros((16, 16)))]
    assert not torch.equal(*residuals), "the mask must reach the UNet"


def test_generate_pairs_stores_images_masks_and_provenance(services, controlnet_run, pairs):
    with services.db() as db:
        register.register_masked_images(db, pairs)
    rows = generate_pairs(services, controlnet_run / "controlnet-2", "AD", 2, seed=7, masks="augmented", steps=1)
    with services.db() as db:
        stored = mask_store.list_masked_images(db, source="synthetic")
        checkpoints = checkpoint_store.list_checkpoints(db)
    assert sorted(r["sha256"] for r in stored) == sorted(r["sha256"] for r in rows)
    assert {(r["seed"], r["steps"], r["mask_source"]) for r in stored} == {(7, 1, "augmented"), (8, 1, "augmented")}
    assert all(r["mask_provenance"].startswith("augmented from ") for r in stored)
    (checkpoint,) = [c for c in checkpoints if c["id"] == stored[0]["checkpoint_id"]]
    assert (checkpoint["name"], checkpoint["kind"], checkpoint["metadata"]["model"]) == ("controlnet-2", "training-output", "controlnet")
    expected = sample_masks([], 2, 7, 16, procedural_share=1.0)
    procedural = generate_pairs(services, controlnet_run / "controlnet-2", "NonAD", 2, seed=7, masks="procedural", steps=1)
    for row, sampled in zip(procedural, expected):
        assert np.array_equal(np.asarray(Image.open(row["mask_path"])) > 0, sampled.mask)
        assert "/masks/NonAD/" in row["mask_path"] and "/images/NonAD/" in row["path"]


def test_a_failed_store_leaves_no_files(services, controlnet_run, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(mask_store, "add_masks", refuse)
    with pytest.raises(sqlite3.OperationalError):
        generate_pairs(services, controlnet_run / "controlnet-1", "AD", 1, seed=3, masks="procedural", steps=1)
    assert not list(services.config.generated_dir.rglob("*.png"))
    with services.db() as db:
        assert image_store.list_images(db) == []


@pytest.mark.filterwarnings("ignore:The configuration file of this scheduler")  # the tiny SD fixture's PNDM config
def test_a_users_stable_diffusion_takes_a_controlnet_the_same_way(tmp_path, tiny_sd, controlnet_run):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_sd / "unet")
    write_controlnet_folder(tmp_path / "user-cn", build_controlnet(unet, 2), {"step": 0})
    with pytest.raises(NotACheckpoint, match="names no base checkpoint; pass --base"):
        inspect_controlnet(tmp_path / "user-cn")
    info = inspect_controlnet(tmp_path / "user-cn", base=tiny_sd)
    image = load_controlnet_pipeline(info, CPU)(
        prompt="polyp", image=mask_condition(np.eye(16, dtype=bool), 16), height=16, width=16, num_inference_steps=1,
        output_type="np").images[0]
    assert image.shape == (16, 16, 3)
    with pytest.raises(CheckpointLoadError, match="does not fit base .*cross_attention_dim is 384 but the base UNet's is 16"):
        load_controlnet_pipeline(inspect_controlnet(controlnet_run / "controlnet-2", base=tiny_sd), CPU)


def test_command_lines_report_bad_input_in_one_line(tmp_path, tiny_run, capsys):
    assert mask_sample.cli(["--controlnet", str(tmp_path / "nope"), "--label", "AD", "--data-dir", str(tmp_path)]) == 2
    assert "error: ControlNet" in capsys.readouterr().err
    (tmp_path / "data" / "images").mkdir(parents=True)
    code = mask_train.cli(["--base", str(tiny_run / "checkpoint-4"), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    assert code == 2 and "has no masks/ folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
