"""The downstream segmentation experiment: Dice and IoU of U-Nets trained per regime and real-set size.

A standard U-Net is trained on three regimes, each tested on the same held-out real images:

* ``"real"``: the first ``n`` real training pairs, for each size in ``sizes`` (e.g. 16/32/64/all);
* ``"synthetic"``: synthetic pairs only (``n_real`` = 0);
* ``"real+synthetic"``: the same first ``n`` real pairs plus the synthetic pairs.

The real test split is drawn once (seeded) and never trained on; the real training subsets are
nested (16 ⊂ 32 ⊂ 64 ⊂ all, per repeat) so the sizes differ only by the added images. Each run
reports per-image Dice and IoU on the test images (prediction = sigmoid > 0.5) as a mean with a
percentile bootstrap CI over test images, and separately on an optional cross-dataset test set.

Empty conventions (per image): if both the prediction and the ground truth are empty, Dice = IoU = 1
(perfect agreement); if exactly one is empty, Dice = IoU = 0. Training and test masks must be
non-empty, so on them an empty prediction scores 0.

By default every run takes the same number of optimiser steps (``steps``), so sizes and regimes get
equal compute; with ``epochs`` the step count grows with the training set instead (then
real+synthetic also trains longer than real-only). Run ``python -m evaluation.segmentation --help``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats
from torch import nn

from evaluation.segmentation.data import SegmentationSet, real_subsets, split_test
from evaluation.segmentation.model import predict_masks, train_unet
from evaluation.segmentation.settings import SegmentationError, SegmentationSettings

logger = logging.getLogger(__name__)

REGIMES = ("real", "synthetic", "real+synthetic")


def dice_iou(predicted: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Dice and IoU of boolean masks.

    Dice = 2|P∩T| / (|P| + |T|), IoU = |P∩T| / |P∪T|. Both empty: 1 and 1; one empty: 0 and 0.

    Args:
        predicted: (N, H, W) or (H, W) bool.
        truth: Bool of the same shape.

    Returns:
        (dice, iou), each of shape (N,) (or (1,) for a single mask).

    Raises:
        SegmentationError: If the arrays are not bool or their shapes differ.
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.dtype != np.bool_ or truth.dtype != np.bool_ or predicted.shape != truth.shape:
        raise SegmentationError(f"predicted/truth: got {predicted.dtype} {predicted.shape} and {truth.dtype} "
                                f"{truth.shape}; allowed: two bool arrays of the same shape")
    p, t = predicted.reshape(-1, *predicted.shape[-2:]), truth.reshape(-1, *truth.shape[-2:])
    inter = (p & t).sum((1, 2)).astype(float)
    total = p.sum((1, 2)) + t.sum((1, 2)).astype(float)
    union = total - inter
    empty = total == 0
    dice = np.where(empty, 1.0, 2 * inter / np.where(empty, 1, total))
    iou = np.where(empty, 1.0, inter / np.where(empty, 1, union))
    return dice, iou


def mean_ci(values: np.ndarray, n_boot: int = 1000, confidence: float = 0.95,
            seed: int = 0) -> tuple[float, float, float]:
    """Mean with a percentile bootstrap CI (scipy.stats.bootstrap) over the values, e.g. test images.

    Returns:
        (mean, low, high); with fewer than two values, or all values equal, low = high = mean.
    """
    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2 or np.ptp(values) == 0:
        return mean, mean, mean
    ci = stats.bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=confidence,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    return mean, float(ci.low), float(ci.high)


def evaluate_unet(model: nn.Module, test: SegmentationSet, settings: SegmentationSettings = SegmentationSettings(),
                  seed: int = 0, device: str | torch.device = "cpu") -> dict:
    """Dice and IoU of ``model`` on ``test``: means, bootstrap CIs, per-image values.

    Returns:
        ``{"dice", "dice_low", "dice_high", "iou", "iou_low", "iou_high", "n_test",
        "dice_per_image", "iou_per_image"}`` (the last two numpy arrays).
    """
    predicted = predict_masks(model, test.images, settings.threshold, device=device)
    dice, iou = dice_iou(predicted, test.masks)
    result = {"n_test": len(test), "dice_per_image": dice, "iou_per_image": iou}
    for name, values in (("dice", dice), ("iou", iou)):
        result[name], result[f"{name}_low"], result[f"{name}_high"] = mean_ci(
            values, settings.n_boot, settings.confidence, seed)
    return result


@dataclass
class SegmentationReport:
    """Result of :func:`downstream_segmentation`.

    Attributes:
        rows: One dict per (repeat, regime, size): regime, n_real, n_synthetic, repeat, steps, dice,
            dice_low, dice_high, iou, iou_low, iou_high, n_test, seconds (training + testing),
            train_seconds, and cross_dice ... cross_iou_high, n_cross (None without a cross set).
        summary: One dict per (regime, n_real) over repeats: regime, n_real, n_synthetic, repeats,
            dice, dice_low, dice_high, iou, iou_low, iou_high (CIs over test images of the per-image
            scores averaged over repeats), dice_sd, iou_sd (SD of the repeats' means; None for one
            repeat), n_test, and the same cross_* fields.
        notes: Skipped sizes and other remarks.
        n_real_train, n_test, n_synthetic, n_cross: Pairs available to each role.
        test_source: ``"split"`` (held out from the real pairs) or ``"explicit"``.
        settings: The ``SegmentationSettings`` as a dict; device: where it ran.
    """

    rows: list[dict]
    summary: list[dict]
    notes: list[str]
    n_real_train: int
    n_test: int
    n_synthetic: int
    n_cross: int | None
    test_source: str
    settings: dict
    device: str
    metric_definition: str = ("per-image Dice and IoU of sigmoid > threshold vs the mask; both empty = 1, one "
                              "empty = 0; mean over test images with a percentile bootstrap CI over test images")

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of everything."""
        return asdict(self)


