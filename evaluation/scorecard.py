"""Every metric for every checkpoint, per pathology and pooled, stored as metric results.

For each checkpoint with stored synthetic images: FID (bootstrap CI), KID, precision, recall,
density, coverage (per scope AD, NonAD, pooled), MS-SSIM diversity beside the real set's (per
pathology), label fidelity, augmentation utility and, when the training images are given,
memorisation. Features come from the cache first, so a new checkpoint costs only its own images.
A metric that cannot be computed is stored with no value and the reason in ``details.skipped``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from common.labels import LABELS
from database import checkpoints as checkpoint_store
from database import images as image_store
from database import masks as mask_store
from database import metric_results as metric_store
from database.connection import open_db
from evaluation.cache import CacheError, FeatureCache, features_for
from evaluation.diversity import diversity_report
from evaluation.features import EXTRACTORS, ExtractorUnavailable, get_extractor, resolve_device
from evaluation.images import ImageSetError, LoadedImages, list_image_files, load_images
from evaluation.memorisation import memorisation_report
from evaluation.metrics import MetricOptions, MetricsReport, evaluate_features
from evaluation.segmentation import SegmentationError, SegmentationSettings, downstream_segmentation
from evaluation.utility import augmentation_utility, label_fidelity
from generation.masks.files import load_mask

logger = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = (*LABELS, "pooled")
DISTRIBUTION_METRICS: tuple[str, ...] = ("fid", "kid", "precision", "recall", "density", "coverage")
PER_IMAGE_METRICS: tuple[str, ...] = ("diversity_ms_ssim", "label_fidelity", "augmentation_utility", "memorisation")
ALL_METRICS: tuple[str, ...] = DISTRIBUTION_METRICS + PER_IMAGE_METRICS


class NothingToEvaluate(ValueError):
    """No real images, or no checkpoint with synthetic images, in the study database."""


@dataclass(frozen=True)
class ScorecardSettings:
    """How the scorecard is computed; stored in each result's details."""

    n_boot: int = 100
    seed: int = 0
    k: int = 5
    kid_subset_size: int = 1000
    diversity_pairs: int = 100
    diversity_size: int = 128
    utility_repeats: int = 10
    memorisation_q: float = 0.05
    batch_size: int = 16


@dataclass
class _Set:
    loaded: LoadedImages
    features: np.ndarray
    labels: np.ndarray


def compute_scorecard(
    db, extractor, cache: FeatureCache | None, settings: ScorecardSettings = ScorecardSettings(),
    training_dir: Path | None = None, checkpoint_ids: list[int] | None = None,
    on_progress: Callable[[float, str], None] | None = None,
) -> list[dict]:
    """Compute and store every metric of every checkpoint (or of ``checkpoint_ids``).

    Args:
        db: The study database (``database.connection.open_db``).
        extractor: A ``FeatureExtractor`` (``evaluation.features.get_extractor``).
        cache: Feature cache, or None to compute everything.
        settings: Bootstrap, PRDC, diversity and utility settings.
        training_dir: The images the model was trained on, for memorisation; None skips it.
        checkpoint_ids: Only these checkpoints; default all with synthetic images.
        on_progress: Called with (fraction done, what is being done).

    Returns:
        The stored metric result rows.

    Raises:
        NothingToEvaluate: Without real images of both labels, or without synthetic images.
    """
    progress = on_progress or (lambda fraction, text: None)
    real_rows = image_store.list_images(db, source="real")
    if any(sum(row["label"] == label for row in real_rows) < 2 for label in LABELS):
        raise NothingToEvaluate("metrics need at least 2 registered real images of each pathology "
                                "(python -m review.register --data DIR)")
    checkpoints = _checkpoints_with_images(db, checkpoint_ids)
    if not checkpoints:
        raise NothingToEvaluate("no checkpoint has stored synthetic images: generate some first (Generate tab)")
    progress(0.0, f"real images: {extractor.name} features")
    real = _features(real_rows, extractor, cache, settings)
    training = None
    if training_dir is not None:
        loaded = load_images(_training_files(Path(training_dir)), name="training_dir")
        training = _Set(loaded, features_for(loaded, extractor, cache, batch_size=settings.batch_size).features,
                        np.array([]))
    rows: list[dict] = []
    for number, checkpoint in enumerate(checkpoints, start=1):
        progress(number / (len(checkpoints) + 1), f"checkpoint {checkpoint['name']} (step {checkpoint['step']})")
        fake = _features(image_store.list_images(db, source="synthetic", checkpoint_id=checkpoint["id"]), extractor, cache, settings)
        rows += _checkpoint_rows(checkpoint["id"], real, fake, training, extractor, settings)
    metric_store.save_results(db, rows)
    progress(1.0, "done")
    return rows


