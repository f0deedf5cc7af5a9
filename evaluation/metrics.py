"""Automatic image-set metrics on feature arrays (FID with CI, KID, PRDC), a report builder and a CLI.

Metric functions are pure: they take (N, d) feature arrays and return numbers. ``evaluate_sets``
loads two image sets, gets features (cache first) and computes every metric it can, listing the
ones it could not and why. Run ``python -m evaluation.metrics --help`` for the command line.
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
import scipy.linalg
from scipy.spatial.distance import cdist

from evaluation.cache import CacheError, FeatureCache, features_for
from evaluation.features import ExtractorUnavailable, get_extractor, resolve_device
from evaluation.images import ImageSetError, LoadedImages, load_images

logger = logging.getLogger(__name__)


class TooFewSamples(ValueError):
    """A metric needs more samples than a set holds."""

    def __init__(self, metric: str, argument: str, got: int, needed: int, why: str = "") -> None:
        self.metric, self.argument, self.got, self.needed = metric, argument, got, needed
        super().__init__(f"{metric}: {argument} has {got} sample(s); allowed: at least {needed}{why}")


def _features(name: str, feats: np.ndarray, metric: str, min_n: int, why: str = "") -> np.ndarray:
    """Validate an (N, d) finite feature array as float64, raising TooFewSamples below ``min_n``."""
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{metric}: {name} has shape {arr.shape}; allowed: a 2-d (N, d) array")
    if not np.isfinite(arr).all():
        raise ValueError(f"{metric}: {name} contains NaN or infinite values; allowed: finite features")
    if arr.shape[0] < min_n:
        raise TooFewSamples(metric, name, arr.shape[0], min_n, why)
    return arr


def _same_dim(metric: str, real: np.ndarray, fake: np.ndarray) -> None:
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"{metric}: real has d={real.shape[1]} but fake has d={fake.shape[1]}; allowed: equal d")


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as in the reference FID code.

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), with ``scipy.linalg.sqrtm``;
    if the square root is not finite, ``eps`` is added to both diagonals and it is retried.

    Args:
        mu1: Mean (d,) of the first set.
        sigma1: Covariance (d, d) of the first set.
        mu2: Mean (d,) of the second set.
        sigma2: Covariance (d, d) of the second set.
        eps: Diagonal offset used only when the plain square root fails.

    Returns:
        The squared Fréchet distance.

    Raises:
        ValueError: On shape mismatch, or if the square root has a significant imaginary part.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
                         f"sigma2 {sigma2.shape}; allowed: (d,), (d, d), (d,), (d, d)")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        logger.warning("frechet_distance: singular product of covariances; adding %g to the diagonals", eps)
        offset = np.eye(d) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if largest > 1e-3:
            raise ValueError(f"frechet_distance: sqrtm has an imaginary component of {largest:.3g}; allowed: <= 1e-3")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _cov_factor(feats: np.ndarray) -> np.ndarray:
    """A (d, r) matrix L with L @ L.T equal to the sample covariance, r = min(n, d)."""
    n, d = feats.shape
    centred = feats - feats.mean(axis=0)
    if n - 1 <= d:
        return centred.T / np.sqrt(n - 1)
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / (n - 1))
    return eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets (unbiased covariances).

    Equal to ``frechet_distance`` on the sets' means and covariances, computed without a d x d
    ``sqrtm``: Tr sqrt(S1 S2) is the nuclear norm of L1.T @ L2 for any factors S = L L.T, which for
    the usual n < d is a small n x n problem (milliseconds instead of ~30 s at d=2048).

    Args:
        real: (n_real, d) features, n_real >= 2.
        fake: (n_fake, d) features, n_fake >= 2.

    Returns:
        The FID value.

    Raises:
        TooFewSamples: If either set has fewer than 2 samples.
    """
    real = _features("real", real, "FID", 2, " (a covariance needs 2)")
    fake = _features("fake", fake, "FID", 2, " (a covariance needs 2)")
    _same_dim("FID", real, fake)
    l_real, l_fake = _cov_factor(real), _cov_factor(fake)
    diff = real.mean(axis=0) - fake.mean(axis=0)
    trace_sqrt = np.linalg.svd(l_real.T @ l_fake, compute_uv=False).sum()
    return float(diff @ diff + np.sum(l_real**2) + np.sum(l_fake**2) - 2.0 * trace_sqrt)


@dataclass(frozen=True)
class FidResult:
    """FID on the full sets with a percentile bootstrap confidence interval."""

    value: float
    ci_low: float | None
    ci_high: float | None
    n_boot: int
    alpha: float


