"""SQL for images and their provenance: the sha256 of a file is its identity everywhere.

Writes run inside ``db.atomic()`` so a failure leaves nothing half-written; paths are only where
the file lies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from common.labels import LABELS, validate_label
from database import image_sets
from database.checks import require_choice, require_int, require_number, require_sha256, require_text

logger = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("real", "synthetic")

_SYNTHETIC_FIELDS: tuple[str, ...] = (
    "sha256", "label", "path", "width", "height", "checkpoint_id", "prompt", "negative_prompt",
    "seed", "scheduler", "steps", "guidance", "seconds",
)

_IMAGE_SELECT = """
    SELECT images.*,
           provenance.checkpoint_id, provenance.prompt, provenance.negative_prompt,
           provenance.seed, provenance.scheduler, provenance.steps, provenance.guidance,
           provenance.seconds, provenance.created_at AS generated_at,
           checkpoints.name AS checkpoint_name, checkpoints.step AS checkpoint_step,
           checkpoints.stage AS checkpoint_stage, checkpoints.path AS checkpoint_path,
           checkpoints.fingerprint AS checkpoint_fingerprint
    FROM images
    LEFT JOIN provenance ON provenance.image_sha256 = images.sha256
    LEFT JOIN checkpoints ON checkpoints.id = provenance.checkpoint_id