def _training_files(folder: Path) -> list[Path]:
    """A labelled folder's AD/ and NonAD/ images (not, e.g., a phantom set's masks/), else every image."""
    labelled = [folder / label for label in LABELS if (folder / label).is_dir()]
    if not labelled:
        return list_image_files(folder, name="training_dir")
    return [path for sub in labelled for path in list_image_files(sub, name="training_dir")]


def _checkpoints_with_images(db, only: list[int] | None) -> list[dict]:
    chosen = []
    for checkpoint in checkpoint_store.list_checkpoints(db):
        if only is not None and checkpoint["id"] not in only:
            continue
        if image_store.list_images(db, source="synthetic", checkpoint_id=checkpoint["id"]):
            chosen.append(checkpoint)
    return chosen


def _features(rows: list[dict], extractor, cache, settings: ScorecardSettings) -> _Set:
    label_of = {row["path"]: row["label"] for row in rows}
    loaded = load_images([row["path"] for row in rows], name="images")
    got = features_for(loaded, extractor, cache, batch_size=settings.batch_size)
    return _Set(loaded, got.features, np.array([label_of[path] for path in loaded.paths]))


def _checkpoint_rows(checkpoint_id, real: _Set, fake: _Set, training, extractor, settings) -> list[dict]:
    base = {"checkpoint_id": checkpoint_id, "extractor": extractor.name, "preprocessing": extractor.preprocessing}
    rows = []
    for scope in SCOPES:
        r_mask = np.ones(len(real.labels), bool) if scope == "pooled" else real.labels == scope
        f_mask = np.ones(len(fake.labels), bool) if scope == "pooled" else fake.labels == scope
        sizes = {"n_real": int(r_mask.sum()), "n_fake": int(f_mask.sum())}
        scoped = {**base, "scope": scope, **sizes}
        rows += _distribution_rows(scoped, real.features[r_mask], fake.features[f_mask], settings)
        if scope != "pooled":
            rows.append({**scoped, **_guarded("diversity_ms_ssim", _diversity, real, fake, r_mask, f_mask, settings)})
    pooled = {**base, "scope": "pooled", "n_real": len(real.labels), "n_fake": len(fake.labels)}
    rows.append({**pooled, **_guarded("label_fidelity", _label_fidelity, real, fake, settings)})
    for scope in LABELS:  # the per-label shares of the same classifier
        rows.append({**base, "scope": scope, "n_real": int((real.labels == scope).sum()),
                     "n_fake": int((fake.labels == scope).sum()),
                     **_guarded("label_fidelity", _label_fidelity, real, fake, settings, scope)})
    rows.append({**pooled, **_guarded("augmentation_utility", _augmentation, real, fake, settings)})
    if training is not None:
        rows.append({**pooled, **_guarded("memorisation", _memorisation, real, fake, training, settings)})
    else:
        rows.append({**pooled, "metric": "memorisation", "value": None, "ci_low": None, "ci_high": None,
                     "details": {"skipped": "the training images are not known: give the training folder"}})
    return rows


def _distribution_rows(scoped: dict, real: np.ndarray, fake: np.ndarray, settings: ScorecardSettings) -> list[dict]:
    report = MetricsReport(len(real), len(fake), scoped["extractor"], scoped["preprocessing"])
    options = MetricOptions(n_boot=settings.n_boot, seed=settings.seed, k=settings.k,
                            kid_subset_size=settings.kid_subset_size)
    evaluate_features(report, real, fake, options)
    common = {"warnings": report.warnings, "settings": asdict(settings)}
    values = {
        "fid": (report.fid, report.fid_ci_low, report.fid_ci_high, {"n_boot": report.fid_bootstrap}),
        "kid": (report.kid_mean, _minus(report.kid_mean, report.kid_std), _plus(report.kid_mean, report.kid_std),
                {"std": report.kid_std, "subset_size": report.kid_subset_size, "ci": "mean ± 1 std over subsets"}),
        **{name: (getattr(report, name), None, None, {"k": report.k}) for name in ("precision", "recall", "density", "coverage")},
    }
    rows = []
    for metric, (value, low, high, extra) in values.items():
        skipped = report.skipped.get("prdc" if metric in ("precision", "recall", "density", "coverage") else metric)
        details = {**common, **extra, **({"skipped": skipped} if skipped else {})}
        rows.append({**scoped, "metric": metric, "value": value, "ci_low": low, "ci_high": high, "details": details})
    return rows


