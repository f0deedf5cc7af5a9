"""Kiosk pools: presented images per checkpoint and pathology, made in advance, read at play time.

A pool folder (default ``DATA/kiosk/pools/``) holds PNGs named by random tokens and a
``manifest.json`` that maps each file to what it shows::

    {"format": 1, "size": 64, "transform": {...}, "created_at": "...",
     "checkpoints": [{"name": "checkpoint-500", "step": 500, "stage": 1, "fingerprint": "..."}],
     "images": [{"file": "<token>.png", "source": "real" | "synthetic", "label": "AD" | "NonAD",
                 "sha256": "<source image sha256>", "checkpoint": "checkpoint-500" | null,
                 "step": 500 | null, "fingerprint": "..." | null, "presented_sha256": "..."}]}

Every image, real or synthetic, goes through the study presentation transform
(``review.presentation``), at one size for all. By default that size is the smallest native side
among the pooled images (at least 64, at most 512), so no image is upsampled further than the
others: a 64 px generator against 256 px real frames would otherwise be told apart by sharpness.

The manifest is written last and atomically, so a reader never sees it describe missing files. A
rebuild reuses the files of images already presented at the same size and leaves older files in
place (games in progress may still show them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.labels import LABELS
from database import checkpoints as checkpoint_store
from database import images as image_store
from review.presentation import SIZE_RANGE, PresentationSettings, present_file
from review.study_setup import ensure_images

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
AUTO_SIZE_RANGE = (64, 512)
DEFAULT_PER_LABEL = 12


class PoolsError(ValueError):
    """Pools that are missing, unreadable, or too small to play."""


@dataclass(frozen=True)
class PoolImage:
    """One presented image of a pool (``checkpoint``, ``step``, ``fingerprint`` are None for real images)."""

    file: str
    source: str
    label: str
    sha256: str
    checkpoint: str | None = None
    step: int | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class Pools:
    """The pools as read from a manifest.

    Attributes:
        directory: The pool folder.
        size: Side of every presented image in pixels.
        images: Every image of the manifest.
        id: A short hash of the manifest, stored with each game (which pools it was drawn from).
        checkpoints: ``{"name", "step", "stage", "fingerprint"}`` per checkpoint, by step.
    """

    directory: Path
    size: int
    images: tuple[PoolImage, ...]
    id: str
    checkpoints: tuple[dict, ...]

    def path(self, file: str) -> Path:
        """The presented file's path; only names listed in the manifest are accepted."""
        if file not in {image.file for image in self.images}:
            raise PoolsError(f"{file!r} is not an image of these pools")
        return self.directory / file

    def real(self, label: str) -> list[PoolImage]:
        return [image for image in self.images if image.source == "real" and image.label == label]

    def synthetic(self, fingerprint: str, label: str) -> list[PoolImage]:
        return [image for image in self.images
                if image.source == "synthetic" and image.fingerprint == fingerprint and image.label == label]


def default_pools_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "kiosk" / "pools"


def load_pools(directory: Path) -> Pools:
    """Read the pools in ``directory``.

    Raises:
        PoolsError: If there is no manifest (the message says which command makes one), it is
            unreadable, or it lists no playable pair (a synthetic image and a real one of its label).
    """
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise PoolsError(f"no kiosk pools in {directory}: build them first with "
                         "`python -m review.kiosk pools` (or `make kiosk`)") from None
    try:
        manifest = json.loads(raw)
        if manifest.get("format") != FORMAT:
            raise PoolsError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT}; rebuild the pools")
        images = tuple(PoolImage(**{key: entry.get(key) for key in PoolImage.__dataclass_fields__})
                       for entry in manifest["images"])
        pools = Pools(directory, int(manifest["size"]), images, hashlib.sha256(raw).hexdigest()[:16],
                      tuple(manifest["checkpoints"]))
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, PoolsError):
            raise
        raise PoolsError(f"{manifest_path} is not a readable pool manifest ({error}); rebuild the pools") from error
    if not playable_cells(pools):
        raise PoolsError(f"{manifest_path} has no playable pair (a synthetic image and a real image of the "
                         "same pathology); rebuild the pools with more images")
    return pools


def playable_cells(pools: Pools) -> list[tuple[str, str]]:
    """``(checkpoint fingerprint, label)`` cells that have synthetic images and real images of that label."""
    return [(checkpoint["fingerprint"], label) for checkpoint in pools.checkpoints for label in LABELS
            if pools.synthetic(checkpoint["fingerprint"], label) and pools.real(label)]


def auto_size(rows: list[dict]) -> int:
    """The smallest native side among image rows (``width``, ``height``), clamped to ``AUTO_SIZE_RANGE``."""
    smallest = min((min(row["width"], row["height"]) for row in rows), default=AUTO_SIZE_RANGE[1])
    return max(AUTO_SIZE_RANGE[0], min(AUTO_SIZE_RANGE[1], int(smallest)))


