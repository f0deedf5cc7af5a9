"""Every metric of every checkpoint into the study database, with the tiny extractor and phantom images."""

from __future__ import annotations

import shutil

import pytest

from database import images as image_store
from database import metric_results as metric_store
from database.connection import connect
from evaluation.cache import FeatureCache
from evaluation.metrics import MetricSettings
from evaluation.scorecard import ALL_METRICS, NothingToEvaluate, compute_scorecard
from tests.evaluation.conftest import make_tiny_extractor
from tests.review.conftest import add_images

FAST = MetricSettings(n_boot=10, diversity_pairs=10, diversity_size=64, utility_repeats=3, kid_subset_size=50)


@pytest.fixture
def db_with_images(tmp_path):
    with connect(tmp_path / "study.db") as db:
        ids = add_images(db, tmp_path / "images", n_real=8, n_synthetic=6, checkpoints=2)
        yield db, ids, tmp_path


def test_every_metric_is_stored_per_checkpoint_and_scope(db_with_images):
    db, ids, tmp = db_with_images
    train = tmp / "train"  # pretend the first checkpoint was trained on (copies of) its own outputs
    train.mkdir()
    for row in image_store.list_images(db, source="synthetic", checkpoint_id=ids[0]):
        shutil.copy(row["path"], train)
    rows = compute_scorecard(db, make_tiny_extractor(), FeatureCache(tmp / "cache"), FAST, training_dir=train)
    stored = metric_store.list_results(db)
    assert len(stored) == len(rows)
    keys = {(r["checkpoint_id"], r["scope"], r["metric"]) for r in stored}
    for checkpoint in ids:
        assert {m for c, _, m in keys if c == checkpoint} == set(ALL_METRICS)
        for scope in ("AD", "NonAD", "pooled"):
            assert (checkpoint, scope, "fid") in keys and (checkpoint, scope, "kid") in keys
    fid = next(r for r in stored if r["metric"] == "fid" and r["scope"] == "pooled")
    assert fid["value"] > 0 and fid["ci_low"] <= fid["value"] <= fid["ci_high"] or fid["ci_low"] is None
    assert (fid["n_real"], fid["n_fake"], fid["extractor"]) == (16, 12, "tiny")
    assert "tiny seeded test CNN" in fid["preprocessing"]
    memo = next(r for r in stored if r["metric"] == "memorisation" and r["checkpoint_id"] == ids[0])
    # the training folder holds this checkpoint's files themselves: every one is "memorised"
    assert memo["value"] == pytest.approx(1.0)
    assert memo["details"]["pairs"][0]["distance"] == pytest.approx(0.0, abs=1e-5)


def test_a_second_run_reuses_cached_features_and_replaces_results(db_with_images, caplog):
    db, ids, tmp = db_with_images
    cache = FeatureCache(tmp / "cache")
    compute_scorecard(db, make_tiny_extractor(), cache, FAST)
    first = {(r["checkpoint_id"], r["scope"], r["metric"]): r["value"] for r in metric_store.list_results(db)}
    caplog.set_level("INFO", logger="evaluation.cache")
    compute_scorecard(db, make_tiny_extractor(), cache, FAST)
    again = {(r["checkpoint_id"], r["scope"], r["metric"]): r["value"] for r in metric_store.list_results(db)}
    assert again == first
    assert all("0 computed" in message for message in caplog.messages if "features:" in message)
    skipped = [r for r in metric_store.list_results(db) if r["metric"] == "memorisation"]
    assert all(r["value"] is None and "training" in r["details"]["skipped"] for r in skipped)


def test_nothing_to_evaluate_is_a_clear_error(tmp_path):
    with connect(tmp_path / "empty.db") as db, pytest.raises(NothingToEvaluate, match="real images"):
        compute_scorecard(db, make_tiny_extractor(), None, FAST)
