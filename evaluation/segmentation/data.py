"""The pairs a segmentation run is given: validated image/mask pairs at the working size, read from folders,
and the seeded held-out test split and nested real training subsets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.files import IMAGE_SUFFIXES
from evaluation.segmentation.settings import SegmentationError

MASK_SUFFIXES = (".png", ".bmp", ".gif", ".tif", ".tiff")
"""Lossless types only, unlike ``IMAGE_SUFFIXES``: a JPEG or WebP mask has blurred edges and stray labels."""
_NAMES_SHOWN = 5


@dataclass(frozen=True, eq=False)
class SegmentationSet:
    """Validated image/mask pairs at the working size.

    Attributes:
        images: (N, S, S, 3) uint8.
        masks: (N, S, S) bool, every mask non-empty.
        name: Name used in error messages and notes.
    """

    images: np.ndarray
    masks: np.ndarray
    name: str = "pairs"

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> SegmentationSet:
        """The pairs at ``indices``, in that order."""
        index = np.asarray(indices, dtype=int)
        return SegmentationSet(self.images[index], self.masks[index], self.name)

    @staticmethod
    def concat(first: SegmentationSet, second: SegmentationSet, name: str) -> SegmentationSet:
        """Both sets' pairs, first then second."""
        return SegmentationSet(np.concatenate([first.images, second.images]),
                               np.concatenate([first.masks, second.masks]), name)

    @classmethod
    def from_pairs(cls, pairs: Sequence, size: int, name: str = "pairs") -> SegmentationSet:
        """Validate (image uint8 HxWx3, mask bool HxW) pairs and resize them to size x size.

        Raises:
            SegmentationError: If ``pairs`` is empty or not a sequence of 2-tuples, an image is not an
                HxWx3 uint8 array, a mask is not a bool array of the image's height and width, or a mask
                is empty (before or after resizing).
        """
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or len(pairs) == 0:
            raise SegmentationError(f"{name}: got {type(pairs).__name__} of length "
                                    f"{len(pairs) if hasattr(pairs, '__len__') else '?'}; allowed: a non-empty "
                                    "list of (image, mask) pairs")
        images, masks = [], []
        for i, pair in enumerate(pairs):
            image, mask = _check_pair(pair, f"{name}[{i}]")
            images.append(_resize_image(image, size))
            small = _resize_mask(mask, size)
            if not small.any():
                raise SegmentationError(f"{name}[{i}]: the mask ({mask.sum()} pixels at {mask.shape[1]}x"
                                        f"{mask.shape[0]}) vanishes at the working size {size}; use a larger size")
            masks.append(small)
        return cls(np.stack(images), np.stack(masks), name)