def write_pools(directory: Path, real: list[dict], synthetic: list[dict], size: int | None = None) -> Pools:
    """Present images into ``directory`` and write its manifest.

    Args:
        directory: The pool folder (created).
        real: Real image rows as ``database.images.list_images`` returns them.
        synthetic: Synthetic image rows likewise (with ``checkpoint_name``, ``checkpoint_step``,
            ``checkpoint_stage``, ``checkpoint_fingerprint``).
        size: Presentation size; None picks ``auto_size`` of all rows.

    Returns:
        The pools as ``load_pools`` reads them back.

    Raises:
        PoolsError: If an image cannot be presented (naming it) or the size is out of range.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    size = auto_size(real + synthetic) if size is None else int(size)
    if not SIZE_RANGE[0] <= size <= SIZE_RANGE[1]:
        raise PoolsError(f"size must be between {SIZE_RANGE[0]} and {SIZE_RANGE[1]} pixels, got {size}")
    reusable = _reusable_files(directory, size)
    entries, checkpoints = [], {}
    for row in real + synthetic:
        file = reusable.get(row["sha256"]) or _present_one(directory, row, size)
        is_synthetic = row["source"] == "synthetic"
        entries.append({
            "file": file, "source": row["source"], "label": row["label"], "sha256": row["sha256"],
            "checkpoint": row["checkpoint_name"] if is_synthetic else None,
            "step": row["checkpoint_step"] if is_synthetic else None,
            "fingerprint": row["checkpoint_fingerprint"] if is_synthetic else None,
            "presented_sha256": hashlib.sha256((directory / file).read_bytes()).hexdigest(),
        })
        if is_synthetic:
            checkpoints[row["checkpoint_fingerprint"]] = {
                "name": row["checkpoint_name"], "step": row["checkpoint_step"], "stage": row.get("checkpoint_stage"),
                "fingerprint": row["checkpoint_fingerprint"]}
    manifest = {
        "format": FORMAT, "size": size, "transform": PresentationSettings(size=size).to_dict(),
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "checkpoints": sorted(checkpoints.values(), key=lambda c: (c["step"], c["name"])),
        "images": entries,
    }
    temporary = directory / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    os.replace(temporary, directory / MANIFEST)
    logger.info("kiosk pools: %d real and %d synthetic images of %d checkpoints at %d px in %s",
                len(real), len(synthetic), len(checkpoints), size, directory)
    return load_pools(directory)


def build_pools(services, checkpoint_paths: list[str] = (), per_label: int = DEFAULT_PER_LABEL, seed: int = 0,
                size: int | None = None, real_per_label: int | None = None,
                checkpoint_ids: list[int] = (), generate: bool = True) -> Pools:
    """Make the kiosk pools of some checkpoints from the study database, generating what is missing.

    For each checkpoint folder with fewer than ``per_label`` stored images of a pathology, the
    shortfall is generated (``review.study_setup.ensure_images``: default prompt and sampler, on the
    configured device). Checkpoints given by id (e.g. a study's) use their stored images, generating
    more only if their folder still exists. Each cell then contributes ``per_label`` images (a seeded
    sample when more are stored), and each pathology up to ``real_per_label`` real images: by
    default as many as its synthetic images, so that across games a real image comes back as often
    as a synthetic one and "seen it before" says nothing about the source.

    Args:
        services: The app's ``Services`` (config, pipelines, study database).
        checkpoint_paths: Checkpoint folders.
        per_label: Synthetic images per checkpoint and pathology (at least 1).
        seed: Seed of the generation and of the sampling.
        size: Presentation size; None: ``auto_size``.
        real_per_label: Real images per pathology (at most); None: as many as synthetic images per pathology.
        checkpoint_ids: Checkpoints already in the study database, by id.
        generate: Whether to generate missing images.

    Raises:
        PoolsError: If nothing is chosen, no real image is registered, or a cell has no image.
    """
    if real_per_label is None:
        real_per_label = per_label * max(1, len(checkpoint_paths) + len(checkpoint_ids))
    if per_label < 1 or real_per_label < 1:
        raise PoolsError(f"per_label and real_per_label must be at least 1, got {per_label} and {real_per_label}")
    ids = list(checkpoint_ids)
    db = services.db()
    try:
        known = {row["id"]: row for row in checkpoint_store.list_checkpoints(db)}
    finally:
        db.close()
    missing = [cid for cid in ids if cid not in known]
    if missing:
        raise PoolsError(f"no checkpoint with id {missing} in the study database")
    folders = list(checkpoint_paths) + [known[cid]["path"] for cid in ids if Path(known[cid]["path"]).is_dir()]
    if not folders and not ids:
        raise PoolsError("choose at least one checkpoint")
    if folders:
        ids += ensure_images(services, folders, per_label, seed, generate=generate)
    rng = random.Random(seed)
    db = services.db()
    try:
        synthetic = []
        for cid in dict.fromkeys(ids):
            for label in LABELS:
                rows = image_store.list_images(db, source="synthetic", label=label, checkpoint_id=cid)
                if not rows:
                    raise PoolsError(f"checkpoint {known.get(cid, {}).get('name', cid)} has no {label} image; "
                                     "generate some (drop --no-generate) or choose other checkpoints")
                synthetic += _sample(rows, per_label, rng)
        real = []
        for label in LABELS:
            real += _sample(image_store.list_images(db, source="real", label=label), real_per_label, rng)
    finally:
        db.close()
    if not real:
        raise PoolsError(f"no real images are registered in {services.config.db_path}; register some with "
                         "`python -m review.register --data DIR` (for the embedded demo: `make demo-data`)")
    return write_pools(default_pools_dir(services.config.data_dir), real, synthetic, size)


def _sample(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    rows = sorted(rows, key=lambda row: row["sha256"])
    return rows if len(rows) <= n else sorted(rng.sample(rows, n), key=lambda row: row["sha256"])


def _reusable_files(directory: Path, size: int) -> dict[str, str]:
    """sha256 -> file of images the current manifest already presented at ``size``."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if manifest.get("format") != FORMAT or manifest.get("size") != size:
        return {}
    return {entry["sha256"]: entry["file"] for entry in manifest.get("images", [])
            if (directory / entry["file"]).is_file()}


def _present_one(directory: Path, row: dict, size: int) -> str:
    file = f"{secrets.token_urlsafe(12)}.png"
    try:
        data = present_file(row["path"], size)
    except (OSError, ValueError) as error:
        raise PoolsError(f"image {row['path']} could not be presented: {error}") from error
    (directory / file).write_bytes(data)
    return file