def _guarded(metric: str, compute, *args) -> dict:
    """Run one metric; a failure becomes a stored row without a value and with the reason."""
    try:
        value, low, high, details = compute(*args)
    except (ValueError, np.linalg.LinAlgError) as error:
        logger.warning("%s not computed: %s", metric, error)
        return {"metric": metric, "value": None, "ci_low": None, "ci_high": None, "details": {"skipped": str(error)}}
    return {"metric": metric, "value": value, "ci_low": low, "ci_high": high, "details": details}


def _diversity(real: _Set, fake: _Set, r_mask, f_mask, settings):
    report = diversity_report([im for im, keep in zip(fake.loaded.images, f_mask) if keep],
                              [im for im, keep in zip(real.loaded.images, r_mask) if keep],
                              size=settings.diversity_size, n_pairs=settings.diversity_pairs, seed=settings.seed)
    fake_part = report["fake"]
    return fake_part["value"], fake_part["ci"][0], fake_part["ci"][1], _jsonable(report)


def _label_fidelity(real: _Set, fake: _Set, settings, scope: str | None = None):
    report = label_fidelity(real.features, real.labels, fake.features, fake.labels, seed=settings.seed)
    part = report if scope is None else report["per_label"].get(scope)
    if part is None:
        raise ValueError(f"no synthetic {scope} images")
    details = {key: report[key] for key in ("real_cv", "classifier", "ci_method") if key in report}
    return part["share"], part["ci"][0], part["ci"][1], _jsonable({**details, "n_correct": part["n_correct"], "n": part["n"]})


def _augmentation(real: _Set, fake: _Set, settings):
    report = augmentation_utility(real.features, real.labels, fake.features, fake.labels,
                                  n_repeats=settings.utility_repeats, seed=settings.seed)
    diff = report["difference"]["balanced_accuracy"]
    return diff["mean"], diff["ci"][0], diff["ci"][1], _jsonable(report)


def _memorisation(real: _Set, fake: _Set, training, settings):
    report = memorisation_report(training.features, fake.features, real.features, q=settings.memorisation_q, top_k=20)
    report["pairs"] = [{"fake": fake.loaded.paths[f], "train": training.loaded.paths[t], "distance": float(d)}
                       for f, t, d in report["nearest"]]
    return report["share_closer"], report["share_ci"][0], report["share_ci"][1], _jsonable(
        {key: value for key, value in report.items()
         if key not in ("fake_nn_index", "fake_nn_distance", "heldout_nn_distance")})


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 256 else f"array{value.shape}"
    if isinstance(value, np.generic):
        return value.item()
    return value


def _minus(a, b):
    return None if a is None or b is None else a - b


def _plus(a, b):
    return None if a is None or b is None else a + b


SEGMENTATION_EXTRACTOR = "segmentation-unet"
"""The ``extractor`` recorded with downstream segmentation results (no feature extractor: a U-Net)."""


