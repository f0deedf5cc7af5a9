"""Diversity within one image set: mean MS-SSIM over seeded random pairs of distinct images.

Lower mean MS-SSIM means a more diverse set; a generator that collapses onto a few images scores
close to 1. The synthetic set is only meaningful next to the real set of the same pathology,
computed the same way, which is what :func:`diversity_report` returns.

Preprocessing, identical for both sets: each uint8 HxWx3 image is centre-cropped to a square (as
the trainer does: the round endoscopic field sits in the middle), resized to ``size`` x ``size``
with Lanczos, and scaled to float in [0, 1]. MS-SSIM then uses torchmetrics'
``multiscale_structural_similarity_index_measure`` with ``data_range=1.0`` and its default 11 px
Gaussian window (sigma 1.5) and ``normalize="relu"``.

Scales: torchmetrics' five default scales need images of at least 176 px. For smaller sizes we keep
the first ``k`` of the five standard weights (Wang et al. 2003) for the largest ``k`` that fits and
rescale them to sum to 1, so that a value stays on the same 0-1 scale as the five-scale measure
(unnormalised truncated weights, e.g. ``(0.0448, 0.2856, 0.3001)``, sum to 0.63 and pull every value
towards 1). The weights used are reported with the result; values computed at different sizes or
weights are not comparable.

Confidence interval: pairs share images, so pair values are not independent and a standard error
over pairs would be too narrow. We bootstrap images instead: each replicate draws images with
replacement and re-weights every computed pair (i, j) by the product of the draw counts of i and j
(a bootstrap of the pairwise U-statistic), then takes the percentile interval.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

logger = logging.getLogger(__name__)

STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""The five MS-SSIM scale weights of Wang, Simoncelli and Bovik (2003), torchmetrics' default."""
KERNEL_SIZE = 11
"""torchmetrics' Gaussian window for sigma 1.5: ``int(3.5 * 1.5 + 0.5) * 2 + 1``."""
MIN_IMAGES = 2
DEFAULT_SIZE = 128
DEFAULT_PAIRS = 200
_BATCH_PAIRS = 32


class TooFewImages(ValueError):
    """An image set has fewer images than the measure needs."""


class InvalidImage(ValueError):
    """An image is not an HxWx3 uint8 array, or a setting (size, pairs, betas) is out of range."""


def scales_for_size(size: int) -> int:
    """The largest number of MS-SSIM scales (1-5) that torchmetrics accepts for ``size`` px images.

    torchmetrics requires ``size // max(1, k - 1) ** 2 > KERNEL_SIZE - 1`` and ``size >= 2 ** k``, and
    the reflect padding at the coarsest scale needs ``size // 2 ** (k - 1) > KERNEL_SIZE // 2``. This
    gives minimum sizes of 11, 12, 44, 99 and 176 px for 1 to 5 scales.

    Raises:
        InvalidImage: If ``size`` is too small for even one scale.
    """
    for k in range(len(STANDARD_BETAS), 0, -1):
        fits = (
            size // max(1, k - 1) ** 2 > KERNEL_SIZE - 1
            and size >= 2**k
            and size // 2 ** (k - 1) > KERNEL_SIZE // 2
        )
        if fits:
            return k
    raise InvalidImage(f"size={size} is too small for MS-SSIM; use size >= 11 (>= 176 for all five scales)")


def betas_for_size(size: int) -> tuple[float, ...]:
    """The first ``scales_for_size(size)`` standard weights, rescaled to sum to 1."""
    k = scales_for_size(size)
    kept = STANDARD_BETAS[:k]
    return tuple(float(b / sum(kept)) for b in kept)


