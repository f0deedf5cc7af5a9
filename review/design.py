"""A blinded study's frozen design and the choice of its images: pure, seeded, no database or UI.

``StudyDesign`` is what an admin sets (stored as JSON with ``to_dict``); ``select_items`` picks the
study's images from the registered pools. ``review.schedule`` turns them into trial schedules.
Inputs are sorted (images by sha256) before any random draw, so their order does not matter.
"""

from __future__ import annotations

import hashlib
import numbers
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, fields

import numpy as np

from common.labels import LABELS, UnknownLabel, validate_label

MODES: tuple[str, ...] = ("single", "pair")
SOURCES: tuple[str, ...] = ("real", "synthetic")
KINDS: tuple[str, ...] = ("normal", "repeat", "attention")
SIDES: tuple[str, ...] = ("left", "right")
SIZE_RANGE: tuple[int, int] = (64, 1024)
ATTENTION_CELL = "attention"
MAX_RUN = 2
"""Most trials of the same cell in a row, where the numbers allow it."""
REPEAT_GAP = 5
"""Fewest positions between a trial and its repeat, where the schedule is long enough."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


class DesignError(ValueError):
    """A study design, or the images and raters given for it, that cannot make a valid study."""


def check_int(name: str, value: object, low: int | None = None, high: int | None = None) -> None:
    """Check that ``value`` is an integer (not a bool) within ``low``..``high`` (either may be None).

    Raises:
        DesignError: Naming ``name``, the value received and the range allowed.
    """
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise DesignError(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        raise DesignError(f"{name} {value!r} is out of range; allowed: {allowed}")


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Check that ``value`` is one of ``allowed``; raises ``DesignError`` naming ``name`` and the choices."""
    if value not in allowed:
        raise DesignError(f"{name} {value!r} is not valid; allowed: {', '.join(map(repr, allowed))}")


def check_sha256(name: str, value: object) -> None:
    """Check that ``value`` is a sha256 in 64 lowercase hex characters; raises ``DesignError`` naming ``name``."""
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise DesignError(f"{name} must be 64 lowercase hex characters, got {value!r}")