def compute_segmentation_scorecard(db, settings=None, sizes=(16, 32, 64, "all"), repeats: int = 1, seed: int = 0,
                                   device: str = "cpu", checkpoint_ids: list[int] | None = None,
                                   on_progress: Callable[[float, str], None] | None = None) -> list[dict]:
    """The downstream segmentation test for every checkpoint with image+mask pairs, stored as metric results.

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
    real = _mask_pairs(mask_store.list_masked_images(db, source="real"))
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
    label = _size_labels(baseline)
    base = {label(row["n_real"]): row for row in baseline.summary}
    preprocessing = (f"{settings.size} px; U-Net width {settings.width} depth {settings.depth} {settings.norm} norm; "
                     f"{settings.steps} steps batch {settings.batch_size} lr {settings.learning_rate}; seed {seed}; "
                     f"{repeats} repeat(s); {baseline.n_test} held-out real pairs")
    rows: list[dict] = []
    for number, checkpoint in enumerate(checkpoints, start=1):
        progress(number / (len(checkpoints) + 1), f"segmentation: checkpoint {checkpoint['name']}")
        synthetic = _mask_pairs(mask_store.list_masked_images(db, source="synthetic", checkpoint_id=checkpoint["id"]))
        report = downstream_segmentation(real, synthetic, regimes=("synthetic", "real+synthetic"), **common)
        for row in report.summary:
            size = "synthetic_only" if row["regime"] == "synthetic" else f"mixed_{label(row['n_real'])}"
            base_row = {"checkpoint_id": checkpoint["id"], "scope": "pooled", "extractor": SEGMENTATION_EXTRACTOR,
                        "preprocessing": preprocessing, "n_real": row["n_real"], "n_fake": row["n_synthetic"]}
            details = {"summary": _jsonable(row), "notes": report.notes, "metric": report.metric_definition}
            for metric in ("dice", "iou"):
                rows.append({**base_row, "metric": f"seg_{metric}_{size}", "value": row[metric],
                             "ci_low": row[f"{metric}_low"], "ci_high": row[f"{metric}_high"], "details": details})
            if row["regime"] == "real+synthetic" and label(row["n_real"]) in base:
                reference = base[label(row["n_real"])]
                rows.append({**base_row, "metric": f"seg_dice_gain_{label(row['n_real'])}", "ci_low": None,
                             "ci_high": None, "value": row["dice"] - reference["dice"],
                             "details": {"mixed": _jsonable(row), "real_only": _jsonable(reference)}})
    metric_store.save_results(db, rows)
    progress(1.0, "done")
    return rows


def _mask_pairs(rows: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(uint8 RGB image, boolean mask) of stored images with masks, read as their masks were registered."""
    from PIL import Image


    pairs = []
    for row in rows:
        reading = row.get("reading") or {}
        mask, _ = load_mask(Path(row["mask_path"]), reading.get("colour_map"), reading.get("threshold"))
        with Image.open(row["path"]) as image:
            pairs.append((np.asarray(image.convert("RGB")), mask))
    return pairs


def _size_labels(report) -> Callable[[int], str]:
    return lambda n_real: "all" if n_real == report.n_real_train else f"n{n_real}"


def main(argv: list[str] | None = None) -> int:
    """``python -m evaluation.scorecard``: compute and store every metric of every checkpoint; exit status."""
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import build_config
    import argparse
    import sys


    parser = argparse.ArgumentParser(
        prog="python -m evaluation.scorecard",
        description="Compute every metric (FID, KID, PRDC, diversity, label fidelity, augmentation utility, "
                    "memorisation) for every checkpoint with stored synthetic images, against the registered real "
                    "images, and store them in the study database (what the Evaluate tab's button does).")
    parser.add_argument("--db", type=Path, help="study database (default: the app's, DATA/polypturing.db)")
    parser.add_argument("--data-dir", type=Path, help="data folder holding the feature cache (default: the app's)")
    parser.add_argument("--extractor", choices=sorted(EXTRACTORS), default="inception", help="feature extractor")
    parser.add_argument("--training", type=Path, help="the training images folder (AD/ and NonAD/), for memorisation")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run the extractor")
    parser.add_argument("--segmentation", action="store_true",
                        help="run the downstream segmentation test instead (checkpoints with image+mask pairs; a U-Net "
                             "trained on real, synthetic and real+synthetic pairs, Dice/IoU on held-out real pairs)")
    parser.add_argument("--sizes", nargs="+", default=["16", "32", "64", "all"],
                        help="--segmentation: real training-set sizes (default 16 32 64 all)")
    parser.add_argument("--steps", type=int, default=300, help="--segmentation: training steps per run (default 300)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    flags = [*(["--data-dir", str(args.data_dir)] if args.data_dir else []), *(["--db", str(args.db)] if args.db else [])]
    config = build_config(flags)
    db = open_db(config.db_path)
    def report(fraction: float, text: str) -> None:
        logger.info("%3.0f%% %s", 100 * fraction, text)

    try:
        if args.segmentation:
            bad = [size for size in args.sizes if size != "all" and not size.isdigit()]
            if bad:
                parser.error(f"--sizes: whole numbers or 'all', got {' '.join(bad)}")
            sizes = tuple(size if size == "all" else int(size) for size in args.sizes)
            try:
                rows = compute_segmentation_scorecard(db, SegmentationSettings(steps=args.steps), sizes=sizes,
                                                      device=str(resolve_device(args.device)), on_progress=report)
            except SegmentationError as error:
                raise NothingToEvaluate(str(error)) from error
            what = "segmentation"
        else:
            model = get_extractor(args.extractor, device=resolve_device(args.device))
            rows = compute_scorecard(db, model, FeatureCache(config.data_dir / "features"), training_dir=args.training,
                                     on_progress=report)
            what = args.extractor
    except (NothingToEvaluate, ExtractorUnavailable, ImageSetError, CacheError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        db.close()
    print(f"stored {len(rows)} metric results ({what}) in {config.db_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
