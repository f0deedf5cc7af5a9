"""Every metric for every checkpoint, per pathology and pooled, stored as metric results.

For each checkpoint with stored synthetic images: FID (bootstrap CI), KID, precision, recall,
density, coverage (per scope AD, NonAD, pooled), MS-SSIM diversity beside the real set's (per
pathology), label fidelity, augmentation utility and, when the training images are given,
memorisation. Features come from the cache first, so a new checkpoint costs only its own images.
A metric that cannot be computed is stored with no value and the reason in ``details.skipped``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import run_cli
from common.device import resolve_device
from common.labels import LABELS
from database import checkpoints as checkpoint_store
from database import image_sets as image_set_store
from database import images as image_store
from database import metric_results as metric_store
from database.connection import connect
from evaluation.cache import CacheError, FeatureCache, features_for
from evaluation.diversity import diversity_report
from evaluation.features import EXTRACTORS, ExtractorUnavailable, get_extractor
from evaluation.images import ImageSetError, LoadedImages, list_image_files, load_images
from evaluation.memorisation import memorisation_report
from evaluation.metrics import MetricSettings, MetricsReport, evaluate_features
from evaluation.segmentation.settings import SegmentationError, SegmentationSettings
from evaluation.utility import augmentation_utility, label_fidelity

logger = logging.getLogger(__name__)

SCOPES: tuple[str, ...] = (*LABELS, "pooled")
DISTRIBUTION_METRICS: tuple[str, ...] = ("fid", "kid", "precision", "recall", "density", "coverage")
PER_IMAGE_METRICS: tuple[str, ...] = ("diversity_ms_ssim", "label_fidelity", "augmentation_utility", "memorisation")
ALL_METRICS: tuple[str, ...] = DISTRIBUTION_METRICS + PER_IMAGE_METRICS


class NothingToEvaluate(ValueError):
    """No real images, or no checkpoint with synthetic images, in the study database."""


RECORDED_SETTINGS: tuple[str, ...] = ("n_boot", "seed", "k", "kid_subset_size", "diversity_pairs", "diversity_size",
                                      "utility_repeats", "memorisation_q", "batch_size")
"""The ``MetricSettings`` stored in each distribution metric's ``details.settings`` (the keys results have always had)."""


@dataclass
class _Set:
    loaded: LoadedImages
    features: np.ndarray
    labels: np.ndarray


def compute_scorecard(
    db, extractor, cache: FeatureCache | None, settings: MetricSettings = MetricSettings(),
    training_dir: Path | None = None, checkpoint_ids: list[int] | None = None,
    on_progress: Callable[[float, str], None] | None = None, image_sets: list[str] | None = None,
) -> list[dict]:
    """Compute and store every metric of every checkpoint (or of ``checkpoint_ids``).

    The real reference set is the real images of ``image_sets`` (``reference_sets``); each stored
    row names them in ``details.reference_sets``.

    Args:
        db: The study database (``database.connection.connect``).
        extractor: A ``FeatureExtractor`` (``evaluation.features.get_extractor``).
        cache: Feature cache, or None to compute everything.
        settings: Bootstrap, PRDC, diversity and utility settings.
        training_dir: The images the model was trained on, for memorisation; None skips it.
        checkpoint_ids: Only these checkpoints; default all with synthetic images.
        on_progress: Called with (fraction done, what is being done).
        image_sets: Names of the image sets of the real reference set; default ``reference_sets``'.

    Returns:
        The stored metric result rows.

    Raises:
        NothingToEvaluate: Without real images of both labels in the reference sets, or without
            synthetic images, or for an unknown set.
    """
    progress = on_progress or (lambda fraction, text: None)
    sets = reference_sets(db, image_sets)
    real_rows = image_store.list_images(db, source="real", image_sets=sets)
    if any(sum(row["label"] == label for row in real_rows) < 2 for label in LABELS):
        raise NothingToEvaluate(f"metrics need at least 2 real images of each pathology in the reference image set(s) "
                                f"{', '.join(sets)} (python -m review.register --data DIR --set NAME)")
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
    for row in rows:
        row["details"] = {**(row.get("details") or {}), "reference_sets": list(sets)}
    metric_store.save_results(db, rows)
    progress(1.0, "done")
    return rows


def reference_sets(db, names: list[str] | None = None) -> list[str]:
    """The image sets whose real images the metrics compare against: ``names``, or every clinical
    set, or (on a demo install without clinical sets) every phantom-demo set; never both kinds
    unless named.

    Raises:
        NothingToEvaluate: For an unknown set name, or when no set exists.
    """
    try:
        chosen = image_set_store.resolve(db, names)
    except image_set_store.ImageSetError as error:
        raise NothingToEvaluate(str(error)) from error
    if not names:
        clinical = [s for s in chosen if s["kind"] == "clinical"]
        chosen = clinical or [s for s in chosen if s["kind"] == "phantom-demo"]
    if not chosen:
        raise NothingToEvaluate("no image set holds real images: register some with "
                                "python -m review.register --data DIR --set NAME")
    return [s["name"] for s in chosen]


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