def _check_pair(pair, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise SegmentationError(f"{where}: got {type(pair).__name__}; allowed: an (image, mask) pair")
    image, mask = pair
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise SegmentationError(f"{where} image: got {got}; allowed: a uint8 array of shape (H, W, 3)")
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        got = f"{mask.dtype} array" if isinstance(mask, np.ndarray) else type(mask).__name__
        raise SegmentationError(f"{where} mask: got {got}; allowed: a bool array (threshold it first)")
    if mask.shape != image.shape[:2]:
        raise SegmentationError(f"{where} mask: got shape {mask.shape}; allowed: the image's (H, W) = "
                                f"{image.shape[:2]}")
    if not mask.any():
        raise SegmentationError(f"{where} mask: got an empty mask; allowed: masks with at least one polyp pixel")
    return image, mask


def _resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear (PIL widens the filter when shrinking)."""
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape == (size, size):
        return mask
    return np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)).astype(bool)


def real_subsets(n_train: int, sizes: Sequence = (16, 32, 64, "all"), *, seed: int = 0,
                 repeat: int = 0) -> tuple[dict[int, np.ndarray], list[str]]:
    """Nested real training subsets: each size takes the first n of one seeded permutation.

    Args:
        n_train: Number of real training pairs.
        sizes: Integers >= 1 or ``"all"``.
        seed: Experiment seed.
        repeat: Repeat number; each repeat has its own permutation.

    Returns:
        ({n: indices into the training pairs}, in increasing n, so smaller subsets are prefixes of
        larger ones; notes on sizes skipped because they exceed ``n_train`` or repeat a size).

    Raises:
        SegmentationError: If a size is neither a positive integer nor ``"all"``.
    """
    resolved, notes = [], []
    for size in sizes:
        if size == "all":
            n = n_train
        elif isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size >= 1:
            n = int(size)
        else:
            raise SegmentationError(f"sizes: got {size!r}; allowed: integers >= 1 or 'all'")
        if n > n_train:
            notes.append(f"size {n} skipped: only {n_train} real training pairs")
        elif n in resolved:
            notes.append(f"size {size!r} skipped: same as an earlier size ({n} pairs)")
        else:
            resolved.append(n)
    order = np.random.default_rng([seed, 1, repeat]).permutation(n_train)
    return {n: order[:n] for n in sorted(resolved)}, notes


def split_test(n: int, test_fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` real pairs into (training indices, held-out test indices).

    The test part has max(2, n * test_fraction rounded half up) pairs and depends only on (n, fraction, seed).

    Raises:
        SegmentationError: If ``test_fraction`` is not in (0, 1) or fewer than one training pair would remain.
    """
    if not 0 < test_fraction < 1:
        raise SegmentationError(f"test_fraction: got {test_fraction!r}; allowed: a number strictly between 0 and 1")
    n_test = max(2, math.floor(n * test_fraction + 0.5))  # half up, not banker's rounding
    if n - n_test < 1:
        raise SegmentationError(f"real_pairs: got {n} pairs; allowed: at least 3, so that {n_test} can be held "
                                f"out for testing (test_fraction {test_fraction}) and one remains for training")
    order = np.random.default_rng([seed, 0]).permutation(n)
    return order[n_test:], order[:n_test]


def _stems(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise SegmentationError(f"{folder}: not a folder; allowed: a folder holding images/ and masks/")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}


def load_pairs(root: Path, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read (uint8 RGB image, bool mask) pairs from ``root/images/STEM.*`` and ``root/masks/STEM.*``.

    Args:
        root: A folder holding ``images/`` and ``masks/`` with the same file stems.
        name: What to call the folder in messages (e.g. ``"--real"``).

    Raises:
        SegmentationError: If a folder is missing, a file has no partner, there is no image, a mask is
            not binary (0/1 or 0/255) or not the size of its image.
    """
    images, masks = _stems(root / "images", IMAGE_SUFFIXES), _stems(root / "masks", MASK_SUFFIXES)
    for what, missing in (("mask", sorted(set(images) - set(masks))), ("image", sorted(set(masks) - set(images)))):
        if missing:
            raise SegmentationError(f"{name} {root}: {len(missing)} file(s) without a {what} of the same stem, e.g. "
                                    f"{', '.join(missing[:_NAMES_SHOWN])}")
    if not images:
        raise SegmentationError(f"{name} {root}: no images in images/; allowed suffixes {', '.join(IMAGE_SUFFIXES)}")
    pairs = []
    for stem, path in images.items():
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        with Image.open(masks[stem]) as im:
            mask = np.asarray(im.convert("L") if im.mode in ("RGB", "RGBA", "P", "LA") else im)
        values = np.unique(mask)
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            raise SegmentationError(f"{name} {masks[stem]}: {len(values)} distinct values {values[:6].tolist()}; "
                                    "allowed: binary masks (0/1 or 0/255)")
        if mask.shape != image.shape[:2]:
            raise SegmentationError(f"{name} {stem}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                                    f"{image.shape[1]}x{image.shape[0]}; allowed: the same size")
        pairs.append((image, mask > 0))
    return pairs
