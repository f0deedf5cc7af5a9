"""Checkpoint discovery and the one loading path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from generation.checkpoints import (
    CheckpointNotFound,
    NotACheckpoint,
    discover_checkpoints,
    fingerprint,
    inspect_checkpoint,
)
from generation.pipelines import CheckpointLoadError, PipelineCache, load_pipeline
from generation.sampling import SamplingRequest, generate
from generation.text_encoder import TextEncoderMissing
from tests.conftest import train_tiny, write_labelled_folder

CPU = torch.device("cpu")


def _two_images(info, **overrides):
    request = SamplingRequest(label="AD", prompt="colonoscopy image of an adenomatous polyp", n=2, steps=2, **overrides)
    return generate(load_pipeline(info, CPU), info, request)


def test_discovery_lists_checkpoints_by_step(tiny_run):
    found = discover_checkpoints(tiny_run)
    assert [(c.step, c.stage, c.kind) for c in found] == [(2, 1, "pipeline"), (4, 2, "pipeline")]
    assert all(len(c.fingerprint) == 64 for c in found)
    assert "stage 2 (pathology)" in found[1].label


def test_discovery_loads_one_and_samples_two_steps(tiny_run):
    info = discover_checkpoints(tiny_run)[-1]
    images = _two_images(info)
    assert [g.image.size for g in images] == [(16, 16), (16, 16)]
    assert [g.provenance["seed"] for g in images] == [0, 1]


def test_same_seed_gives_the_same_pixels_and_another_seed_does_not(tiny_run):
    info = inspect_checkpoint(tiny_run / "checkpoint-4")
    first, again = _two_images(info), _two_images(info)
    other = _two_images(info, seed=7)
    pixels = lambda images: [np.asarray(g.image) for g in images]  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(pixels(first), pixels(again)))
    assert not np.array_equal(pixels(first)[0], pixels(other)[0])


def test_the_same_path_loads_a_stable_diffusion_folder(tiny_sd):
    info = inspect_checkpoint(tiny_sd)
    assert info.kind == "pipeline" and info.step == 0 and info.metadata == {}
    pipe = load_pipeline(info, CPU)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    assert type(pipe.text_encoder).__name__ == "CLIPTextModel"
    assert len(_two_images(info)) == 2


def test_training_output_loads_on_top_of_its_base(tmp_path, tiny_sd):
    out = train_tiny(write_labelled_folder(tmp_path / "data", per_label=2), tmp_path / "ft", "--base", str(tiny_sd))
    found = discover_checkpoints(out)
    assert [(c.kind, c.step, c.base) for c in found] == [("training-output", 2, tiny_sd.resolve()), ("training-output", 4, tiny_sd.resolve())]
    assert len(_two_images(found[-1])) == 2


def test_training_output_without_base_names_what_is_missing(tmp_path):
    (tmp_path / "checkpoint-10" / "unet").mkdir(parents=True)
    (tmp_path / "checkpoint-10" / "unet" / "config.json").write_text("{}")
    with pytest.raises(NotACheckpoint, match="--base"):
        inspect_checkpoint(tmp_path / "checkpoint-10")


def test_a_folder_that_is_neither_layout_says_what_was_expected(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(NotACheckpoint, match="model_index.json.*unet/config.json"):
        inspect_checkpoint(tmp_path / "stuff")
    with pytest.raises(NotACheckpoint, match="no checkpoint in"):
        discover_checkpoints(tmp_path)
    with pytest.raises(CheckpointNotFound):
        discover_checkpoints(tmp_path / "missing")


def test_missing_text_encoder_is_reported(tmp_path, tiny_run):
    folder = shutil.copytree(tiny_run / "checkpoint-4", tmp_path / "checkpoint-4")
    (folder / "polypturing.json").unlink()
    with pytest.raises(TextEncoderMissing, match="text_encoder"):
        load_pipeline(inspect_checkpoint(folder), CPU)


def test_corrupt_weights_are_a_load_error(tmp_path, tiny_run):
    folder = shutil.copytree(tiny_run / "checkpoint-4", tmp_path / "checkpoint-4")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointLoadError, match="checkpoint-4"):
        load_pipeline(inspect_checkpoint(folder), CPU)


def test_fingerprint_follows_the_weights(tmp_path, tiny_run):
    folder = shutil.copytree(tiny_run / "checkpoint-4", tmp_path / "c")
    before = fingerprint(folder)
    assert before == fingerprint(tiny_run / "checkpoint-4")
    (folder / "polypturing.json").write_text(json.dumps({"step": 99}))
    assert fingerprint(folder) == before, "metadata is not weights"
    weights = folder / "vae" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert fingerprint(folder) != before


def test_pipeline_cache_is_bounded_and_reuses(tiny_run):
    cache = PipelineCache(CPU, max_items=1)
    first, second = discover_checkpoints(tiny_run)
    pipe = cache.get(first)
    assert cache.get(first) is pipe
    cache.get(second)
    assert len(cache) == 1
    assert cache.get(first) is not pipe


def test_pipeline_cache_hands_a_pipeline_to_one_user_at_a_time(tiny_run):
    import threading

    cache = PipelineCache(CPU, max_items=1)
    info = discover_checkpoints(tiny_run)[0]
    inside, overlap = [], []

    def user():
        with cache.use(info):
            inside.append(1)
            overlap.append(len(inside))
            threading.Event().wait(0.05)
            inside.pop()

    threads = [threading.Thread(target=user) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlap == [1, 1, 1]


def test_fp16_loading_casts_the_packaged_text_encoder_too(tiny_run):
    pipe = load_pipeline(inspect_checkpoint(tiny_run / "checkpoint-4"), CPU, dtype=torch.float16)
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float16}


def test_an_image_made_alone_matches_the_same_seed_in_a_batch_of_one(tiny_run):
    info = inspect_checkpoint(tiny_run / "checkpoint-4")
    pipe = load_pipeline(info, CPU)
    request = SamplingRequest(label="AD", prompt="a polyp", n=3, steps=2)
    three = generate(pipe, info, request, batch_size=1)
    alone = generate(pipe, info, SamplingRequest(label="AD", prompt="a polyp", n=1, seed=1, steps=2), batch_size=1)
    assert np.array_equal(np.asarray(three[1].image), np.asarray(alone[0].image))


def test_run_folders_one_level_down_are_discovered_with_their_run_name(tmp_path, tiny_run):
    shutil.copytree(tiny_run, tmp_path / "run1")
    shutil.copytree(tiny_run / "checkpoint-2", tmp_path / "checkpoint-3")
    found = discover_checkpoints(tmp_path)
    assert [(c.step, c.name) for c in found] == [(2, "checkpoint-3"), (2, "run1/checkpoint-2"), (4, "run1/checkpoint-4")]


@pytest.mark.parametrize("meta, message", [({"step": "final"}, "step 'final'"), ({"step": 3, "stage": 3}, "stage 3")])
def test_bad_step_or_stage_in_metadata_skips_the_folder_with_a_reason(tmp_path, tiny_run, meta, message):
    shutil.copytree(tiny_run / "checkpoint-2", tmp_path / "good")
    bad = shutil.copytree(tiny_run / "checkpoint-4", tmp_path / "bad")
    (bad / "polypturing.json").write_text(json.dumps(meta))
    with pytest.raises(NotACheckpoint, match=message):
        inspect_checkpoint(bad)
    assert [c.name for c in discover_checkpoints(tmp_path)] == ["good"]


def test_a_failed_load_keeps_no_cache_slot(tmp_path, tiny_run):
    cache = PipelineCache(CPU, max_items=1)
    good = inspect_checkpoint(tiny_run / "checkpoint-2")
    pipe = cache.get(good)
    broken = shutil.copytree(tiny_run / "checkpoint-4", tmp_path / "checkpoint-4")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"junk")
    with pytest.raises(CheckpointLoadError):
        cache.get(inspect_checkpoint(broken))
    assert len(cache) == 1 and cache.get(good) is pipe, "the working pipeline stays cached"