"""


def add_real_image(
    db: sqlite_utils.Database,
    *,
    sha256: str,
    label: str,
    path: str,
    width: int,
    height: int,
    origin: str | None = None,
    image_set: str = image_sets.DEFAULT_SET,
) -> bool:
    """Store a real image unless its sha256 is already stored, and put it into ``image_set``.

    Args:
        sha256: Hex sha256 of the file (64 lowercase hex characters).
        label: ``"AD"`` or ``"NonAD"``.
        path: Where the file lies.
        width: Width in pixels.
        height: Height in pixels.
        origin: Where it came from (e.g. the registered folder or CSV).
        image_set: The set it belongs to (``database.image_sets``); made clinical and not public
            if it does not exist. An image already stored joins the set too.

    Returns:
        True if a row was added, False if that sha256 was already stored.

    Raises:
        ValueError: If an argument is outside its allowed values (``ImageSetError`` for the set).
    """
    row = _image_row(sha256=sha256, source="real", label=label, path=path, width=width,
                     height=height, origin=origin)
    with db.atomic():
        image_sets.ensure_set(db, image_set)
        added = _insert_image(db, row)
        if added or _stored_source(db, sha256) == "real":
            image_sets.add_members(db, image_set, [sha256], origin)
        return added


def add_synthetic_image(
    db: sqlite_utils.Database,
    *,
    sha256: str,
    label: str,
    path: str,
    width: int,
    height: int,
    checkpoint_id: int,
    prompt: str,
    negative_prompt: str,
    seed: int,
    scheduler: str,
    steps: int,
    guidance: float,
    seconds: float,
) -> bool:
    """Store a generated image and its provenance in one transaction.

    Args: as the columns of ``images`` and ``provenance``; ``seconds`` is the generation time.

    Returns:
        True if added, False if that sha256 was already stored (nothing is written then).

    Raises:
        ValueError: If an argument is outside its allowed values.
        sqlite3.IntegrityError: If ``checkpoint_id`` names no checkpoint; nothing is written.
    """
    row = {
        "sha256": sha256, "label": label, "path": path, "width": width, "height": height,
        "checkpoint_id": checkpoint_id, "prompt": prompt, "negative_prompt": negative_prompt,
        "seed": seed, "scheduler": scheduler, "steps": steps, "guidance": guidance,
        "seconds": seconds,
    }
    return add_synthetic_images(db, [row]) == 1


def add_synthetic_images(db: sqlite_utils.Database, rows: list[dict]) -> int:
    """Store many generated images with their provenance, all or nothing.

    Args:
        rows: Dicts with exactly the keyword arguments of ``add_synthetic_image``.

    Returns:
        How many images were newly stored (already-stored sha256s are skipped).

    Raises:
        ValueError: If a row has missing or unknown keys or a value outside its allowed values;
            the message names the row index. Nothing is written.
        sqlite3.IntegrityError: If a ``checkpoint_id`` names no checkpoint; nothing is written.
    """
    prepared = [_synthetic_rows(index, row) for index, row in enumerate(rows)]
    added = 0
    with db.atomic():
        for image, provenance in prepared:
            if _insert_image(db, image):
                db.execute(
                    "INSERT INTO provenance (image_sha256, checkpoint_id, prompt, negative_prompt,"
                    " seed, scheduler, steps, guidance, width, height, seconds) VALUES"
                    " (:image_sha256, :checkpoint_id, :prompt, :negative_prompt, :seed,"
                    " :scheduler, :steps, :guidance, :width, :height, :seconds)",
                    provenance,
                )
                added += 1
    return added


def get_image(db: sqlite_utils.Database, sha256: str) -> dict | None:
    """Return one image with its provenance and checkpoint, or None if not stored.

    The provenance keys (``checkpoint_id``, ``prompt``, ..., ``checkpoint_step``,
    ``checkpoint_stage``, ``checkpoint_path``) are present for every image and None for real
    ones.
    """
    require_sha256(sha256)
    return next(db.query(f"{_IMAGE_SELECT} WHERE images.sha256 = ?", [sha256]), None)


def list_images(
    db: sqlite_utils.Database,
    *,
    source: str | None = None,
    label: str | None = None,
    checkpoint_id: int | None = None,
    image_sets: Sequence[str] | None = None,
) -> list[dict]:
    """Return images (shaped as ``get_image``) matching every filter given, by source, label, path.

    Args:
        image_sets: Only images that belong to one of these sets (by name; real images only).

    Raises:
        ValueError: If ``source`` or ``label`` is not an allowed value.
    """
    clauses: list[str] = []
    params: list[Any] = []
    if source is not None:
        require_choice("source", source, SOURCES)
        clauses.append("images.source = ?")
        params.append(source)
    if label is not None:
        clauses.append("images.label = ?")
        params.append(validate_label(label))
    if checkpoint_id is not None:
        clauses.append("provenance.checkpoint_id = ?")
        params.append(checkpoint_id)
    if image_sets is not None:
        names = list(image_sets)
        clauses.append("images.sha256 IN (SELECT image_sha256 FROM image_set_members JOIN image_sets"
                       " ON image_sets.id = image_set_members.set_id"
                       f" WHERE image_sets.name IN ({', '.join('?' * len(names)) or 'NULL'}))")
        params += names
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    order = " ORDER BY images.source, images.label, images.path, images.sha256"
    return list(db.query(_IMAGE_SELECT + where + order, params))


def count_images(db: sqlite_utils.Database) -> dict[str, dict[str, int]]:
    """Return image counts by source and label, zeros included.

    Example: ``{"real": {"AD": 12, "NonAD": 12}, "synthetic": {"AD": 0, "NonAD": 0}}``.
    """
    counts = {source: {label: 0 for label in LABELS} for source in SOURCES}
    rows = db.query("SELECT source, label, count(*) AS n FROM images GROUP BY source, label")
    for row in rows:
        counts[row["source"]][row["label"]] = row["n"]
    return counts


def _stored_source(db: sqlite_utils.Database, sha256: str) -> str | None:
    row = next(db.query("SELECT source FROM images WHERE sha256 = ?", [sha256]), None)
    return row["source"] if row else None


def _insert_image(db: sqlite_utils.Database, row: dict) -> bool:
    # ON CONFLICT DO NOTHING (not INSERT OR IGNORE, which would also swallow CHECK failures).
    cursor = db.execute(
        "INSERT INTO images (sha256, source, label, path, width, height, origin) VALUES"
        " (:sha256, :source, :label, :path, :width, :height, :origin)"
        " ON CONFLICT(sha256) DO NOTHING",
        row,
    )
    if cursor.rowcount == 1:
        return True
    stored = next(db.query("SELECT source, label, path FROM images WHERE sha256 = ?",
                           [row["sha256"]]))
    if (stored["source"], stored["label"]) != (row["source"], row["label"]):
        logger.warning(
            "%s (%s %s) has the same sha256 as the stored %s (%s %s); keeping the stored row",
            row["path"], row["source"], row["label"],
            stored["path"], stored["source"], stored["label"],
        )
    return False


def _image_row(
    *, sha256: str, source: str, label: str, path: str, width: int, height: int,
    origin: str | None,
) -> dict:
    require_sha256(sha256)
    require_choice("source", source, SOURCES)
    validate_label(label)
    require_text("path", path)
    if origin is not None:
        require_text("origin", origin)
    return {
        "sha256": sha256, "source": source, "label": label, "path": path,
        "width": require_int("width", width, minimum=1),
        "height": require_int("height", height, minimum=1),
        "origin": origin,
    }


def _synthetic_rows(index: int, row: dict) -> tuple[dict, dict]:
    missing = [key for key in _SYNTHETIC_FIELDS if key not in row]
    unknown = sorted(set(row) - set(_SYNTHETIC_FIELDS))
    if missing or unknown:
        raise ValueError(
            f"synthetic image row {index}: missing keys {missing}, unknown keys {unknown}; "
            f"expected exactly {', '.join(_SYNTHETIC_FIELDS)}"
        )
    try:
        image = _image_row(sha256=row["sha256"], source="synthetic", label=row["label"],
                           path=row["path"], width=row["width"], height=row["height"], origin=None)
        for key in ("prompt", "negative_prompt"):
            if not isinstance(row[key], str):
                raise ValueError(f"{key} must be a string, got {row[key]!r}")
        require_text("scheduler", row["scheduler"])
        provenance = {
            "image_sha256": image["sha256"],
            "checkpoint_id": require_int("checkpoint_id", row["checkpoint_id"], minimum=1),
            "prompt": row["prompt"],
            "negative_prompt": row["negative_prompt"],
            "seed": require_int("seed", row["seed"]),
            "scheduler": row["scheduler"],
            "steps": require_int("steps", row["steps"], minimum=1),
            "guidance": require_number("guidance", row["guidance"]),
            "width": image["width"],
            "height": image["height"],
            "seconds": require_number("seconds", row["seconds"], minimum=0.0),
        }
    except ValueError as error:
        raise ValueError(f"synthetic image row {index}: {error}") from error
    return image, provenance

