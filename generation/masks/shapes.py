"""New polyp masks to generate from: real masks reshaped at random, or smooth procedural blobs.

Pure, seeded functions on square frames of ``size`` pixels (the compact model's framing: the
centre square of the frame, see ``generation.datasets``). Every mask comes with a short
provenance text saying how it was made, enough to make it again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

FIELD_RADIUS = 0.25
"""Mask centres are drawn within this share of the side around the frame centre: polyps lie in
the endoscopic field, not in the black corners."""
MAX_EXTENT = 0.9
"""A mask spans at most this share of the side, so reshaping never pushes it out of the frame."""


@dataclass(frozen=True)
class SampledMask:
    """A mask made for generation.

    Attributes:
        mask: Boolean (size, size) array, never empty.
        source: ``"augmented"`` or ``"procedural"``.
        provenance: How it was made, e.g. ``"augmented from 3fa1c0d2e9b7 (seed 0, item 3): rot 12°, ..."``.
    """

    mask: np.ndarray
    source: str
    provenance: str


def square_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """The centre square of ``mask`` resized to ``size`` (area average, then at least half covered).

    The same framing as the training images (centre crop, then resize), so an image and its mask
    stay aligned.
    """
    height, width = mask.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = Image.fromarray(np.asarray(mask, bool)[top:top + side, left:left + side].astype(np.uint8) * 255, "L")
    return np.asarray(image.resize((size, size), Image.Resampling.BOX)) >= 128


def augment_mask(mask: np.ndarray, rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """Reshape a real mask at random into a ``size`` x ``size`` frame.

    The polyp is rotated, scaled (0.8-1.25 of its size in the frame's framing), maybe flipped,
    mildly warped by a smooth displacement field and moved to a random place in the field,
    all in one resampling. Its extent is capped so it stays whole inside the frame.

    Args:
        mask: A boolean mask of any size, with at least one polyp pixel.
        rng: The random generator (consumed).
        size: Side of the output frame in pixels (at least 8).

    Returns:
        ``(mask, description)``; the mask is never empty.

    Raises:
        ValueError: If ``mask`` is empty or ``size`` is below 8.
    """
    _check_size(size)
    rows, cols = np.nonzero(mask)
    if not len(rows):
        raise ValueError("mask is empty; augment_mask needs at least one polyp pixel")
    angle = rng.uniform(-180.0, 180.0)
    scale = rng.uniform(0.8, 1.25)
    flip = bool(rng.random() < 0.5)
    warp = rng.uniform(0.0, 0.04) * size
    box_h, box_w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    theta = math.radians(angle)
    # 1. Scale: the frame's own framing (min side -> size) times the random factor, capped to fit.
    s = size / min(mask.shape) * scale
    extent = (abs(box_h * math.cos(theta)) + abs(box_w * math.sin(theta)),
              abs(box_h * math.sin(theta)) + abs(box_w * math.cos(theta)))
    s = min(s, MAX_EXTENT * size / max(extent))
    half = (s * extent[0] / 2, s * extent[1] / 2)
    # 2. Place: a centre in the field, moved inwards until the whole polyp fits.
    centre = _centre_in_field(rng, size, (half[0] + warp + 1, half[1] + warp + 1))
    # 3. One resampling: output pixel -> warped -> un-rotated, un-flipped, un-scaled source pixel.
    source_centre = np.array([(rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2])
    grid = np.mgrid[0:size, 0:size].astype(np.float64)
    grid += _displacement(rng, size, warp)
    offset = grid - np.array(centre)[:, None, None]
    cos, sin = math.cos(theta), math.sin(theta)
    r, c = (cos * offset[0] + sin * offset[1]) / s, (-sin * offset[0] + cos * offset[1]) / s
    if flip:
        c = -c
    coords = np.stack([r + source_centre[0], c + source_centre[1]])
    out = ndimage.map_coordinates(np.asarray(mask, np.float32), coords, order=1, mode="constant") >= 0.5
    out = _never_empty(out, centre)
    text = (f"rot {angle:.0f}°, scale {scale:.2f}, flip {'h' if flip else 'none'}, warp {warp:.1f} px, "
            f"centre ({centre[1]:.0f}, {centre[0]:.0f})")
    return out, text


def procedural_mask(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A smooth random blob: a polar radius from four random Fourier terms, squashed and turned.

    Args:
        rng: The random generator (consumed).
        size: Side of the frame in pixels (at least 8).

    Returns:
        ``(mask, description)``; the mask is never empty and lies whole inside the frame.

    Raises:
        ValueError: If ``size`` is below 8.
    """
    _check_size(size)
    radius = rng.uniform(0.08, 0.22) * size
    amplitudes = rng.uniform(0.0, 0.25, 4) / np.arange(2, 6)
    phases = rng.uniform(0.0, 2 * math.pi, 4)
    aspect, turn = rng.uniform(0.7, 1.0), rng.uniform(0.0, math.pi)
    reach = radius * (1 + amplitudes.sum()) + 1
    centre = _centre_in_field(rng, size, (reach, reach))
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = rows - centre[0], cols - centre[1]
    u = math.cos(turn) * dx + math.sin(turn) * dy
    v = (-math.sin(turn) * dx + math.cos(turn) * dy) / aspect
    angle = np.arctan2(v, u)
    boundary = radius * (1 + sum(a * np.cos(k * angle + p) for k, a, p in zip(range(2, 6), amplitudes, phases)))
    out = _never_empty(np.hypot(u, v) <= boundary, centre)
    text = (f"radius {radius:.1f} px, aspect {aspect:.2f}, lobes {'/'.join(f'{a:.2f}' for a in amplitudes)}, "
            f"centre ({centre[1]:.0f}, {centre[0]:.0f})")
    return out, text


def sample_masks(
    real_masks: Sequence[tuple[str, np.ndarray]], n: int, seed: int, size: int, procedural_share: float = 0.0,
) -> list[SampledMask]:
    """``n`` masks for generation: each procedural with probability ``procedural_share``, else a real one reshaped.

    Mask ``i`` depends only on (``seed``, ``i``, the real masks), so the first masks of a longer
    run are those of a shorter one. Real masks are ordered by their sha256 first, so the order they
    are given in does not matter.

    Args:
        real_masks: ``(image sha256, boolean mask)`` pairs to reshape; may be empty when
            ``procedural_share`` is 1.
        n: How many masks, at least 1.
        seed: Non-negative seed.
        size: Side of the frames in pixels (at least 8).
        procedural_share: Share of procedural masks, from 0 (all reshaped) to 1 (all procedural).

    Returns:
        The masks with their source and provenance.

    Raises:
        ValueError: For an argument out of range, or no real mask when some are needed.
    """
    _check_size(size)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a whole number of at least 1, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative whole number, got {seed!r}")
    if not 0.0 <= procedural_share <= 1.0:
        raise ValueError(f"procedural_share must be between 0 and 1, got {procedural_share!r}")
    real = sorted(real_masks, key=lambda item: item[0])
    if procedural_share < 1.0 and not real:
        raise ValueError("real_masks is empty: register image and mask pairs (review.register --masks), "
                         "give a mask folder, or use procedural masks only (procedural_share=1)")
    sampled = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), i]))
        where = f"(seed {seed}, item {i})"
        if rng.random() < procedural_share:
            mask, text = procedural_mask(rng, size)
            sampled.append(SampledMask(mask, "procedural", f"procedural {where}: {text}"))
        else:
            sha, source = real[int(rng.integers(len(real)))]
            mask, text = augment_mask(source, rng, size)
            sampled.append(SampledMask(mask, "augmented", f"augmented from {sha[:12]} {where}: {text}"))
    return sampled


def _check_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be a whole number of pixels, at least 8, got {size!r}")


def _centre_in_field(rng: np.random.Generator, size: int, half: tuple[float, float]) -> tuple[float, float]:
    """A (row, col) centre uniform in the central disc, moved inwards so ``half`` extents fit."""
    distance = FIELD_RADIUS * size * math.sqrt(rng.random())
    direction = rng.uniform(0.0, 2 * math.pi)
    middle = (size - 1) / 2
    centre = [middle + distance * math.sin(direction), middle + distance * math.cos(direction)]
    for axis in (0, 1):
        low, high = half[axis], size - 1 - half[axis]
        centre[axis] = middle if low > high else min(max(centre[axis], low), high)
    return centre[0], centre[1]


def _displacement(rng: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """A smooth random (2, size, size) displacement field whose largest shift is about ``amplitude`` px."""
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 8, mode="wrap") for _ in range(2)])
    peak = np.abs(field).max()
    return field * (amplitude / peak) if peak > 0 else field


def _never_empty(mask: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    if not mask.any():  # a sliver thinner than a pixel: keep its centre
        mask[int(round(centre[0])), int(round(centre[1]))] = True
    return mask