def preprocess(images: Sequence[np.ndarray], size: int, *, name: str = "images") -> torch.Tensor:
    """Centre-crop each image to a square, resize to ``size`` with Lanczos, scale to [0, 1].

    Args:
        images: HxWx3 uint8 arrays; sizes may differ.
        size: Side of the output squares in pixels.
        name: Argument name used in error messages.

    Returns:
        A float32 tensor of shape (N, 3, size, size) with values in [0, 1].

    Raises:
        InvalidImage: If an image is not an HxWx3 uint8 array.
    """
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidImage(
                f"{name}[{i}] has shape {image.shape} and dtype {image.dtype}; expected HxWx3 uint8 RGB"
            )
        height, width = image.shape[:2]
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = Image.fromarray(image[top:top + side, left:left + side])
        out[i] = np.asarray(square.resize((size, size), Image.Resampling.LANCZOS))
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def sample_pairs(n: int, n_pairs: int, seed: int) -> np.ndarray:
    """Seeded distinct unordered pairs ``(i, j)``, ``i < j``, of ``n`` items, without repetition.

    When ``n_pairs`` is at least the number of possible pairs, every pair is returned (in order).

    Returns:
        An int64 array of shape (min(n_pairs, n * (n - 1) / 2), 2).
    """
    total = n * (n - 1) // 2
    if n_pairs >= total:
        return np.stack(np.triu_indices(n, k=1), axis=1).astype(np.int64)
    flat = np.sort(np.random.default_rng(seed).choice(total, size=n_pairs, replace=False))
    # Invert the row-major numbering of the strict upper triangle (row i starts at i*n - i*(i+1)/2).
    i = (n - 2 - np.floor(np.sqrt(4.0 * n * (n - 1) - 8.0 * flat - 7) / 2.0 - 0.5)).astype(np.int64)
    j = flat + i + 1 - total + (n - i) * (n - i - 1) // 2
    return np.stack([i, j], axis=1)


def pair_scores(images: torch.Tensor, pairs: np.ndarray, betas: tuple[float, ...]) -> np.ndarray:
    """MS-SSIM of each pair of rows of ``images`` (N, 3, H, W) in [0, 1]; returns shape (len(pairs),)."""
    scores = []
    for start in range(0, len(pairs), _BATCH_PAIRS):
        chunk = torch.from_numpy(pairs[start:start + _BATCH_PAIRS])
        scores.append(multiscale_structural_similarity_index_measure(
            images[chunk[:, 0]], images[chunk[:, 1]], data_range=1.0, betas=betas, reduction="none",
        ))
    return torch.cat(scores).double().numpy()


