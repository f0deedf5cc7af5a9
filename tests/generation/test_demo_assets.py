"""The embedded demo: four phantom-trained 128 px checkpoints spread over both stages, within the size budget."""

from __future__ import annotations

import numpy as np
import torch

from appconfig import DEMO_DIR, PROJECT_DIR
from generation.checkpoints import discover_checkpoints
from generation.demo import CONTINUATIONS, DEMO_STEPS, FINAL_STEP, main, parse_args, publish, publish_continued
from generation.model import read_metadata, write_metadata
from generation.pipelines import load_pipeline
from generation.prompts import load_prompts
from generation.sampling import SamplingRequest, generate

ASSETS_BUDGET_BYTES = 60 * 10**6  # issue 15: assets/ stays within 60 MB


def test_assets_stay_within_their_budget():
    size = sum(p.stat().st_size for p in (PROJECT_DIR / "assets").rglob("*") if p.is_file())
    assert size <= ASSETS_BUDGET_BYTES, f"assets/ holds {size / 10**6:.1f} MB; the budget is 60 MB"


def test_demo_checkpoints_span_both_stages_and_are_marked_as_phantoms():
    found = discover_checkpoints(DEMO_DIR)
    assert [(c.step, c.stage) for c in found] == [(1000, 1), (1500, 1), (2500, 2), (8000, 2)]
    assert [c.step for c in found] == [*DEMO_STEPS, FINAL_STEP]
    assert all(c.is_phantom and "phantom demo" in c.label for c in found)
    assert all(c.metadata["saved_dtype"] == "fp16" for c in found)


def test_demo_checkpoint_reproduces_its_pixels_on_the_cpu():
    info = discover_checkpoints(DEMO_DIR)[-1]
    pipe = load_pipeline(info, torch.device("cpu"))
    request = SamplingRequest(label="AD", prompt=load_prompts().default_prompt("AD"), n=2, seed=11, steps=4)
    first, again = generate(pipe, info, request), generate(pipe, info, request)
    assert first[0].image.size == (128, 128)
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again))


def test_publish_copies_the_demo_steps_without_training_state_and_removes_the_others(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    for step in (*DEMO_STEPS, 750):
        (run / f"checkpoint-{step}" / "training_state").mkdir(parents=True)
        (run / f"checkpoint-{step}" / "model_index.json").write_text("{}")
        (run / f"checkpoint-{step}" / "training_state" / "state.json").write_text("{}")
    (out / "checkpoint-4000").mkdir(parents=True)  # a v1 demo checkpoint
    published = publish(run, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"checkpoint-{s}" for s in DEMO_STEPS)
    assert [p.name for p in published] == [f"checkpoint-{s}" for s in DEMO_STEPS]
    assert all((p / "model_index.json").is_file() and not (p / "training_state").exists() for p in published)


def test_the_continued_checkpoint_is_the_base_folder_with_the_continued_unet_and_counts_steps_on(tmp_path):
    base, continued, out = tmp_path / "run" / "checkpoint-2500", tmp_path / "run2" / "checkpoint-2000", tmp_path / "out"
    for folder, text in ((base, "first"), (continued, "second")):
        (folder / "unet").mkdir(parents=True)
        (folder / "unet" / "weights").write_text(text)
        (folder / "training_state").mkdir()
    (base / "vae").mkdir()
    write_metadata(base, {"step": 2500, "stage": 2, "model": "compact"})
    write_metadata(continued, {"step": 2000, "stage": 2, "schedule": {"lr": 2e-4}})
    publish_continued(base, continued, out / "checkpoint-4500")
    made = out / "checkpoint-4500"
    assert (made / "unet" / "weights").read_text() == "second" and (made / "vae").is_dir()
    assert not (made / "training_state").exists()
    meta = read_metadata(made)
    assert (meta["step"], meta["stage"], meta["model"]) == (4500, 2, "compact")
    assert meta["continued"] == [{"from_step": 2500, "steps": 2000, "schedule": {"lr": 2e-4},
                                  "base": "the checkpoint of from_step"}]
    # A continuation of that checkpoint adds its own record after the first.
    again = tmp_path / "run3" / "checkpoint-500"
    (again / "unet").mkdir(parents=True)
    write_metadata(again, {"step": 500, "stage": 2, "schedule": {"lr": 1e-4}})
    publish_continued(made, again, out / "checkpoint-5000")
    assert [c["from_step"] for c in read_metadata(out / "checkpoint-5000")["continued"]] == [2500, 4500]


def test_the_recipe_chains_three_runs_and_a_second_call_trains_nothing(tmp_path, monkeypatch):
    from generation import demo
    from generation.datasets import MANIFEST_FILE

    calls = []

    def fake_training(args) -> int:  # writes the checkpoints a run of these flags would, without training
        calls.append(args)
        steps = [*DEMO_STEPS] if args.base is None else [args.stage2_steps]
        for step in steps:
            folder = args.out / f"checkpoint-{step}"
            for part in ("unet", "vae"):
                (folder / part).mkdir(parents=True, exist_ok=True)
            (folder / "unet" / "weights").write_text(f"{args.out.name} {step}")
            write_metadata(folder, {"step": step, "stage": 1 if step <= 1500 and args.base is None else 2,
                                    "schedule": {"seed": args.seed, "lr": args.lr}})
        return 0

    monkeypatch.setattr(demo.train, "main", fake_training)
    (tmp_path / "phantoms").mkdir()
    (tmp_path / "phantoms" / MANIFEST_FILE).write_text("{}")  # frames drawn already
    argv = ["--out", str(tmp_path / "assets"), "--work", str(tmp_path / "phantoms"), "--run", str(tmp_path / "run")]
    assert main(parse_args(argv)) == 0
    assert [call.base for call in calls] == [None, tmp_path / "run" / "checkpoint-2500",
                                             tmp_path / "run-continued" / f"pipeline-{2500 + CONTINUATIONS[0].steps}"]
    assert [call.seed for call in calls] == [0, 1, 2]
    final = tmp_path / "assets" / f"checkpoint-{FINAL_STEP}"
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == sorted(
        f"checkpoint-{s}" for s in (*DEMO_STEPS, FINAL_STEP))
    assert (final / "unet" / "weights").read_text() == f"run-continued-2 {CONTINUATIONS[1].steps}"
    meta = read_metadata(final)
    assert meta["step"] == FINAL_STEP == 8000
    assert [(c["from_step"], c["steps"]) for c in meta["continued"]] == [(2500, 1000), (3500, 4500)]
    calls.clear()
    assert main(parse_args(argv)) == 0 and calls == []  # every run has its last checkpoint: nothing to train
