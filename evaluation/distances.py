"""Distances between two sets of image features: FID (with a bootstrap CI), KID and PRDC.

Pure functions on (N, d) feature arrays that return numbers; nothing here loads images or runs a
network (``evaluation.metrics`` does, and builds the report and the command line around these).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.spatial.distance import cdist

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

