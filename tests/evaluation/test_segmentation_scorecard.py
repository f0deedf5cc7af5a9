"""The downstream segmentation test per checkpoint, stored as metric results and related to ratings."""

from __future__ import annotations

import pytest

from database import metric_results as metric_store
from database.connection import connect
from evaluation.scorecard import NothingToEvaluate
from evaluation.segmentation.scorecard import SEGMENTATION_EXTRACTOR, compute_segmentation_scorecard
from evaluation.segmentation.settings import SegmentationSettings
from tests.review.conftest import add_images, add_phantom_masks

TINY = SegmentationSettings(size=16, width=4, depth=2, steps=6, batch_size=4, n_boot=50)


def test_every_checkpoint_with_pairs_gets_dice_iou_and_gain_rows(tmp_path):
    with connect(tmp_path / "study.db") as db:
        ids = add_images(db, tmp_path / "images", n_real=8, n_synthetic=3, checkpoints=2)
        add_phantom_masks(db, tmp_path / "masks")
        rows = compute_segmentation_scorecard(db, TINY, sizes=(4, "all"), seed=1)
        stored = metric_store.list_results(db, SEGMENTATION_EXTRACTOR)
        assert len(stored) == len(rows)
        names = {(r["checkpoint_id"], r["metric"]) for r in stored}
        for cid in ids:
            assert {(cid, m) for m in ("seg_dice_synthetic_only", "seg_iou_synthetic_only", "seg_dice_mixed_n4",
                                       "seg_iou_mixed_all", "seg_dice_gain_n4", "seg_dice_gain_all")} <= names
        for row in stored:
            if row["metric"].startswith("seg_dice_gain"):
                assert -1 <= row["value"] <= 1 and row["details"]["real_only"]["regime"] == "real"
            else:
                assert 0 <= row["ci_low"] <= row["value"] <= row["ci_high"] <= 1
            assert row["preprocessing"].startswith("16 px; U-Net width 4 depth 2")


def test_without_masks_the_test_says_what_to_do(tmp_path):
    with connect(tmp_path / "study.db") as db:
        add_images(db, tmp_path / "images", n_real=8, n_synthetic=3, checkpoints=1)
        with pytest.raises(NothingToEvaluate, match="at least 8 real images with masks, found 0"):
            compute_segmentation_scorecard(db, TINY)
