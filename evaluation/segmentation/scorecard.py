"""The downstream segmentation test per checkpoint, stored as metric results (``python -m evaluation.scorecard --segmentation``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from database import checkpoints as checkpoint_store
from database import images as image_store
from database import masks as mask_store
from database import metric_results as metric_store
from evaluation.scorecard import NothingToEvaluate, jsonable, reference_sets
from evaluation.segmentation.experiment import downstream_segmentation
from evaluation.segmentation.settings import SegmentationSettings
from generation.masks.files import load_mask

SEGMENTATION_EXTRACTOR = "segmentation-unet"
"""The ``extractor`` recorded with downstream segmentation results (no feature extractor: a U-Net)."""


def compute_segmentation_scorecard(db, settings=None, sizes=(16, 32, 64, "all"), repeats: int = 1, seed: int = 0,
                                   device: str = "cpu", checkpoint_ids: list[int] | None = None,
                                   on_progress: Callable[[float, str], None] | None = None,
                                   image_sets: list[str] | None = None) -> list[dict]:
    """The downstream segmentation test for every checkpoint with image+mask pairs, stored as metric results.

    The real pairs come from ``image_sets`` (``reference_sets``).

    A U-Net (``evaluation.segmentation``) is trained on real pairs only (once, the baseline), on a
    checkpoint's synthetic pairs only, and on real + synthetic pairs at each real-set size, and
    tested on the same held-out real pairs. Stored per checkpoint (scope ``pooled``, extractor
    ``SEGMENTATION_EXTRACTOR``): ``seg_dice_synthetic_only`` and ``seg_iou_synthetic_only``,
    ``seg_dice_mixed_<size>`` and ``seg_iou_mixed_<size>`` (size ``n16`` ... or ``all``), and
    ``seg_dice_gain_<size>``: mixed minus real-only Dice at that size (the baseline's row is in its
    details). CIs are bootstrap intervals over the held-out test images.

    Raises:
        NothingToEvaluate: Without at least 8 real image+mask pairs, or without a checkpoint that
            has synthetic pairs.
    """
    settings = settings or SegmentationSettings()
    progress = on_progress or (lambda fraction, text: None)
    sets = reference_sets(db, image_sets)
    members = {row["sha256"] for row in image_store.list_images(db, source="real", image_sets=sets)}
    real = _mask_pairs([row for row in mask_store.list_masked_images(db, source="real") if row["sha256"] in members])
    if len(real) < 8:
        raise NothingToEvaluate(f"the segmentation test needs at least 8 real images with masks, found {len(real)}: "
                                "python -m review.register --data DIR --masks")
    checkpoints = [c for c in checkpoint_store.list_checkpoints(db) if (checkpoint_ids is None or c["id"] in checkpoint_ids)
                   and mask_store.list_masked_images(db, source="synthetic", checkpoint_id=c["id"])]
    if not checkpoints:
        raise NothingToEvaluate("no checkpoint has synthetic images with masks: generate image+mask pairs first "
                                "(python -m generation.masks.sample)")
    common = dict(sizes=sizes, repeats=repeats, seed=seed, settings=settings, device=device)
    progress(0.0, "real-only baseline")
    baseline = downstream_segmentation(real, (), regimes=("real",), **common)
    preprocessing = (f"{settings.size} px; U-Net width {settings.width} depth {settings.depth} {settings.norm} norm; "
                     f"{settings.steps} steps batch {settings.batch_size} lr {settings.learning_rate}; seed {seed}; "
                     f"{repeats} repeat(s); {baseline.n_test} held-out real pairs")
    rows: list[dict] = []
    for number, checkpoint in enumerate(checkpoints, start=1):
        progress(number / (len(checkpoints) + 1), f"segmentation: checkpoint {checkpoint['name']}")
        synthetic = _mask_pairs(mask_store.list_masked_images(db, source="synthetic", checkpoint_id=checkpoint["id"]))
        report = downstream_segmentation(real, synthetic, regimes=("synthetic", "real+synthetic"), **common)
        base = {"checkpoint_id": checkpoint["id"], "scope": "pooled", "extractor": SEGMENTATION_EXTRACTOR,
                "preprocessing": preprocessing}
        rows += _segmentation_rows(base, report, baseline)
    metric_store.save_results(db, rows)
    progress(1.0, "done")
    return rows


def _segmentation_rows(base: dict, report, baseline) -> list[dict]:
    """One checkpoint's ``seg_*`` rows: Dice and IoU per regime and size, and the Dice gain over real only."""
    label = _size_labels(baseline)
    real_only = {label(row["n_real"]): row for row in baseline.summary}
    rows = []
    for row in report.summary:
        size = "synthetic_only" if row["regime"] == "synthetic" else f"mixed_{label(row['n_real'])}"
        scoped = {**base, "n_real": row["n_real"], "n_fake": row["n_synthetic"]}
        details = {"summary": jsonable(row), "notes": report.notes, "metric": report.metric_definition}
        for metric in ("dice", "iou"):
            rows.append({**scoped, "metric": f"seg_{metric}_{size}", "value": row[metric],
                         "ci_low": row[f"{metric}_low"], "ci_high": row[f"{metric}_high"], "details": details})
        if row["regime"] == "real+synthetic" and label(row["n_real"]) in real_only:
            reference = real_only[label(row["n_real"])]
            rows.append({**scoped, "metric": f"seg_dice_gain_{label(row['n_real'])}", "ci_low": None,
                         "ci_high": None, "value": row["dice"] - reference["dice"],
                         "details": {"mixed": jsonable(row), "real_only": jsonable(reference)}})
    return rows


def _mask_pairs(rows: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 RGB image, boolean mask) of stored images with masks, read as their masks were registered."""
    pairs = []
    for row in rows:
        reading = row.get("reading") or {}
        mask, _ = load_mask(Path(row["mask_path"]), reading.get("colour_map"), reading.get("threshold"))
        with Image.open(row["path"]) as image:
            pairs.append((np.asarray(image.convert("RGB")), mask))
    return pairs


def _size_labels(report) -> Callable[[int], str]:
    return lambda n_real: "all" if n_real == report.n_real_train else f"n{n_real}"
