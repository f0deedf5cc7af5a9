"""The simulated rater panel: fills studies through the real path, flagged, seeded, image-driven."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import pytest
from PIL import ImageOps

from database import checkpoints as checkpoint_store
from database import images as image_store
from database import ratings as rating_store
from database import studies as study_store
from generation.phantom.frames import render_phantom
from review import simulate, studies, study_setup
from review.design import StudyDesign
from review.studies import Forbidden, ReviewError
from review.study_setup import RaterSpec

SINGLE = dict(mode="single", images_per_cell=3, real_per_label=6, ratings_per_image=3, repeats=3,
              attention_checks=4, size=64, seed=0)


def _design(ids, **changes) -> StudyDesign:
    return StudyDesign(checkpoint_ids=tuple(ids), **{**SINGLE, **changes})


def _answers(db, study_id) -> dict[tuple[str, int, str], tuple]:
    fields = ("real_or_synthetic", "source_confidence", "realism", "pathology", "pathology_confidence",
              "synthetic_choice", "choice_confidence", "pathology_left", "pathology_right", "artifacts",
              "response_ms")
    return {(row["rater"], row["position"], row["side"]): tuple(row[f] for f in fields)
            for row in rating_store.export_rows(db, study_id)}


def _add_inverted_checkpoint(db, folder, n: int = 3) -> int:
    """A checkpoint whose images are colour-inverted phantoms: plainly unlike the real images."""
    folder.mkdir(parents=True, exist_ok=True)
    cid = checkpoint_store.upsert_checkpoint(db, path="/ckpt/inverted", name="inverted", step=1, stage=2, kind="pipeline",
                                  fingerprint="fp-inverted")
    rows = []
    for label in ("AD", "NonAD"):
        for i in range(n):
            path = folder / f"inverted-{label}-{i}.png"
            ImageOps.invert(render_phantom(label, 7000 + i, (64, 64)).image.convert("RGB")).save(path)
            rows.append({"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "label": label, "path": str(path),
                         "width": 64, "height": 64, "checkpoint_id": cid, "prompt": f"{label} polyp",
                         "negative_prompt": "", "seed": i, "scheduler": "dpm++", "steps": 20, "guidance": 3.0,
                         "seconds": 0.1})
    image_store.add_synthetic_images(db, rows)
    return cid


def test_panel_rates_every_trial_once_through_the_real_path_and_is_flagged_simulated(review_env):
    db, data, admin, ids = review_env
    summary = simulate.simulate_panel(db, data, admin, "Simulated panel (single)", _design(ids), n_raters=8, seed=0)
    study_id = summary["study_id"]
    progress = study_setup.progress(db, admin, study_id)
    assert [row["username"] for row in progress] == [f"sim-{i:02d}" for i in range(1, 9)]
    assert all(row["rated"] == row["total"] > 0 and row["profile_given"] for row in progress)
    rows = rating_store.export_rows(db, study_id)
    assert summary["ratings"] == len(rows) == sum(row["total"] for row in progress)
    assert Counter(row["trial_id"] for row in rows).most_common(1)[0][1] == 1
    assert {row["study_simulated"] for row in rows} == {row["rater_simulated"] for row in rows} == {1}
    assert study_store.get_study(db, study_id)["status"] == "open"
    specialties = {row["rater"]: (row["rater_specialty"], row["rater_colonoscopies"]) for row in rows}
    assert {s for s, _ in specialties.values()} == {"gastroenterology", "endoscopy nurse", "trainee"}
    assert all(band in studies.COLONOSCOPY_BANDS for _, band in specialties.values())
    assert all(300 <= row["response_ms"] <= 600_000 for row in rows)  # the model's times, not the test's speed
    # attention checks: attentive raters pass nearly all; the careless one fails some
    attention = defaultdict(list)
    for row in rows:
        if row["trial_kind"] == "attention":
            attention[row["rater"]].append(row["real_or_synthetic"] == "synthetic")
    careless = summary["careless"]
    assert careless in attention and not all(attention[careless])
    others = [passed for rater, checks in attention.items() if rater != careless for passed in checks]
    assert sum(others) / len(others) >= 0.85 > sum(attention[careless]) / len(attention[careless])
    # planned repeats agree more often than two independent answers with each rater's marginals would
    answer = {(row["rater"], row["position"]): row["real_or_synthetic"] for row in rows}
    repeats = [row for row in rows if row["trial_kind"] == "repeat"]
    same = [answer[row["rater"], row["repeat_of"]] == row["real_or_synthetic"] for row in repeats]
    agreement = sum(same) / len(same)
    chance = []
    for rater in {row["rater"] for row in repeats}:
        calls = [row["real_or_synthetic"] == "synthetic" for row in rows if row["rater"] == rater
                 and row["trial_kind"] != "attention"]
        p = sum(calls) / len(calls)
        chance.append(p * p + (1 - p) * (1 - p))
    assert agreement >= 0.75 and agreement > sum(chance) / len(chance) + 0.1


def test_same_seed_gives_the_same_answers_and_another_seed_others(review_env):
    db, data, admin, ids = review_env
    design = _design(ids, mode="pair", ratings_per_image=2, repeats=1, attention_checks=1)
    runs = [simulate.simulate_panel(db, data, admin, f"panel {n}", design, n_raters=4, seed=seed)
            for n, seed in enumerate((0, 0, 1))]
    first, again, other = (_answers(db, run["study_id"]) for run in runs)
    assert first == again and len(first) > 20
    assert first.keys() == other.keys() and first != other
    rows = rating_store.export_rows(db, runs[0]["study_id"])
    assert {row["side"] for row in rows} == {"left", "right"}
    assert all(row["synthetic_choice"] in ("left", "right") and row["pathology_left"] in studies.PATHOLOGY_CALLS
               for row in rows)


def test_images_that_look_unlike_the_real_ones_are_called_synthetic_more_often(review_env, tmp_path):
    db, data, admin, ids = review_env
    inverted = _add_inverted_checkpoint(db, tmp_path / "inverted")
    design = _design((ids[0], inverted), ratings_per_image=4, repeats=0, attention_checks=0)
    summary = simulate.simulate_panel(db, data, admin, "inverted vs phantom", design, n_raters=6, seed=2)
    called = defaultdict(list)
    for row in rating_store.export_rows(db, summary["study_id"]):
        if row["image_source"] == "synthetic":
            called[row["checkpoint_id"]].append(row["real_or_synthetic"] == "synthetic")
    rate = {cid: sum(calls) / len(calls) for cid, calls in called.items()}
    assert rate[inverted] >= 0.85 and rate[inverted] > rate[ids[0]] + 0.25


def test_simulated_and_real_raters_are_never_mixed(review_env):
    db, data, admin, ids = review_env
    studies.create_account(db, "sim-02", "rater", "a-real-password")
    with pytest.raises(ReviewError, match="'sim-02' is a real account and cannot rate in a simulated study"):
        simulate.simulate_panel(db, data, admin, "mixed", _design(ids), n_raters=3)
    summary = simulate.simulate_panel(db, data, admin, "pure", _design(ids, ratings_per_image=1), n_raters=1)
    real_design = _design(ids, ratings_per_image=1, repeats=0, attention_checks=0)
    with pytest.raises(ReviewError, match="'sim-01' is a simulated account and cannot rate in a real study"):
        study_setup.create_study(db, data, admin, "real study", real_design, [RaterSpec("ann", "ann-password"),
                                                                              RaterSpec("sim-01")])
    assert study_store.get_study(db, summary["study_id"])["simulated"] == 1
    # a real rater's response time is always measured, never given
    created = study_setup.create_study(db, data, admin, "real study", real_design, [RaterSpec("ann", "ann-password")])
    study_setup.audit_study(db, admin, created.study_id)
    study_setup.open_study(db, admin, created.study_id, "phantoms")
    ann = studies.sign_in(db, "ann", "ann-password")
    view = studies.next_item(db, ann, created.study_id)
    answers = {"real_or_synthetic": "real", "source_confidence": 3, "realism": 3, "pathology": "AD",
               "pathology_confidence": 3}
    with pytest.raises(Forbidden, match="response time"):
        studies.submit(db, ann, created.study_id, view.trial_id, answers, "key-ann-1", response_ms=1234)


def test_cli_without_real_images_says_to_run_make_demo_data(tmp_path, capsys):
    status = simulate.main(["--db", str(tmp_path / "empty.db"), "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith("error: ") and "make demo-data" in err[0]