def fid_bootstrap(real: np.ndarray, fake: np.ndarray, n_boot: int = 100, seed: int = 0,
                  alpha: float = 0.05) -> FidResult:
    """FID with a percentile bootstrap CI (both sets resampled with replacement, independently).

    The CI shows sampling variability only; FID's small-sample bias is not corrected.

    Args:
        real: (n_real, d) features.
        fake: (n_fake, d) features.
        n_boot: Bootstrap replicates; 0 skips the CI.
        seed: Seed of the resampling generator.
        alpha: 1 - confidence level, in (0, 1).

    Returns:
        The full-set FID and the (alpha/2, 1 - alpha/2) percentiles of the replicates.

    Raises:
        TooFewSamples: If either set has fewer than 2 samples.
        ValueError: If ``n_boot`` < 0 or ``alpha`` is outside (0, 1).
    """
    if n_boot < 0 or not 0 < alpha < 1:
        raise ValueError(f"fid_bootstrap: n_boot={n_boot}, alpha={alpha}; allowed: n_boot >= 0, 0 < alpha < 1")
    value = fid(real, fake)
    if n_boot == 0:
        return FidResult(value, None, None, 0, alpha)
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    rng = np.random.default_rng(seed)
    boots = [fid(real[rng.integers(0, len(real), len(real))], fake[rng.integers(0, len(fake), len(fake))])
             for _ in range(n_boot)]
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    return FidResult(value, float(low), float(high), n_boot, alpha)


@dataclass(frozen=True)
class KidResult:
    """KID over random subsets: mean, population std, the subset size used, and any warning."""

    mean: float
    std: float
    subset_size: int
    subsets: int
    warning: str | None