def _check_regimes(regimes: Sequence[str], n_synthetic: int) -> None:
    bad = [r for r in regimes if r not in REGIMES]
    if bad or not regimes:
        raise SegmentationError(f"regimes: got {list(regimes)!r}; allowed: a non-empty list of {', '.join(REGIMES)}")
    if n_synthetic == 0 and any("synthetic" in r for r in regimes):
        raise SegmentationError("synthetic_pairs: got none; allowed: at least one pair when the regimes include "
                                "'synthetic' or 'real+synthetic' (or run regimes=('real',))")


def _scores(prefix: str, result: dict | None) -> dict:
    keys = ("dice", "dice_low", "dice_high", "iou", "iou_low", "iou_high")
    return {f"{prefix}{k}": (result[k] if result else None) for k in keys}


def downstream_segmentation(real_pairs: Sequence, synthetic_pairs: Sequence = (), *,
                            sizes: Sequence = (16, 32, 64, "all"), regimes: Sequence[str] = REGIMES,
                            test_fraction: float = 0.25, test_pairs: Sequence | None = None,
                            cross_pairs: Sequence | None = None, repeats: int = 1, seed: int = 0,
                            settings: SegmentationSettings = SegmentationSettings(),
                            device: str | torch.device = "cpu") -> SegmentationReport:
    """Train a U-Net per regime and real-set size; test each on the same held-out real images.

    Args:
        real_pairs: Real (image uint8 HxWx3, mask bool HxW) pairs.
        synthetic_pairs: Synthetic pairs (capped by ``settings.max_synthetic``).
        sizes: Real training-set sizes, integers or ``"all"``; sizes above the real training set are
            skipped with a note. Subsets are nested within a repeat.
        regimes: Any of ``"real"``, ``"synthetic"`` (run once per repeat, n_real = 0), ``"real+synthetic"``.
        test_fraction: Share of ``real_pairs`` held out (seeded, once) when ``test_pairs`` is None.
        test_pairs: Explicit real test pairs; then all ``real_pairs`` are training pairs.
        cross_pairs: Optional cross-dataset test pairs, reported in the ``cross_*`` fields.
        repeats: Runs per configuration; each repeat draws its own subset order and training seed
            (shared by all regimes and sizes of that repeat).
        seed: Seed of the split, the subsets, training and the bootstraps.
        settings: Network, training and metric settings.
        device: Where to train and predict (``"cpu"``, ``"cuda"``...); never chosen implicitly.

    Returns:
        A :class:`SegmentationReport`.

    Raises:
        SegmentationError: On invalid pairs, sizes, regimes, repeats or too few real pairs.
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise SegmentationError(f"repeats: got {repeats!r}; allowed: an integer >= 1")
    sets = _Sets.of(real_pairs, synthetic_pairs, test_pairs, cross_pairs, regimes, test_fraction, seed, settings)
    notes = real_subsets(len(sets.train), sizes, seed=seed)[1]  # validates sizes before any training
    for note in notes:
        logger.warning(note)
    rows, per_image = [], {}
    for repeat in range(repeats):
        subsets = real_subsets(len(sets.train), sizes, seed=seed, repeat=repeat)[0]
        train_seed = int(np.random.SeedSequence([seed, 2, repeat]).generate_state(1)[0])
        for regime, n in [(regime, n) for regime in regimes for n in ([0] if regime == "synthetic" else subsets)]:
            data = sets.synthetic if regime == "synthetic" else sets.train.subset(subsets[n])
            if regime == "real+synthetic":
                data = SegmentationSet.concat(data, sets.synthetic, regime)
            row, results = _run(data, sets, settings, train_seed, seed, device)
            rows.append({"regime": regime, "n_real": n, "n_synthetic": len(data) - n, "repeat": repeat, **row})
            per_image.setdefault((regime, n), []).append(results)
            logger.info("%s n_real=%d repeat %d: Dice %.3f, IoU %.3f", regime, n, repeat, row["dice"], row["iou"])
    summary = [_summarise(regime, n, runs, rows, settings, seed) for (regime, n), runs in per_image.items()]
    return SegmentationReport(rows, summary, notes, len(sets.train), len(sets.test), sets.n_synthetic,
                              None if sets.cross is None else len(sets.cross),
                              "split" if test_pairs is None else "explicit", asdict(settings), str(device))


@dataclass(frozen=True)
class _Sets:
    """The validated pairs of one experiment: real training and test, synthetic and cross-dataset (or None)."""

    train: SegmentationSet
    test: SegmentationSet
    synthetic: SegmentationSet | None
    cross: SegmentationSet | None

    @property
    def n_synthetic(self) -> int:
        return 0 if self.synthetic is None else len(self.synthetic)

    @classmethod
    def of(cls, real_pairs, synthetic_pairs, test_pairs, cross_pairs, regimes: Sequence[str], test_fraction: float,
           seed: int, settings: SegmentationSettings) -> _Sets:
        """Validate and resize every set (and the regimes against the synthetic pairs); hold out the real
        test pairs unless ``test_pairs`` are given."""
        real = SegmentationSet.from_pairs(real_pairs, settings.size, "real_pairs")
        if test_pairs is None:
            train_index, test_index = split_test(len(real), test_fraction, seed)
            train, test = real.subset(train_index), real.subset(test_index)
        else:
            train, test = real, SegmentationSet.from_pairs(test_pairs, settings.size, "test_pairs")
        synthetic = (SegmentationSet.from_pairs(synthetic_pairs, settings.size, "synthetic_pairs")
                     if len(synthetic_pairs) else None)
        if synthetic is not None and settings.max_synthetic:
            synthetic = synthetic.subset(range(min(settings.max_synthetic, len(synthetic))))
        _check_regimes(regimes, 0 if synthetic is None else len(synthetic))
        cross = SegmentationSet.from_pairs(cross_pairs, settings.size, "cross_pairs") if cross_pairs is not None else None
        return cls(train, test, synthetic, cross)


def _run(data: SegmentationSet, sets: _Sets, settings: SegmentationSettings, train_seed: int, seed: int,
         device) -> tuple[dict, tuple[dict, dict | None]]:
    """Train one U-Net on ``data`` and test it: the row's scores and timings, and the per-image results."""
    start = time.perf_counter()
    model = train_unet(data, settings, train_seed, device)
    train_seconds = time.perf_counter() - start
    result = evaluate_unet(model, sets.test, settings, seed, device)
    cross_result = evaluate_unet(model, sets.cross, settings, seed, device) if sets.cross is not None else None
    steps = settings.epochs * math.ceil(len(data) / min(settings.batch_size, len(data))) \
        if settings.epochs else settings.steps
    row = {"steps": steps, **_scores("", result), "n_test": len(sets.test),
           "seconds": time.perf_counter() - start, "train_seconds": train_seconds,
           **_scores("cross_", cross_result), "n_cross": None if sets.cross is None else len(sets.cross)}
    return row, (result, cross_result)


def _summarise(regime: str, n: int, runs: list, rows: list[dict], settings: SegmentationSettings, seed: int) -> dict:
    """Per-image scores averaged over repeats, then a bootstrap CI over test images."""
    mine = [r for r in rows if r["regime"] == regime and r["n_real"] == n]
    out = {"regime": regime, "n_real": n, "n_synthetic": mine[0]["n_synthetic"], "repeats": len(runs)}
    for prefix, which in (("", 0), ("cross_", 1)):
        for metric in ("dice", "iou"):
            if runs[0][which] is None:
                out.update({f"{prefix}{metric}{s}": None for s in ("", "_low", "_high", "_sd")})
                continue
            averaged = np.mean([run[which][f"{metric}_per_image"] for run in runs], axis=0)
            mean, low, high = mean_ci(averaged, settings.n_boot, settings.confidence, seed)
            means = [run[which][metric] for run in runs]
            out.update({f"{prefix}{metric}": mean, f"{prefix}{metric}_low": low, f"{prefix}{metric}_high": high,
                        f"{prefix}{metric}_sd": float(np.std(means, ddof=1)) if len(runs) > 1 else None})
    out["n_test"] = mine[0]["n_test"]
    return out
