"""Downstream segmentation: do synthetic image+mask pairs help a small U-Net find polyps in real images?

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

import argparse
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats
from torch import nn

from common.device import DeviceUnavailable, resolve_device

logger = logging.getLogger(__name__)

REGIMES = ("real", "synthetic", "real+synthetic")
NORMS = ("batch", "group")
MASK_SUFFIXES = (".png", ".bmp", ".gif", ".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_NAMES_SHOWN = 5


class SegmentationError(ValueError):
    """Invalid image/mask pairs, sizes, regimes or settings for the downstream segmentation experiment."""


# ---------------------------------------------------------------------------------------------
# The network


def _block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    """(3x3 conv, norm, ReLU) x 2, as in Ronneberger et al. (2015) with normalisation added."""
    def norm_layer():
        return nn.BatchNorm2d(c_out) if norm == "batch" else nn.GroupNorm(min(8, c_out), c_out)

    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), norm_layer(), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), norm_layer(), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015): encoder, decoder, skip connections, 1-channel logits.

    Each level is a double 3x3 convolution (padded, so output size = input size) with normalisation
    and ReLU; 2x2 max-pooling goes down, a 2x2 stride-2 transposed convolution goes up, and the
    encoder's feature map at that level is concatenated before the decoder's double convolution.
    Channels are ``width * 2**level``. Input sides must be divisible by ``2**depth``.

    Trainable parameters (BatchNorm and GroupNorm alike): width 16, depth 3 (the default) 482,737
    (0.48 M); width 8, depth 2 (the tests) 29,625; width 64, depth 4 (the paper's channels) 31.0 M.

    Args:
        width: Channels at the first level (>= 1; >= 8 for GroupNorm's groups of 8 to divide).
        depth: Number of down-samplings (>= 1).
        norm: ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm, for very small batches).
        in_channels: Image channels (3 for RGB).
    """

    def __init__(self, width: int = 16, depth: int = 3, norm: str = "batch", in_channels: int = 3):
        super().__init__()
        channels = [width * 2 ** level for level in range(depth + 1)]
        self.encoder = nn.ModuleList([_block(in_channels, channels[0], norm)] +
                                     [_block(channels[i - 1], channels[i], norm) for i in range(1, depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(channels[i], channels[i - 1], 2, stride=2)
                                 for i in range(depth, 0, -1)])
        self.decoder = nn.ModuleList([_block(2 * channels[i - 1], channels[i - 1], norm) for i in range(depth, 0, -1)])
        self.head = nn.Conv2d(channels[0], 1, 1)
        for module in self.modules():  # He-normal, as in the paper: PyTorch's default left some seeds stuck
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] -> (N, 1, H, W) logits."""
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class SegmentationSettings:
    """Everything that defines one training and evaluation run, recorded with the results.

    Attributes:
        size: Working side in pixels; images are resized to size x size (antialiased bilinear),
            masks with nearest neighbour. Must be divisible by ``2**depth``.
        width: U-Net channels at the first level.
        depth: U-Net down-samplings.
        norm: ``"batch"`` or ``"group"``.
        steps: Optimiser steps per run (the same for every size and regime) unless ``epochs`` is set.
        epochs: If set, steps = epochs x ceil(n_train / batch_size) instead.
        batch_size: Images per step (clamped to the training set size).
        learning_rate: Adam learning rate.
        threshold: Probability above which a pixel is predicted polyp.
        n_boot: Bootstrap resamples for the CIs over test images.
        confidence: CI level.
        max_synthetic: Cap on the synthetic pairs used (the first ones); None uses all.
    """

    size: int = 64
    width: int = 16
    depth: int = 3
    norm: str = "batch"
    steps: int = 300
    epochs: int | None = None
    batch_size: int = 8
    learning_rate: float = 3e-3
    threshold: float = 0.5
    n_boot: int = 1000
    confidence: float = 0.95
    max_synthetic: int | None = None

    def __post_init__(self):
        positive = {"size": self.size, "width": self.width, "depth": self.depth, "steps": self.steps,
                    "batch_size": self.batch_size, "n_boot": self.n_boot}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise SegmentationError(f"{name}: got {value!r}; allowed: an integer >= 1")
        for name in ("epochs", "max_synthetic"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise SegmentationError(f"{name}: got {value!r}; allowed: None or an integer >= 1")
        if self.norm not in NORMS:
            raise SegmentationError(f"norm: got {self.norm!r}; allowed: {', '.join(NORMS)}")
        if self.norm == "group" and self.width % min(8, self.width):
            raise SegmentationError(f"width: got {self.width} with norm 'group'; allowed: a multiple of 8, or < 8")
        if self.size % 2 ** self.depth:
            raise SegmentationError(f"size: got {self.size} with depth {self.depth}; allowed: a multiple of "
                                    f"{2 ** self.depth} (2**depth)")
        for name, value in (("threshold", self.threshold), ("confidence", self.confidence)):
            if not 0 < value < 1:
                raise SegmentationError(f"{name}: got {value!r}; allowed: a number strictly between 0 and 1")
        if not self.learning_rate > 0:
            raise SegmentationError(f"learning_rate: got {self.learning_rate!r}; allowed: a number > 0")


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


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# ---------------------------------------------------------------------------------------------
# Training and prediction


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (per image, smoothed by 1), equally weighted."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    dice = (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
    return bce + (1 - dice).mean()


def _flip(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal and vertical flips, drawn per image."""
    for dim in (3, 2):
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(dim), x)
        y = torch.where(flip[:, None, None, None], y.flip(dim), y)
    return x, y


