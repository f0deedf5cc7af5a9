"""What defines one downstream segmentation run, and the error every part of the test raises."""

from __future__ import annotations

from dataclasses import dataclass

NORMS = ("batch", "group")


class SegmentationError(ValueError):
    """Invalid image/mask pairs, sizes, regimes or settings for the downstream segmentation experiment."""


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
