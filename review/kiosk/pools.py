"""Kiosk pools: presented images per checkpoint and pathology, made in advance, read at play time.

A pool folder (default ``DATA/kiosk/pools/``) holds PNGs named by random tokens and a
``manifest.json`` that maps each file to what it shows::

    {"format": 2, "size": 64, "transform": {...}, "created_at": "...",
     "image_sets": [{"name": "demo", "kind": "phantom-demo", "public": true}],
     "checkpoints": [{"name": "checkpoint-500", "step": 500, "stage": 1, "fingerprint": "..."}],
     "images": [{"file": "<token>.png", "source": "real" | "synthetic", "label": "AD" | "NonAD",
                 "sha256": "<source image sha256>", "checkpoint": "checkpoint-500" | null,
                 "step": 500 | null, "fingerprint": "..." | null, "presented_sha256": "..."}]}

Every image, real or synthetic, goes through the study presentation transform
(``review.presentation``), at one size for all. By default that size is the smallest native side
among the pooled images (at least 64, at most 512), so no image is upsampled further than the
others: a 64 px generator against 256 px real frames would otherwise be told apart by sharpness.

Real images come only from image sets flagged public (``database.image_sets``): the booth's
screen, and any phone on the network, may show them. The manifest names those sets, and a kiosk
whose pools name no public set (or were built before sets existed) refuses to start a game and
says why.

The manifest is written last and atomically, so a reader never sees it describe missing files. A
rebuild reuses the files of images already presented at the same size and leaves older files in
place (games in progress may still show them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from common.files import sha256_file, write_atomic
from common.labels import LABELS
from database import checkpoints as checkpoint_store
from database import image_sets as image_set_store
from database import images as image_store
from review.presentation import SIZE_RANGE, TRANSFORM_VERSION, PresentationSettings, present_file
from review.study_setup import ensure_images

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 2
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
        image_sets: ``{"name", "kind", "public"}`` of each set the real images come from.
    """

    directory: Path
    size: int
    images: tuple[PoolImage, ...]
    id: str
    checkpoints: tuple[dict, ...]
    image_sets: tuple[dict, ...] = ()

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
                      tuple(manifest["checkpoints"]), tuple(manifest["image_sets"]))
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, PoolsError):
            raise
        raise PoolsError(f"{manifest_path} is not a readable pool manifest ({error}); rebuild the pools") from error
    private = [entry.get("name") for entry in pools.image_sets if entry.get("public") is not True]
    if not pools.image_sets or private:
        why = f"image set(s) {', '.join(map(repr, private))} may not be shown publicly" if private else \
            "they name no image set that may be shown publicly"
        raise PoolsError(f"{manifest_path}: the kiosk shows real images to the public, and {why}; rebuild the pools "
                         "from a public set (`python -m review.register --data DIR --set NAME --public`, then "
                         "`python -m review.kiosk pools --set NAME`; the embedded demo: `python -m review.kiosk pools`)")
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