def _features(rows: list[dict], extractor, cache, settings: MetricSettings) -> _Set:
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


def _distribution_rows(scoped: dict, real: np.ndarray, fake: np.ndarray, settings: MetricSettings) -> list[dict]:
    report = MetricsReport(len(real), len(fake), scoped["extractor"], scoped["preprocessing"])
    evaluate_features(report, real, fake, settings)
    common = {"warnings": report.warnings, "settings": {name: getattr(settings, name) for name in RECORDED_SETTINGS}}
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
    return fake_part["value"], fake_part["ci"][0], fake_part["ci"][1], jsonable(report)


def _label_fidelity(real: _Set, fake: _Set, settings, scope: str | None = None):
    report = label_fidelity(real.features, real.labels, fake.features, fake.labels, seed=settings.seed)
    part = report if scope is None else report["per_label"].get(scope)
    if part is None:
        raise ValueError(f"no synthetic {scope} images")
    details = {key: report[key] for key in ("real_cv", "classifier", "ci_method") if key in report}
    return part["share"], part["ci"][0], part["ci"][1], jsonable({**details, "n_correct": part["n_correct"], "n": part["n"]})


def _augmentation(real: _Set, fake: _Set, settings):
    report = augmentation_utility(real.features, real.labels, fake.features, fake.labels,
                                  n_repeats=settings.utility_repeats, seed=settings.seed)
    diff = report["difference"]["balanced_accuracy"]
    return diff["mean"], diff["ci"][0], diff["ci"][1], jsonable(report)


def _memorisation(real: _Set, fake: _Set, training, settings):
    report = memorisation_report(training.features, fake.features, real.features, q=settings.memorisation_q, top_k=20)
    report["pairs"] = [{"fake": fake.loaded.paths[f], "train": training.loaded.paths[t], "distance": float(d)}
                       for f, t, d in report["nearest"]]
    return report["share_closer"], report["share_ci"][0], report["share_ci"][1], jsonable(
        {key: value for key, value in report.items()
         if key not in ("fake_nn_index", "fake_nn_distance", "heldout_nn_distance")})


def jsonable(value):
    """``value`` with numpy scalars and small arrays made plain Python (large arrays summarised), for stored details."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 256 else f"array{value.shape}"
    if isinstance(value, np.generic):
        return value.item()
    return value


def _minus(a, b):
    return None if a is None or b is None else a - b


def _plus(a, b):
    return None if a is None or b is None else a + b


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m evaluation.scorecard``."""
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
    parser.add_argument("--set", dest="image_sets", action="append", default=None, metavar="NAME",
                        help="image set of the real reference images (repeatable; default: every clinical set, or "
                             "the phantom-demo sets when there is no clinical one)")
    parser.add_argument("--segmentation", action="store_true",
                        help="run the downstream segmentation test instead (checkpoints with image+mask pairs; a U-Net "
                             "trained on real, synthetic and real+synthetic pairs, Dice/IoU on held-out real pairs)")
    parser.add_argument("--sizes", nargs="+", default=["16", "32", "64", "all"],
                        help="--segmentation: real training-set sizes (default 16 32 64 all)")
    parser.add_argument("--steps", type=int, default=300, help="--segmentation: training steps per run (default 300)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m evaluation.scorecard``: compute and store every metric of every checkpoint; exit status."""
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import config_from

    parser = build_parser()
    args = parser.parse_args(argv)
    bad = [size for size in args.sizes if size != "all" and not size.isdigit()]
    if args.segmentation and bad:
        parser.error(f"--sizes: whole numbers or 'all', got {' '.join(bad)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = config_from(data_dir=args.data_dir, db=args.db)
    errors = (NothingToEvaluate, SegmentationError, ExtractorUnavailable, ImageSetError, CacheError)
    return run_cli(lambda: _store(args, config), errors)


def _store(args: argparse.Namespace, config) -> int:
    """Compute and store the scorecard (or the segmentation test) that the flags ask for; print a summary."""
    # Imported here: evaluation.segmentation.scorecard builds on this module (its errors and reference sets).
    from evaluation.segmentation.scorecard import compute_segmentation_scorecard

    with connect(config.db_path) as db:
        if args.segmentation:
            sizes = tuple(size if size == "all" else int(size) for size in args.sizes)
            rows = compute_segmentation_scorecard(db, SegmentationSettings(steps=args.steps), sizes=sizes,
                                                  device=str(resolve_device(args.device)), on_progress=_log_progress,
                                                  image_sets=args.image_sets)
            what = "segmentation"
        else:
            model = get_extractor(args.extractor, device=resolve_device(args.device))
            rows = compute_scorecard(db, model, FeatureCache(config.data_dir / "features"), training_dir=args.training,
                                     on_progress=_log_progress, image_sets=args.image_sets)
            what = args.extractor
    print(f"stored {len(rows)} metric results ({what}) in {config.db_path}")
    return 0


def _log_progress(fraction: float, text: str) -> None:
    logger.info("%3.0f%% %s", 100 * fraction, text)


if __name__ == "__main__":
    raise SystemExit(main())