def train_unet(train: SegmentationSet, settings: SegmentationSettings = SegmentationSettings(), seed: int = 0,
               device: str | torch.device = "cpu") -> UNet:
    """Train a fresh U-Net on ``train`` with Dice + BCE loss, Adam and random flips.

    Weights, batch order and flips come from ``seed`` alone (torch's global RNG is restored after
    initialisation), so a run on the CPU is reproducible.

    Args:
        train: Training pairs at ``settings.size``.
        settings: Network, step count, batch size and learning rate.
        seed: Seed of weights, batch order and flips.
        device: Where to train, e.g. ``"cpu"`` or ``"cuda"``.

    Returns:
        The trained network in eval mode, on ``device``.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(settings.width, settings.depth, settings.norm).to(device)
    generator = torch.Generator().manual_seed(seed)
    images, masks = _to_tensor(train.images), torch.from_numpy(train.masks).float()[:, None]
    batch = min(settings.batch_size, len(train))
    per_epoch = math.ceil(len(train) / batch)
    steps = settings.epochs * per_epoch if settings.epochs else settings.steps
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    model.train()
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch:  # a fresh permutation per epoch; the remainder of the last one is dropped
            order = torch.randperm(len(train), generator=generator)
        index, order = order[:batch], order[batch:]
        x, y = _flip(images[index], masks[index], generator)
        loss = _loss(model(x.to(device)), y.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    logger.info("trained U-Net on %d pairs for %d steps (last loss %.3f)", len(train), steps, loss.item())
    return model.eval()


@torch.inference_mode()
def predict_masks(model: nn.Module, images: np.ndarray, threshold: float = 0.5, batch_size: int = 32,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Boolean masks (N, S, S) where sigmoid(logit) > ``threshold`` for (N, S, S, 3) uint8 images."""
    model.eval()
    out = [torch.sigmoid(model(_to_tensor(images[i:i + batch_size]).to(device)))[:, 0].cpu() > threshold
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


# ---------------------------------------------------------------------------------------------
# Metrics


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


# ---------------------------------------------------------------------------------------------
# The experiment


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


def _check_regimes(regimes: Sequence[str], n_synthetic: int) -> None:
    bad = [r for r in regimes if r not in REGIMES]
    if bad or not regimes:
        raise SegmentationError(f"regimes: got {list(regimes)!r}; allowed: a non-empty list of {', '.join(REGIMES)}")
    if n_synthetic == 0 and any("synthetic" in r for r in regimes):
        raise SegmentationError("synthetic_pairs: got none; allowed: at least one pair when the regimes include "
                                "'synthetic' or 'real+synthetic' (or run regimes=('real',))")


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
    subsets, notes = real_subsets(len(train), sizes, seed=seed)  # validates sizes before any training
    for note in notes:
        logger.warning(note)
    n_syn = 0 if synthetic is None else len(synthetic)

    rows, per_image = [], {}
    for repeat in range(repeats):
        subsets = real_subsets(len(train), sizes, seed=seed, repeat=repeat)[0]
        train_seed = int(np.random.SeedSequence([seed, 2, repeat]).generate_state(1)[0])
        runs = [(regime, n) for regime in regimes for n in ([0] if regime == "synthetic" else subsets)]
        for regime, n in runs:
            data = synthetic if regime == "synthetic" else train.subset(subsets[n])
            if regime == "real+synthetic":
                data = SegmentationSet.concat(data, synthetic, regime)
            start = time.perf_counter()
            model = train_unet(data, settings, train_seed, device)
            train_seconds = time.perf_counter() - start
            result = evaluate_unet(model, test, settings, seed, device)
            cross_result = evaluate_unet(model, cross, settings, seed, device) if cross is not None else None
            steps = settings.epochs * math.ceil(len(data) / min(settings.batch_size, len(data))) \
                if settings.epochs else settings.steps
            rows.append({"regime": regime, "n_real": n, "n_synthetic": len(data) - n, "repeat": repeat,
                         "steps": steps, **_scores("", result), "n_test": len(test),
                         "seconds": time.perf_counter() - start, "train_seconds": train_seconds,
                         **_scores("cross_", cross_result), "n_cross": None if cross is None else len(cross)})
            per_image.setdefault((regime, n), []).append((result, cross_result))
            logger.info("%s n_real=%d repeat %d: Dice %.3f, IoU %.3f", regime, n, repeat, result["dice"], result["iou"])
    summary = [_summarise(regime, n, runs, rows, settings, seed) for (regime, n), runs in per_image.items()]
    return SegmentationReport(rows, summary, notes, len(train), len(test), n_syn,
                              None if cross is None else len(cross), "split" if test_pairs is None else "explicit",
                              asdict(settings), str(device))


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


# ---------------------------------------------------------------------------------------------
# Command line


def _stems(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    if not folder.is_dir():
        raise SegmentationError(f"{folder}: not a folder; allowed: a folder holding images/ and masks/")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes}


def _load_pairs(root: Path, name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs from ``root/images/STEM.*`` and ``root/masks/STEM.*`` (binary masks: 0/1 or 0/255)."""
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


def _size_arg(text: str):
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer or 'all'") from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m evaluation.segmentation``."""
    defaults = SegmentationSettings()
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.segmentation",
        description="Train a small U-Net on real-only, synthetic-only and real+synthetic image/mask pairs at "
        "several real-set sizes; report Dice and IoU (bootstrap CIs) on held-out real images. Each DIR holds "
        "images/ and masks/ with the same file stems.",
        epilog="Exit codes: 0 done, 2 usage or input error.")
    parser.add_argument("--real", required=True, metavar="DIR", help="real pairs (a share is held out for testing)")
    parser.add_argument("--synthetic", metavar="DIR", help="synthetic pairs (needed for the synthetic regimes)")
    parser.add_argument("--test", metavar="DIR", help="explicit real test pairs instead of holding out --real's")
    parser.add_argument("--cross", metavar="DIR", help="optional cross-dataset test pairs, reported separately")
    parser.add_argument("--sizes", nargs="+", type=_size_arg, default=[16, 32, 64, "all"], help="real set sizes")
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    parser.add_argument("--test-fraction", type=float, default=0.25, help="held-out share of --real (default 0.25)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps per run (default 300)")
    parser.add_argument("--epochs", type=int, help="train for N epochs instead of --steps (steps grow with data)")
    parser.add_argument("--size", type=int, default=defaults.size, help="working side in pixels (default 64)")
    parser.add_argument("--width", type=int, default=defaults.width, help="U-Net base channels (default 16)")
    parser.add_argument("--depth", type=int, default=defaults.depth, help="U-Net down-samplings (default 3)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-synthetic", type=int, help="use at most N synthetic pairs")
    parser.add_argument("--n-boot", type=int, default=defaults.n_boot, help="bootstrap resamples (default 1000)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def format_report(report: SegmentationReport) -> str:
    """Markdown tables of the summary (and the per-repeat rows when there are several repeats)."""
    def ci(row, key):
        return "n/a" if row[key] is None else f"{row[key]:.3f} [{row[key + '_low']:.3f}, {row[key + '_high']:.3f}]"

    cross = report.n_cross is not None
    lines = [f"real training pairs {report.n_real_train}, real test pairs {report.n_test} ({report.test_source}), "
             f"synthetic pairs {report.n_synthetic}" + (f", cross-dataset pairs {report.n_cross}" if cross else ""),
             "", "| regime | n_real | n_synthetic | repeats | Dice [95% CI] | IoU [95% CI] |" +
             (" cross Dice | cross IoU |" if cross else ""),
             "|---|---:|---:|---:|---|---|" + ("---|---|" if cross else "")]
    for row in report.summary:
        lines.append(f"| {row['regime']} | {row['n_real']} | {row['n_synthetic']} | {row['repeats']} | "
                     f"{ci(row, 'dice')} | {ci(row, 'iou')} |" +
                     (f" {ci(row, 'cross_dice')} | {ci(row, 'cross_iou')} |" if cross else ""))
    lines += [f"- note: {note}" for note in report.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for user errors, with a one-line message on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        device = resolve_device(args.device)
        settings = SegmentationSettings(size=args.size, width=args.width, depth=args.depth, steps=args.steps,
                                        epochs=args.epochs, batch_size=args.batch_size, n_boot=args.n_boot,
                                        max_synthetic=args.max_synthetic)
        load = {name: _load_pairs(Path(folder), f"--{name}") if folder else None
                for name, folder in (("real", args.real), ("synthetic", args.synthetic), ("test", args.test),
                                     ("cross", args.cross))}
        report = downstream_segmentation(
            load["real"], load["synthetic"] or (), sizes=args.sizes, regimes=args.regimes,
            test_fraction=args.test_fraction, test_pairs=load["test"], cross_pairs=load["cross"],
            repeats=args.repeats, seed=args.seed, settings=settings, device=device)
    except (SegmentationError, DeviceUnavailable, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