def write_pools(directory: Path, real: list[dict], synthetic: list[dict], size: int | None = None,
                image_sets: list[dict] = ()) -> Pools:
    """Present images into ``directory`` and write its manifest.

    Args:
        directory: The pool folder (created).
        real: Real image rows as ``database.images.list_images`` returns them.
        synthetic: Synthetic image rows likewise (with ``checkpoint_name``, ``checkpoint_step``,
            ``checkpoint_stage``, ``checkpoint_fingerprint``).
        size: Presentation size; None picks ``auto_size`` of all rows.
        image_sets: The sets the real images come from (``database.image_sets.get_set`` rows).

    Returns:
        The pools as ``load_pools`` reads them back (which refuses sets that are not public).

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
            "presented_sha256": sha256_file(directory / file),
        })
        if is_synthetic:
            checkpoints[row["checkpoint_fingerprint"]] = {
                "name": row["checkpoint_name"], "step": row["checkpoint_step"], "stage": row.get("checkpoint_stage"),
                "fingerprint": row["checkpoint_fingerprint"]}
    manifest = {
        "format": FORMAT, "size": size, "transform": PresentationSettings(size=size).to_dict(),
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "image_sets": [{"name": s["name"], "kind": s["kind"], "public": bool(s["public"])} for s in image_sets],
        "checkpoints": sorted(checkpoints.values(), key=lambda c: (c["step"], c["name"])),
        "images": entries,
    }
    write_atomic(directory / MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
    logger.info("kiosk pools: %d real and %d synthetic images of %d checkpoints at %d px in %s",
                len(real), len(synthetic), len(checkpoints), size, directory)
    return load_pools(directory)


def build_pools(services, checkpoint_paths: list[str] = (), per_label: int = DEFAULT_PER_LABEL, seed: int = 0,
                size: int | None = None, real_per_label: int | None = None,
                checkpoint_ids: list[int] = (), generate: bool = True, image_sets: list[str] | None = None) -> Pools:
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
        seed: Seed of the sampling of stored images (generation seeds come from ``secrets``).
        size: Presentation size; None: ``auto_size``.
        real_per_label: Real images per pathology (at most); None: as many as synthetic images per pathology.
        checkpoint_ids: Checkpoints already in the study database, by id.
        generate: Whether to generate missing images.
        image_sets: The public image sets the real images come from; None: every public set.

    Raises:
        PoolsError: If nothing is chosen, a named set is not public, no public set has real
            images, or a cell has no image.
    """
    if real_per_label is None:
        real_per_label = per_label * max(1, len(checkpoint_paths) + len(checkpoint_ids))
    if per_label < 1 or real_per_label < 1:
        raise PoolsError(f"per_label and real_per_label must be at least 1, got {per_label} and {real_per_label}")
    ids = list(checkpoint_ids)
    with services.db() as db:
        known = {row["id"]: row for row in checkpoint_store.list_checkpoints(db)}
        public = public_sets(db, image_sets)
    missing = [cid for cid in ids if cid not in known]
    if missing:
        raise PoolsError(f"no checkpoint with id {missing} in the study database")
    folders = list(checkpoint_paths) + [known[cid]["path"] for cid in ids if Path(known[cid]["path"]).is_dir()]
    if not folders and not ids:
        raise PoolsError("choose at least one checkpoint")
    if folders:
        ids += ensure_images(services, folders, per_label, seed, generate=generate)
    rng = random.Random(seed)
    with services.db() as db:
        synthetic = []
        for cid in dict.fromkeys(ids):
            for label in LABELS:
                rows = image_store.list_images(db, source="synthetic", label=label, checkpoint_id=cid)
                if not rows:
                    raise PoolsError(f"checkpoint {known.get(cid, {}).get('name', cid)} has no {label} image; "
                                     "generate some (drop --no-generate) or choose other checkpoints")
                synthetic += _sample(rows, per_label, rng)
        real = []
        names = [s["name"] for s in public]
        for label in LABELS:
            real += _sample(image_store.list_images(db, source="real", label=label, image_sets=names), real_per_label, rng)
    if not real:
        raise PoolsError(f"the public image set(s) {', '.join(names)} hold no real image; register some with "
                         "`python -m review.register --data DIR --set NAME --public`")
    return write_pools(default_pools_dir(services.config.data_dir), real, synthetic, size, public)


def public_sets(db, names: list[str] | None = None) -> list[dict]:
    """The image sets the kiosk may show: ``names`` (each must be public), or every public set.

    Raises:
        PoolsError: For an unknown or non-public named set, or when no set is public (saying how to make one).
    """
    try:
        chosen = image_set_store.resolve(db, names, public=True)
    except image_set_store.ImageSetError as error:
        raise PoolsError(f"{error}: the kiosk shows real images to the public and uses only sets flagged public") from error
    if not chosen:
        known = ", ".join(f"{s['name']} ({image_set_store.describe(s)})" for s in image_set_store.list_sets(db)) or "none"
        raise PoolsError(f"no image set may be shown publicly (sets: {known}), and the kiosk shows real images to the "
                         "public: register images you may show with `python -m review.register --data DIR --set NAME "
                         "--public` (the embedded demo's phantoms: `make demo-data`)")
    return chosen


def _sample(rows: list[dict], n: int, rng: random.Random) -> list[dict]:
    rows = sorted(rows, key=lambda row: row["sha256"])
    return rows if len(rows) <= n else sorted(rng.sample(rows, n), key=lambda row: row["sha256"])


def _reusable_files(directory: Path, size: int) -> dict[str, str]:
    """sha256 -> file of images the current manifest already presented at ``size``."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    transform = manifest.get("transform") or {}
    if manifest.get("format") != FORMAT or manifest.get("size") != size or transform.get("version") != TRANSFORM_VERSION:
        return {}  # presented by another transform: present again
    return {entry["sha256"]: entry["file"] for entry in manifest.get("images", [])
            if (directory / entry["file"]).is_file()}


def _present_one(directory: Path, row: dict, size: int) -> str:
    file = f"{secrets.token_urlsafe(12)}.png"
    try:
        data = present_file(row["path"], size)
    except (OSError, ValueError) as error:
        raise PoolsError(f"image {row['path']} could not be presented: {error}") from error
    write_atomic(directory / file, data)
    return file
