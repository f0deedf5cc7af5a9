"""Every diffusers text-to-image family through the one loading path, the sample CLI and the Generate flow."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch

from appconfig import AppConfig, Services
from database import checkpoints as checkpoint_store
from database import images as image_store
from generation import sample
from generation.checkpoints import NotACheckpoint, inspect_checkpoint
from generation.families import FAMILIES, native_size
from generation.library import generate_and_record
from generation.pipelines import family_dtype, load_pipeline
from generation.sampling import InvalidSetting, SamplingRequest, generate
from generation.speed import pick_batch_size, speed_up

CPU = torch.device("cpu")
PROMPT = "colonoscopy image of an adenomatous polyp"
# (builder name, family, pipeline class, native side of the tiny model, default scheduler)
CASES = [
    ("sdxl", "sdxl", "StableDiffusionXLPipeline", 16, "dpm++"),
    ("sd3", "sd3", "StableDiffusion3Pipeline", 8, "flow-euler"),
    ("flux", "flux", "FluxPipeline", 128, "flow-euler"),
    ("pixart", "pixart", "PixArtAlphaPipeline", 16, "dpm++"),
    ("kandinsky22", "kandinsky22", "KandinskyV22CombinedPipeline", 16, "dpm++"),
    ("kandinsky22-pair", "kandinsky22", "KandinskyV22CombinedPipeline", 16, "dpm++"),
]


@pytest.mark.parametrize("builder, family, cls, side, scheduler", CASES)
def test_each_family_samples_two_steps_through_the_cli_with_its_provenance(tmp_path, tiny_family, builder, family, cls, side, scheduler):
    folder = tiny_family(builder)
    info = inspect_checkpoint(folder)
    assert (info.family, info.kind) == (family, "pipeline")
    assert type(load_pipeline(info, CPU)).__name__ == cls
    out = tmp_path / "out"
    assert sample.cli(["--checkpoint", str(folder), "--label", "AD", "--n", "2", "--steps", "2", "--out", str(out), "--device", "cpu"]) == 0
    with (out / "provenance.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["family"], r["scheduler"], r["width"], r["height"]) for r in rows] == [(family, scheduler, str(side), str(side))] * 2
    assert len({r["sha256"] for r in rows}) == 2


@pytest.mark.parametrize("builder, family", [("sdxl", "sdxl"), ("sd3", "sd3"), ("flux", "flux"), ("pixart", "pixart"), ("kandinsky22", "kandinsky22")])
def test_each_family_generates_and_records_through_the_generate_flow(tmp_path, tiny_family, builder, family):
    folder = shutil.copytree(tiny_family(builder), tmp_path / "checkpoints" / builder)
    services = Services(AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "checkpoints", db_path=tmp_path / "s.db", device="cpu",
                                  demo_dir=tmp_path / "no-demo"))
    # No scheduler named (as study creation and kiosk pools ask): the family's default.
    rows = generate_and_record(services, folder, SamplingRequest(label="NonAD", prompt=PROMPT, n=2, steps=2))
    assert {r["family"] for r in rows} == {family}
    with services.db() as db:
        stored = image_store.list_images(db, source="synthetic")
        checkpoint = checkpoint_store.list_checkpoints(db)[0]
    assert sorted(r["sha256"] for r in stored) == sorted(r["sha256"] for r in rows)
    assert checkpoint["metadata"]["loading"] == {"family": family, "layout": "pipeline"}
    assert {r["scheduler"] for r in stored} == {FAMILIES[family].default_scheduler}


def test_the_same_seed_gives_the_same_pixels_in_a_flow_family(tiny_family):
    info = inspect_checkpoint(tiny_family("sd3"))
    pipe = load_pipeline(info, CPU)
    request = SamplingRequest(label="AD", prompt=PROMPT, n=2, steps=2, scheduler=None)
    first, again = generate(pipe, info, request), generate(pipe, info, request)
    assert [g.image.tobytes() for g in first] == [g.image.tobytes() for g in again]
    assert first[0].image.tobytes() != first[1].image.tobytes()


def test_a_scheduler_outside_the_family_is_refused_naming_the_allowed_ones(tiny_family):
    info = inspect_checkpoint(tiny_family("flux"))
    pipe = load_pipeline(info, CPU)
    with pytest.raises(InvalidSetting, match="'dpm\\+\\+' does not fit FLUX.1 checkpoints; choose one of flow-euler"):
        generate(pipe, info, SamplingRequest(label="AD", prompt=PROMPT, n=1, steps=2, scheduler="dpm++"))
    sd3 = inspect_checkpoint(tiny_family("sd3"))
    with pytest.raises(InvalidSetting, match="choose one of flow-euler"):
        SamplingRequest(label="AD", prompt=PROMPT, scheduler="ddim").for_family(sd3.family_spec)


def test_flux_refuses_a_negative_prompt_and_the_cli_leaves_it_empty(tmp_path, tiny_family):
    with pytest.raises(InvalidSetting, match="FLUX.1 takes no negative prompt"):
        SamplingRequest(label="AD", prompt=PROMPT, negative_prompt="blurry", scheduler=None).for_family(FAMILIES["flux"])
    code = sample.cli(["--checkpoint", str(tiny_family("flux")), "--label", "AD", "--n", "1", "--steps", "1",
                       "--negative-prompt", "blurry", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 2 and not (tmp_path / "o" / "provenance.csv").exists()


def test_a_prompt_cut_by_a_tokenizer_is_said_in_the_provenance(tiny_family):
    info = inspect_checkpoint(tiny_family("sdxl"))
    pipe = load_pipeline(info, CPU)
    short, long = (generate(pipe, info, SamplingRequest(label="AD", prompt=p, n=1, steps=1))[0].provenance["notes"]
                   for p in ("polyp", PROMPT))
    assert short == ""
    assert "prompt cut to 16 of its 38 tokens by tokenizer (CLIPTokenizer)" in long and "tokenizer_2" in long


def test_t5_prompts_are_cut_at_the_familys_sequence_length(tiny_family):
    info = inspect_checkpoint(tiny_family("pixart"))
    pipe = load_pipeline(info, CPU)
    words = " ".join(["polyp"] * 130)
    with pytest.raises(InvalidSetting, match="steps must be at least 2 for PixArt"):
        generate(pipe, info, SamplingRequest(label="AD", prompt=words, n=1, steps=1))
    notes = generate(pipe, info, SamplingRequest(label="AD", prompt=words, n=1, steps=2))[0].provenance["notes"]
    assert notes == "prompt cut to 120 of its 131 tokens by tokenizer (T5Tokenizer)"


def test_native_resolution_follows_the_denoiser_and_autoencoder(tiny_family):
    pipe = load_pipeline(inspect_checkpoint(tiny_family("sdxl")), CPU)
    assert native_size(pipe, FAMILIES["sdxl"]) == (pipe.unet.config.sample_size * pipe.vae_scale_factor,) * 2 == (16, 16)


def test_an_unsupported_pipeline_class_is_refused_by_name(tmp_path, tiny_sd):
    folder = shutil.copytree(tiny_sd, tmp_path / "other")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "WuerstchenPipeline"}))
    with pytest.raises(NotACheckpoint, match="'WuerstchenPipeline' is not a supported text-to-image family; supported: "):
        inspect_checkpoint(folder)


def test_on_the_cpu_nothing_changes_for_speed(tiny_family):
    info = inspect_checkpoint(tiny_family("sdxl"))
    pipe = load_pipeline(info, CPU)
    assert speed_up(pipe, info.family_spec, CPU, compile_denoiser=True) == []
    assert pick_batch_size(pipe, info.family_spec, CPU) == 8 and pick_batch_size(pipe, info.family_spec, CPU, 3) == 3
    assert pipe.unet.dtype == torch.float32
    assert family_dtype(CPU, FAMILIES["flux"]) == torch.float32
    assert family_dtype(torch.device("cuda"), FAMILIES["sdxl"]) == torch.float16


def test_a_controlnet_samples_on_sdxl_and_other_families_get_a_clear_message(tmp_path, tiny_family):
    from PIL import Image

    from generation.masks.model import build_controlnet, inspect_controlnet, load_controlnet_pipeline

    for builder in ("sdxl", "flux"):
        base = tiny_family(builder)
        folder = tmp_path / f"controlnet-{builder}"
        if builder == "sdxl":
            pipe = load_pipeline(inspect_checkpoint(base), CPU)
            build_controlnet(pipe.unet, pipe.vae_scale_factor).save_pretrained(folder)
        else:
            folder.mkdir()
            (folder / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel"}))
        (folder / "polypturing.json").write_text(json.dumps({"base": str(base)}))
    info = inspect_controlnet(tmp_path / "controlnet-sdxl")
    pipe = load_controlnet_pipeline(info, CPU)
    assert type(pipe).__name__ == "StableDiffusionXLControlNetPipeline"
    mask = Image.new("RGB", (16, 16))
    images = generate(pipe, info, SamplingRequest(label="AD", prompt=PROMPT, n=2, steps=2),
                      condition=lambda chunk: {"image": [mask] * len(chunk)})
    assert [(g.image.size, g.provenance["family"]) for g in images] == [((16, 16), "sdxl")] * 2
    with pytest.raises(NotACheckpoint, match="ControlNets exist for Stable Diffusion 1.x/2.x and Stable Diffusion XL bases; .* is FLUX.1"):
        inspect_controlnet(tmp_path / "controlnet-flux")