def bootstrap_ci(
    pairs: np.ndarray, scores: np.ndarray, n_images: int, *, n_boot: int, confidence: float, seed: int,
) -> tuple[float, float]:
    """Percentile interval of the mean pair score, resampling images (see the module docstring)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_boot).astype(float)
    weights = counts[:, pairs[:, 0]] * counts[:, pairs[:, 1]]
    totals = weights.sum(axis=1)
    usable = totals > 0  # a replicate that drew too few distinct images has no pair to average
    means = (weights[usable] @ scores) / totals[usable]
    if means.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def ms_ssim_diversity(
    images: Sequence[np.ndarray],
    *,
    size: int = DEFAULT_SIZE,
    n_pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    betas: tuple[float, ...] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    name: str = "images",
) -> dict:
    """Mean MS-SSIM over seeded random pairs of distinct images of one set (lower = more diverse).

    Args:
        images: HxWx3 uint8 RGB arrays of one pathology; sizes may differ.
        size: Common side in pixels that every image is cropped and resized to.
        n_pairs: Number of distinct pairs to score; all pairs when there are fewer.
        seed: Seed for the pair sample and the bootstrap.
        betas: Scale weights; default: :func:`betas_for_size` ``(size)``.
        n_boot: Bootstrap replicates for the interval.
        confidence: Coverage of the interval, in (0, 1).
        name: Argument name used in error messages.

    Returns:
        A dict with ``value`` (mean MS-SSIM), ``ci`` ``(low, high)``, ``ci_method``, ``n_images``,
        ``n_pairs`` (pairs actually scored), ``size``, ``betas``, ``preprocessing``, ``seed``, and
        ``scores`` (per-pair values, shape (n_pairs,)) with ``pairs`` (shape (n_pairs, 2)).

    Raises:
        TooFewImages: If fewer than two images are given.
        InvalidImage: If an image or a setting is invalid.
    """
    if len(images) < MIN_IMAGES:
        raise TooFewImages(f"{name} holds {len(images)} image(s); MS-SSIM diversity needs at least {MIN_IMAGES}")
    betas = _check_settings(size, n_pairs, betas, n_boot, confidence)
    tensor = preprocess(images, size, name=name)
    smallest = min(min(np.asarray(im).shape[:2]) for im in images)
    if smallest < size:
        logger.warning("%s: smallest image side is %d px, upsampled to %d px", name, smallest, size)
    pairs = sample_pairs(len(images), n_pairs, seed)
    scores = pair_scores(tensor, pairs, betas)
    ci = bootstrap_ci(pairs, scores, len(images), n_boot=n_boot, confidence=confidence, seed=seed)
    return {
        "value": float(scores.mean()), "ci": ci, "confidence": confidence,
        "ci_method": f"percentile bootstrap over images ({n_boot} replicates)",
        "n_images": len(images), "n_pairs": len(pairs), "size": size, "betas": betas, "seed": seed,
        "preprocessing": f"centre-crop square, Lanczos resize to {size}x{size}, [0, 1], data_range=1.0",
        "scores": scores, "pairs": pairs,
    }


def _check_settings(
    size: int, n_pairs: int, betas: tuple[float, ...] | None, n_boot: int, confidence: float,
) -> tuple[float, ...]:
    """Validate the settings and return the betas to use."""
    if n_pairs < 1:
        raise InvalidImage(f"n_pairs={n_pairs}; expected at least 1")
    if n_boot < 1:
        raise InvalidImage(f"n_boot={n_boot}; expected at least 1")
    if not 0.0 < confidence < 1.0:
        raise InvalidImage(f"confidence={confidence}; expected a value in (0, 1)")
    if betas is None:
        return betas_for_size(size)
    betas = tuple(float(b) for b in betas)
    if not betas or len(betas) > scales_for_size(size) or any(b <= 0 for b in betas):
        raise InvalidImage(
            f"betas={betas}; at size={size} expected 1 to {scales_for_size(size)} positive weights"
        )
    return betas


def diversity_report(
    fake_images: Sequence[np.ndarray],
    real_images: Sequence[np.ndarray],
    *,
    size: int = DEFAULT_SIZE,
    n_pairs: int = DEFAULT_PAIRS,
    seed: int = 0,
    betas: tuple[float, ...] | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
) -> dict:
    """MS-SSIM diversity of synthetic and real images of one pathology, computed the same way.

    Args:
        fake_images: Synthetic HxWx3 uint8 images of one pathology.
        real_images: Real HxWx3 uint8 images of the same pathology.
        size, n_pairs, seed, betas, n_boot, confidence: As in :func:`ms_ssim_diversity`; shared by
            both sets so that the two values are comparable.

    Returns:
        A dict with ``fake`` and ``real`` (each ``{"value", "ci", "n_images", "n_pairs"}``),
        ``difference`` (fake value - real value; positive means the synthetic set is less diverse),
        ``confidence``, ``ci_method``, ``size``, ``betas``, ``seed``, ``preprocessing`` and ``metric``.

    Raises:
        TooFewImages: If either set has fewer than two images.
        InvalidImage: If an image or a setting is invalid.
    """
    settings = dict(size=size, n_pairs=n_pairs, seed=seed, betas=betas, n_boot=n_boot, confidence=confidence)
    fake = ms_ssim_diversity(fake_images, name="fake_images", **settings)
    real = ms_ssim_diversity(real_images, name="real_images", **settings)
    keys = ("value", "ci", "n_images", "n_pairs")
    logger.info("MS-SSIM diversity at %d px: fake %.4f (n=%d), real %.4f (n=%d)",
                size, fake["value"], fake["n_images"], real["value"], real["n_images"])
    return {
        "metric": "ms_ssim_diversity",
        "fake": {k: fake[k] for k in keys},
        "real": {k: real[k] for k in keys},
        "difference": fake["value"] - real["value"],
        "confidence": confidence, "ci_method": fake["ci_method"], "size": size, "betas": fake["betas"],
        "seed": seed, "preprocessing": fake["preprocessing"],
    }