def _poly_mmd(x: np.ndarray, y: np.ndarray, degree: int, gamma: float | None, coef: float) -> float:
    """Unbiased MMD^2 with k(a, b) = (gamma a.b + coef)^degree (torchmetrics' poly_mmd)."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx, k_yy, k_xy = ((a @ b.T * gamma + coef) ** degree for a, b in ((x, x), (y, y), (x, y)))
    m = x.shape[0]
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / m**2)


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> KidResult:
    """Kernel Inception Distance, the same math as torchmetrics' KernelInceptionDistance.

    Each subset draws ``subset_size`` samples without replacement from each set. If a set is
    smaller than ``subset_size``, it is clamped to min(n_real, n_fake) and a warning is returned
    and logged (with subset_size equal to both set sizes every subset is the full set, std 0).

    Args:
        real: (n_real, d) features, n_real >= 2.
        fake: (n_fake, d) features, n_fake >= 2.
        subsets: Number of random subsets.
        subset_size: Samples per subset before clamping.
        degree: Polynomial kernel degree.
        gamma: Kernel scale; None means 1/d.
        coef: Kernel constant.
        seed: Seed of the subset generator.

    Returns:
        Mean and population std over subsets, the subset size used and the clamp warning if any.

    Raises:
        TooFewSamples: If either set has fewer than 2 samples.
        ValueError: If ``subsets`` or ``subset_size`` < 1.
    """
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"kid: subsets={subsets}, subset_size={subset_size}; allowed: subsets >= 1, subset_size >= 2")
    real = _features("real", real, "KID", 2, " (unbiased MMD needs 2)")
    fake = _features("fake", fake, "KID", 2, " (unbiased MMD needs 2)")
    _same_dim("KID", real, fake)
    size, warning = subset_size, None
    if min(len(real), len(fake)) < subset_size:
        size = min(len(real), len(fake))
        warning = (f"KID subset_size clamped from {subset_size} to {size} (n_real={len(real)}, "
                   f"n_fake={len(fake)}); values from different subset sizes are not comparable")
        logger.warning(warning)
    rng = np.random.default_rng(seed)
    scores = [_poly_mmd(real[rng.permutation(len(real))[:size]], fake[rng.permutation(len(fake))[:size]],
                        degree, gamma, coef) for _ in range(subsets)]
    return KidResult(float(np.mean(scores)), float(np.std(scores)), size, subsets, warning)


@dataclass(frozen=True)
class PrdcResult:
    """Precision, recall, density and coverage (Naeem et al. 2020) with the k used."""

    precision: float
    recall: float
    density: float
    coverage: float
    k: int


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> PrdcResult:
    """Precision/recall/density/coverage of Naeem et al. 2020 ("Reliable fidelity and diversity metrics").

    Each sample's k-NN radius is the Euclidean distance to its k-th nearest neighbour in its own set
    (itself excluded). Precision: share of fake samples inside some real sample's ball; recall: share
    of real samples inside some fake sample's ball; density: mean number of real balls holding a fake
    sample, divided by k (can exceed 1); coverage: share of real balls holding at least one fake sample.
    The authors recommend k=5 with 10k samples; with small sets, larger k inflates the balls.

    Args:
        real: (n_real, d) features, n_real > k.
        fake: (n_fake, d) features, n_fake > k.
        k: Nearest-neighbour count, >= 1.

    Returns:
        The four values and k.

    Raises:
        TooFewSamples: If either set has k samples or fewer.
    """
    if k < 1:
        raise ValueError(f"prdc: k={k}; allowed: an integer >= 1")
    why = f" (k={k} neighbours besides itself)"
    real = _features("real", real, "PRDC", k + 1, why)
    fake = _features("fake", fake, "PRDC", k + 1, why)
    _same_dim("PRDC", real, fake)
    # Index k of the sorted row: index 0 is the sample itself at distance 0.
    real_radii = np.partition(cdist(real, real), k, axis=1)[:, k]
    fake_radii = np.partition(cdist(fake, fake), k, axis=1)[:, k]
    real_fake = cdist(real, fake)
    inside_real = real_fake < real_radii[:, None]
    return PrdcResult(
        precision=float(inside_real.any(axis=0).mean()),
        recall=float((real_fake < fake_radii[None, :]).any(axis=1).mean()),
        density=float(inside_real.sum(axis=0).mean() / k),
        coverage=float((real_fake.min(axis=1) < real_radii).mean()),
        k=k,
    )


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
class MetricOptions:
    """Settings shared by ``evaluate_features`` and ``evaluate_sets``."""

    n_boot: int = 100
    alpha: float = 0.05
    seed: int = 0
    k: int = 5
    kid_subsets: int = 100
    kid_subset_size: int = 1000

    def __post_init__(self) -> None:
        limits = {"n_boot": (self.n_boot, 0), "k": (self.k, 1), "kid_subsets": (self.kid_subsets, 1),
                  "kid_subset_size": (self.kid_subset_size, 2)}
        for name, (value, least) in limits.items():
            if not isinstance(value, int) or value < least:
                raise ValueError(f"{name}: got {value!r}; allowed: an integer >= {least}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha: got {self.alpha!r}; allowed: 0 < alpha < 1")


def evaluate_features(report: MetricsReport, real: np.ndarray, fake: np.ndarray,
                      options: MetricOptions = MetricOptions()) -> MetricsReport:
    """Fill ``report`` with every metric computable from the features; record the others in ``skipped``.

    Args:
        report: A report holding sizes and provenance; metric fields are filled in place.
        real: (n_real, d) features.
        fake: (n_fake, d) features.
        options: Bootstrap, KID and PRDC settings.

    Returns:
        The same report.
    """
    report.seed, report.k, report.alpha = options.seed, options.k, options.alpha
    dim = np.shape(real)[1] if np.ndim(real) == 2 else 0
    if 2 <= min(len(real), len(fake)) <= dim:
        report.warnings.append(
            f"FID from n_real={len(real)}, n_fake={len(fake)} samples of d={dim} features is dominated by "
            "small-sample bias; compare FID only at equal n and read it with KID and the CI")
    try:
        res = fid_bootstrap(real, fake, options.n_boot, options.seed, options.alpha)
        report.fid, report.fid_ci_low, report.fid_ci_high, report.fid_bootstrap = (
            res.value, res.ci_low, res.ci_high, res.n_boot)
    except (TooFewSamples, np.linalg.LinAlgError) as exc:
        report.skipped["fid"] = str(exc)
    try:
        res = kid(real, fake, options.kid_subsets, options.kid_subset_size, seed=options.seed)
        report.kid_mean, report.kid_std, report.kid_subset_size, report.kid_subsets = (
            res.mean, res.std, res.subset_size, res.subsets)
        if res.warning:
            report.warnings.append(res.warning)
    except TooFewSamples as exc:
        report.skipped["kid"] = str(exc)
    try:
        res = prdc(real, fake, options.k)
        report.precision, report.recall, report.density, report.coverage = (
            res.precision, res.recall, res.density, res.coverage)
    except TooFewSamples as exc:
        report.skipped["prdc"] = str(exc)
    for metric, reason in report.skipped.items():
        logger.warning("%s not computed: %s", metric, reason)
    return report


def evaluate_sets(real, fake, extractor, cache=None, *, batch_size: int = 16, device=None,
                  options: MetricOptions = MetricOptions()) -> MetricsReport:
    """Load two image sets, get their features (cache first) and compute all metrics that can be.

    Args:
        real: A directory, a list of image paths, or a ``LoadedImages`` of real images.
        fake: The same for generated images.
        extractor: A ``FeatureExtractor`` (see ``evaluation.features.get_extractor``).
        cache: A ``FeatureCache`` or None.
        batch_size: Images per network call.
        device: Where to run the extractor; None keeps its device.
        options: Bootstrap, KID and PRDC settings.

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
        got = features_for(loaded, extractor, cache, batch_size=batch_size, device=device)
        report.features_computed += got.computed
        report.features_cached += got.cached
        feats[name] = got.features
    return evaluate_features(report, feats["real"], feats["fake"], options)


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
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
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
    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size: got {args.batch_size}; allowed: an integer >= 1")
        device = resolve_device(args.device)
        options = MetricOptions(args.bootstrap, args.alpha, args.seed, args.k, args.kid_subsets, args.kid_subset_size)
        cache = FeatureCache(Path(args.cache)) if args.cache else None
        real, fake = load_images(Path(args.real), name="--real"), load_images(Path(args.fake), name="--fake")
        extractor = get_extractor(args.extractor, device=device)
        report = evaluate_sets(real, fake, extractor, cache,
                               batch_size=args.batch_size, options=options)
    except (ImageSetError, ExtractorUnavailable, CacheError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
