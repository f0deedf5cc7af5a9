"""The embedded demo: four phantom-trained checkpoints spread over both stages, within the size budget."""

from __future__ import annotations

import numpy as np
import torch

from appconfig import DEMO_DIR, PROJECT_DIR
from generation.checkpoints import discover_checkpoints
from generation.pipelines import load_pipeline
from generation.prompts import load_prompts
from generation.sampling import SamplingRequest, generate

ASSETS_BUDGET_BYTES = 40 * 2**20


def test_assets_stay_within_their_budget():
    size = sum(p.stat().st_size for p in (PROJECT_DIR / "assets").rglob("*") if p.is_file())
    assert size <= ASSETS_BUDGET_BYTES, f"assets/ holds {size / 2**20:.1f} MiB; the budget is 40 MiB"


def test_demo_checkpoints_span_both_stages_and_are_marked_as_phantoms():
    found = discover_checkpoints(DEMO_DIR)
    assert [(c.step, c.stage) for c in found] == [(500, 1), (1000, 1), (2000, 2), (4000, 2)]
    assert all(c.is_phantom and "phantom demo" in c.label for c in found)
    assert all(c.metadata["saved_dtype"] == "fp16" for c in found)


def test_demo_checkpoint_reproduces_its_pixels_on_the_cpu():
    info = discover_checkpoints(DEMO_DIR)[-1]
    pipe = load_pipeline(info, torch.device("cpu"))
    request = SamplingRequest(label="AD", prompt=load_prompts().default_prompt("AD"), n=2, seed=11, steps=4)
    first, again = generate(pipe, info, request), generate(pipe, info, request)
    assert first[0].image.size == (64, 64)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again))
