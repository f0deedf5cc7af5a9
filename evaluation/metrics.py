"""Image-set metrics end to end: two image sets -> features (cache first) -> FID, KID, PRDC -> a report.

``evaluate_sets`` loads two image sets, gets their features and computes every metric of
``evaluation.distances`` it can, listing the ones it could not and why; ``MetricSettings`` is how
they are computed, here, in the scorecard and in the Evaluate tab. Run
``python -m evaluation.metrics --help`` for the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.cli import run_cli
from common.device import DEVICES, resolve_device
from evaluation.cache import CacheError, FeatureCache, features_for
from evaluation.distances import TooFewSamples, fid_bootstrap, kid, prdc
from evaluation.features import ExtractorUnavailable, get_extractor
from evaluation.images import ImageSetError, LoadedImages, load_images

logger = logging.getLogger(__name__)

USER_ERRORS = (ImageSetError, ExtractorUnavailable, CacheError, ValueError)
"""What ``python -m evaluation.metrics`` reports as ``error: ...`` with exit status 2."""


@dataclass
class MetricsReport:
    """Everything computed for one real/fake comparison, with where each number came from.

    Metrics that could not be computed are None and explained in ``skipped`` (metric -> reason).
    """

    n_real: int
    n_fake: int
    extractor: str
    preprocessing: str
    fid: float | None = None
    fid_ci_low: float | None = None
    fid_ci_high: float | None = None
    fid_bootstrap: int = 0
    alpha: float = 0.05
    kid_mean: float | None = None
    kid_std: float | None = None
    kid_subset_size: int | None = None
    kid_subsets: int | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None
    k: int = 5
    seed: int = 0
    features_computed: int = 0
    features_cached: int = 0
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MetricSettings:
    """How the metrics are computed: by ``python -m evaluation.metrics``, the scorecard and the Evaluate tab.

    The first six are checked here; the scorecard's own settings are checked by the metric that uses them.

    Attributes:
        n_boot: Bootstrap replicates for the FID CI; 0 skips the CI.
        alpha: 1 - confidence level of the FID CI, in (0, 1).
        seed: Seed of every resampling (bootstrap, KID subsets, diversity pairs, classifiers).
        k: Nearest neighbours for PRDC.
        kid_subsets: Number of KID subsets.
        kid_subset_size: KID subset size, clamped to the smaller set with a warning.
        diversity_pairs: Image pairs per set for MS-SSIM diversity (scorecard).
        diversity_size: Side in pixels the MS-SSIM images are resized to (scorecard).
        utility_repeats: Repeats of the augmentation-utility classifiers (scorecard).
        memorisation_q: Quantile of the held-out distances used as the memorisation threshold (scorecard).
        batch_size: Images per feature-extractor call.
    """

    n_boot: int = 100
    alpha: float = 0.05
    seed: int = 0
    k: int = 5
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    diversity_pairs: int = 100
    diversity_size: int = 128
    utility_repeats: int = 10
    memorisation_q: float = 0.05
    batch_size: int = 16

    def __post_init__(self) -> None:
        limits = {"n_boot": (self.n_boot, 0), "k": (self.k, 1), "kid_subsets": (self.kid_subsets, 1),
                  "kid_subset_size": (self.kid_subset_size, 2)}
        for name, (value, least) in limits.items():
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: got {value!r}; allowed: an integer >= {least}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha: got {self.alpha!r}; allowed: 0 < alpha < 1")


def evaluate_features(report: MetricsReport, real: np.ndarray, fake: np.ndarray,
                      settings: MetricSettings = MetricSettings()) -> MetricsReport:
    """Fill ``report`` with every metric computable from the features; record the others in ``skipped``.

    Args:
        report: A report holding sizes and provenance; metric fields are filled in place.
        real: (n_real, d) features.
        fake: (n_fake, d) features.
        settings: Bootstrap, KID and PRDC settings.

    Returns:
        The same report.
    """
    report.seed, report.k, report.alpha = settings.seed, settings.k, settings.alpha
    dim = np.shape(real)[1] if np.ndim(real) == 2 else 0
    if 2 <= min(len(real), len(fake)) <= dim:
        report.warnings.append(
            f"FID from n_real={len(real)}, n_fake={len(fake)} samples of d={dim} features is dominated by "
            "small-sample bias; compare FID only at equal n and read it with KID and the CI")
    try:
        res = fid_bootstrap(real, fake, settings.n_boot, settings.seed, settings.alpha)
        report.fid, report.fid_ci_low, report.fid_ci_high, report.fid_bootstrap = (
            res.value, res.ci_low, res.ci_high, res.n_boot)
    except (TooFewSamples, np.linalg.LinAlgError) as exc:
        report.skipped["fid"] = str(exc)
    try:
        res = kid(real, fake, settings.kid_subsets, settings.kid_subset_size, seed=settings.seed)
        report.kid_mean, report.kid_std, report.kid_subset_size, report.kid_subsets = (
            res.mean, res.std, res.subset_size, res.subsets)
        if res.warning:
            report.warnings.append(res.warning)
    except TooFewSamples as exc:
        report.skipped["kid"] = str(exc)
    try:
        res = prdc(real, fake, settings.k)
        report.precision, report.recall, report.density, report.coverage = (
            res.precision, res.recall, res.density, res.coverage)
    except TooFewSamples as exc:
        report.skipped["prdc"] = str(exc)
    for metric, reason in report.skipped.items():
        logger.warning("%s not computed: %s", metric, reason)
    return report


def evaluate_sets(real, fake, extractor, cache=None, *, device=None,
                  settings: MetricSettings = MetricSettings()) -> MetricsReport:
    """Load two image sets, get their features (cache first) and compute all metrics that can be.

    Args:
        real: A directory, a list of image paths, or a ``LoadedImages`` of real images.
        fake: The same for generated images.
        extractor: A ``FeatureExtractor`` (see ``evaluation.features.get_extractor``).
        cache: A ``FeatureCache`` or None.
        device: Where to run the extractor; None keeps its device.
        settings: Bootstrap, KID and PRDC settings, and the images per network call (``batch_size``).

    Returns:
        The report; unreadable files are in ``problems``, conversions in ``notes``.

    Raises:
        ImageSetError: If a set is missing or holds no usable image.
    """
    sets = {}
    for name, source in (("real", real), ("fake", fake)):
        sets[name] = source if isinstance(source, LoadedImages) else load_images(source, name=name)
    report = MetricsReport(len(sets["real"]), len(sets["fake"]), extractor.name, extractor.preprocessing)
    feats = {}
    for name, loaded in sets.items():
        report.problems += [f"{name}: {problem}" for problem in loaded.problems]
        report.notes += [f"{name}: {note}" for note in loaded.notes]
        got = features_for(loaded, extractor, cache, batch_size=settings.batch_size, device=device)
        report.features_computed += got.computed
        report.features_cached += got.cached
        feats[name] = got.features
    return evaluate_features(report, feats["real"], feats["fake"], settings)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m evaluation.metrics``."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.metrics",
        description="Compare a folder of generated images with a folder of real images: FID with a "
        "bootstrap CI, KID, and precision/recall/density/coverage, on features of a chosen extractor.",
        epilog="Exit codes: 0 done (some metrics may be skipped, see 'skipped'), 2 usage or input error.",
    )
    parser.add_argument("--real", required=True, metavar="DIR", help="folder of real images (searched recursively)")
    parser.add_argument("--fake", required=True, metavar="DIR", help="folder of generated images (recursive)")
    parser.add_argument("--extractor", default="inception", choices=["inception", "efficientnet", "dinov2"],
                        help="feature extractor (default: inception, the TF-FID network; dinov2 needs "
                        "local weights in $POLYP_DINOV2_DIR)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--cache", metavar="DIR", help="feature cache folder (reused across runs)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per batch (default 16)")
    parser.add_argument("--bootstrap", type=int, default=100, metavar="N",
                        help="bootstrap replicates for the FID CI; 0 disables (default 100)")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - CI level (default 0.05: 95%% CI)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed for bootstrap and KID subsets")
    parser.add_argument("--k", type=int, default=5, metavar="K", help="neighbours for PRDC (default 5)")
    parser.add_argument("--kid-subsets", type=int, default=100, metavar="N", help="KID subsets (default 100)")
    parser.add_argument("--kid-subset-size", type=int, default=1000, metavar="N",
                        help="KID subset size, clamped to the smaller set with a warning (default 1000)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def format_report(report: MetricsReport) -> str:
    """A readable multi-line table of a report."""
    def num(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}f}"

    ci = f" [{num(report.fid_ci_low, 2)}, {num(report.fid_ci_high, 2)}]" if report.fid_ci_low is not None else ""
    rows = [
        ("extractor", report.extractor), ("preprocessing", report.preprocessing),
        ("n_real / n_fake", f"{report.n_real} / {report.n_fake}"),
        ("features", f"{report.features_computed} computed, {report.features_cached} from cache"),
        ("FID", f"{num(report.fid, 2)}{ci}" + (f" ({1 - report.alpha:.0%} bootstrap CI, "
                                               f"{report.fid_bootstrap} replicates)" if ci else "")),
        ("KID", f"{num(report.kid_mean, 5)} ± {num(report.kid_std, 5)} (subset size {report.kid_subset_size}, "
                f"{report.kid_subsets} subsets)"),
        (f"PRDC (k={report.k})", f"precision {num(report.precision)}  recall {num(report.recall)}  "
                                 f"density {num(report.density)}  coverage {num(report.coverage)}"),
    ]
    lines = [f"{label:<16} {value}" for label, value in rows]
    for title, items in (("skipped", [f"{m}: {r}" for m, r in report.skipped.items()]),
                         ("warnings", report.warnings), ("problems", report.problems), ("notes", report.notes)):
        lines += [f"{title}:"] + [f"  - {item}" for item in items] if items else []
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for user errors, with a one-line message on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: _compare(args), USER_ERRORS)


def _compare(args: argparse.Namespace) -> int:
    """The command's work: check the flags, load both sets, compute, print the report."""
    if args.batch_size < 1:
        raise ValueError(f"--batch-size: got {args.batch_size}; allowed: an integer >= 1")
    if args.device not in DEVICES:  # named like the other flags' errors, before resolve_device's own message
        raise ValueError(f"device: {args.device!r} is not a device; allowed: {', '.join(DEVICES)}")
    device = resolve_device(args.device)
    settings = MetricSettings(n_boot=args.bootstrap, alpha=args.alpha, seed=args.seed, k=args.k,
                              kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                              batch_size=args.batch_size)
    cache = FeatureCache(Path(args.cache)) if args.cache else None
    real, fake = load_images(Path(args.real), name="--real"), load_images(Path(args.fake), name="--fake")
    extractor = get_extractor(args.extractor, device=device)
    report = evaluate_sets(real, fake, extractor, cache, settings=settings)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