def seeded_rng(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable hash of ``parts`` (Python's ``hash`` is salted per process)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class StudyItem:
    """One image a study may show.

    Attributes:
        sha256: The image's identity (sha256 of its file).
        source: ``"real"`` or ``"synthetic"``.
        label: The pathology shown or generated, one of ``common.labels.LABELS``.
        checkpoint_id: The checkpoint that generated it; ``None`` for real images.
    """

    sha256: str
    source: str
    label: str
    checkpoint_id: int | None = None

    def __post_init__(self) -> None:
        check_sha256("StudyItem.sha256", self.sha256)
        check_choice("StudyItem.source", self.source, SOURCES)
        try:
            validate_label(self.label)
        except UnknownLabel as error:
            raise DesignError(f"StudyItem.label: {error}") from error
        if self.source == "real" and self.checkpoint_id is not None:
            raise DesignError(f"StudyItem.checkpoint_id must be None for a real image, got {self.checkpoint_id!r}")
        if self.source == "synthetic":
            check_int("StudyItem.checkpoint_id of a synthetic image", self.checkpoint_id)

    @property
    def cell(self) -> str:
        """The design cell: ``"ckpt3/AD/synthetic"`` or ``"real/NonAD"``."""
        if self.source == "real":
            return f"real/{self.label}"
        return f"ckpt{self.checkpoint_id}/{self.label}/synthetic"


@dataclass(frozen=True)
class StudyDesign:
    """The frozen design of a study; validated on construction.

    Attributes:
        mode: ``"single"`` (one image, real or synthetic?) or ``"pair"`` (which of two is synthetic?).
        checkpoint_ids: The checkpoints compared, one or more distinct ids.
        images_per_cell: Synthetic images per checkpoint and label (>= 1).
        real_per_label: Single mode: real images per label; ``None`` balances real and synthetic
            50:50 (``images_per_cell * len(checkpoint_ids)``). Unused in pair mode.
        ratings_per_image: Distinct raters per study unit (>= 1).
        repeats: Trials re-shown to each rater for intra-rater reliability (>= 0).
        attention_checks: Attention-check trials per rater (>= 0).
        size: Presentation size in pixels (64..1024).
        seed: Seeds every random choice of the study (>= 0).
        show_masks: Single mode only: show each image with its polyp mask outlined and ask whether
            the mask fits the lesion; only images with a stored mask are eligible.
        image_sets: Names of the image sets its real images come from (``database.image_sets``);
            empty until the study is created, which records the sets it used (by default every
            clinical set; a simulated study, the demo set).
    """

    mode: str
    checkpoint_ids: tuple[int, ...]
    images_per_cell: int
    real_per_label: int | None = None
    ratings_per_image: int = 1
    repeats: int = 0
    attention_checks: int = 0
    size: int = 256
    seed: int = 0
    show_masks: bool = False
    image_sets: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_choice("StudyDesign.mode", self.mode, MODES)
        ids = self.checkpoint_ids
        ids = tuple(ids) if isinstance(ids, Iterable) and not isinstance(ids, (str, bytes)) else None
        for checkpoint_id in ids or ():
            check_int("StudyDesign.checkpoint_ids[...]", checkpoint_id)
        if not ids or len(set(ids)) != len(ids):
            raise DesignError(f"StudyDesign.checkpoint_ids {self.checkpoint_ids!r} is not valid; "
                              "allowed: one or more distinct integer ids")
        object.__setattr__(self, "checkpoint_ids", tuple(int(i) for i in ids))  # a list would make it unhashable
        check_int("StudyDesign.images_per_cell", self.images_per_cell, 1)
        if self.real_per_label is not None:
            check_int("StudyDesign.real_per_label", self.real_per_label, 0)
        check_int("StudyDesign.ratings_per_image", self.ratings_per_image, 1)
        check_int("StudyDesign.repeats", self.repeats, 0)
        check_int("StudyDesign.attention_checks", self.attention_checks, 0)
        check_int("StudyDesign.size", self.size, *SIZE_RANGE)
        check_int("StudyDesign.seed", self.seed, 0)  # numpy seeds, and the attention cards', are non-negative
        if not isinstance(self.show_masks, bool):
            raise DesignError(f"StudyDesign.show_masks must be true or false, got {self.show_masks!r}")
        names = self.image_sets
        if isinstance(names, (str, bytes)) or not isinstance(names, Iterable) or not all(
                isinstance(name, str) and name for name in names):
            raise DesignError(f"StudyDesign.image_sets must be a list of image set names, got {names!r}")
        object.__setattr__(self, "image_sets", tuple(dict.fromkeys(names)))
        if self.show_masks and self.mode != "single":
            raise DesignError("StudyDesign.show_masks asks whether one image's mask fits its lesion: "
                              "allowed in single mode only, got mode 'pair'")

    @property
    def real_images_per_label(self) -> int:
        """Real images per label in single mode, with ``None`` resolved to the 50:50 balance."""
        if self.real_per_label is None:
            return self.images_per_cell * len(self.checkpoint_ids)
        return self.real_per_label

    def to_dict(self) -> dict:
        """The design as JSON-ready values (``checkpoint_ids`` as a list)."""
        data = asdict(self)
        data["checkpoint_ids"] = list(self.checkpoint_ids)
        data["image_sets"] = list(self.image_sets)
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> StudyDesign:
        """Rebuild a design from ``to_dict`` output (e.g. parsed JSON).

        Raises:
            DesignError: On unknown or missing fields, or invalid values.
        """
        if not isinstance(data, Mapping):
            raise DesignError(f"a study design must be a mapping, got {type(data).__name__}")
        names = [field.name for field in fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise DesignError(f"unknown StudyDesign field(s) {unknown}; allowed: {', '.join(names)}")
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in data]
        if missing:
            raise DesignError(f"StudyDesign field(s) missing: {', '.join(missing)}")
        return cls(**data)


def select_items(
    design: StudyDesign, synthetic_pool: Iterable[StudyItem], real_pool: Iterable[StudyItem]
) -> list[StudyItem]:
    """Choose the study's images: a seeded sample from each design cell.

    Each cell is sampled from its images sorted by sha256 with a generator derived from the seed
    and the cell, so the pools' order does not matter and adding a checkpoint leaves the other
    cells' choice unchanged.

    Args:
        design: The study design.
        synthetic_pool: Candidate synthetic images; those of other checkpoints are ignored.
        real_pool: Candidate real images.

    Returns:
        ``images_per_cell`` synthetic images per (checkpoint, label), then in single mode
        ``real_images_per_label`` real images per label, in pair mode every real image (all stay
        available as partners).

    Raises:
        DesignError: If a pool holds the wrong source or a duplicate, or a cell has too few images.
    """
    synthetic, real = _pool(synthetic_pool, "synthetic"), _pool(real_pool, "real")
    reject_duplicates(synthetic + real)
    chosen = []
    for checkpoint_id in sorted(design.checkpoint_ids):
        for label in LABELS:
            cell = [i for i in synthetic if i.checkpoint_id == checkpoint_id and i.label == label]
            where = f"checkpoint id {checkpoint_id}, label {label}, source synthetic"
            chosen += _sample(cell, design.images_per_cell, design.seed, where)
    for label in LABELS:
        cell = [i for i in real if i.label == label]
        if design.mode == "pair":
            chosen += sorted(cell, key=lambda item: item.sha256)
        else:
            chosen += _sample(cell, design.real_images_per_label, design.seed, f"label {label}, source real")
    return chosen


def _pool(pool: Iterable[StudyItem], source: str) -> list[StudyItem]:
    items = list(pool)
    for item in items:
        if not isinstance(item, StudyItem) or item.source != source:
            raise DesignError(f"the {source} pool must hold {source} StudyItems, got {item!r}")
    return items


def reject_duplicates(items: list[StudyItem]) -> None:
    """Raise ``DesignError`` listing (up to five) sha256s that appear more than once among ``items``."""
    repeated = sorted(sha for sha, n in Counter(i.sha256 for i in items).items() if n > 1)
    if repeated:
        raise DesignError(f"each image may appear once; duplicated sha256: {', '.join(repeated[:5])}")


def _sample(items: list[StudyItem], n: int, seed: int, where: str) -> list[StudyItem]:
    if len(items) < n:
        raise DesignError(f"too few images for {where}: the design needs {n}, {len(items)} exist")
    ordered = sorted(items, key=lambda item: item.sha256)
    picks = seeded_rng(seed, "select", where).choice(len(ordered), size=n, replace=False)
    return [ordered[i] for i in sorted(picks)]
