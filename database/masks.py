"""SQL for polyp masks (schema in ``database.schema``, migration 0004).

One mask per image, real or synthetic, keyed by the image's sha256: where the mask file lies, its
sha256, the label its colour says (colour-coded masks), the share of the frame it covers, where
it came from (``real`` file, ``augmented`` real mask, ``procedural`` blob, ``phantom`` exact
mask), how it was made (``mask_provenance``) and how the file is read (``reading``: colour map
and threshold).
"""

from __future__ import annotations

import json
import logging
import math

import sqlite_utils

from common.labels import validate_label
from database import images as image_store
from database.checks import require_choice, require_sha256

logger = logging.getLogger(__name__)

MASK_FIELDS: tuple[str, ...] = (
    "image_sha256", "mask_path", "mask_sha256", "mask_label", "area_fraction", "mask_source",
    "mask_provenance", "reading",
)
MASK_SOURCES: tuple[str, ...] = ("real", "augmented", "procedural", "phantom")
"""Where a mask came from: a real mask file, a reshaped real mask, a procedural blob, a phantom's exact mask."""


def add_mask(
    db: sqlite_utils.Database, *, image_sha256: str, mask_path: str, mask_sha256: str, area_fraction: float,
    mask_source: str, mask_label: str | None = None, mask_provenance: str | None = None, reading: dict | None = None,
) -> bool:
    """Store the mask of a stored image unless that image already has one.

    Returns:
        True if added, False if the image already had a mask (kept as it is).

    Raises:
        ValueError: If an argument is outside its allowed values (the message names it).
        sqlite3.IntegrityError: If no image with ``image_sha256`` is stored; nothing is written.
    """
    return add_masks(db, [{
        "image_sha256": image_sha256, "mask_path": mask_path, "mask_sha256": mask_sha256,
        "area_fraction": area_fraction, "mask_source": mask_source, "mask_label": mask_label,
        "mask_provenance": mask_provenance, "reading": reading,
    }]) == 1


def add_masks(db: sqlite_utils.Database, rows: list[dict]) -> int:
    """Store many masks, all or nothing; an image that already has a mask keeps it.

    Args:
        rows: Dicts with the keyword arguments of ``add_mask`` (optional ones may be left out).

    Returns:
        How many masks were newly stored.

    Raises:
        ValueError: If a row has unknown keys or a value outside its allowed values; the message
            names the row index. Nothing is written.
        sqlite3.IntegrityError: If a row's image is not stored; nothing is written.
    """
    prepared = [_mask_row(index, row) for index, row in enumerate(rows)]
    added = 0
    with db.atomic():
        for row in prepared:
            cursor = db.execute(
                "INSERT INTO masks (image_sha256, mask_path, mask_sha256, mask_label, area_fraction, mask_source,"
                " mask_provenance, reading) VALUES (:image_sha256, :mask_path, :mask_sha256, :mask_label,"
                " :area_fraction, :mask_source, :mask_provenance, :reading) ON CONFLICT(image_sha256) DO NOTHING",
                row,
            )
            if cursor.rowcount == 1:
                added += 1
                continue
            stored = get_mask(db, row["image_sha256"])
            if stored["mask_sha256"] != row["mask_sha256"]:
                logger.warning("image %s already has mask %s; keeping it, not %s", row["image_sha256"][:12],
                               stored["mask_path"], row["mask_path"])
    return added


def get_mask(db: sqlite_utils.Database, image_sha256: str) -> dict | None:
    """The mask row of one image (``reading`` decoded), or None if it has none."""
    require_sha256(image_sha256, "image_sha256")
    row = next(db.query("SELECT * FROM masks WHERE image_sha256 = ?", [image_sha256]), None)
    return None if row is None else _decode(row)


def list_masked_images(
    db: sqlite_utils.Database, *, source: str | None = None, label: str | None = None,
    checkpoint_id: int | None = None, mask_source: str | None = None,
) -> list[dict]:
    """Images that have a mask, each shaped as ``database.images.get_image`` plus the mask's columns.

    Args:
        source: ``real`` or ``synthetic``.
        label: ``AD`` or ``NonAD``.
        checkpoint_id: Only images made by this checkpoint.
        mask_source: Only masks from this source (one of ``MASK_SOURCES``).

    Returns:
        Rows ordered as ``database.images.list_images`` (source, label, path).

    Raises:
        ValueError: If a filter is not an allowed value.
    """
    where, params = "", []
    if mask_source is not None:
        require_choice("mask_source", mask_source, MASK_SOURCES)
        where, params = " WHERE mask_source = ?", [mask_source]
    masks = {row["image_sha256"]: _decode(row) for row in db.query(f"SELECT * FROM masks{where}", params)}
    images = image_store.list_images(db, source=source, label=label, checkpoint_id=checkpoint_id)
    return [{**image, **masks[image["sha256"]]} for image in images if image["sha256"] in masks]


def count_masks(db: sqlite_utils.Database) -> dict[str, int]:
    """How many masks each source holds, zeros included, e.g. ``{"real": 12, "augmented": 8, ...}``."""
    counts = {source: 0 for source in MASK_SOURCES}
    for row in db.query("SELECT mask_source, count(*) AS n FROM masks GROUP BY mask_source"):
        counts[row["mask_source"]] = row["n"]
    return counts


def _decode(row: dict) -> dict:
    row["reading"] = None if row["reading"] is None else json.loads(row["reading"])
    return row


def _mask_row(index: int, row: dict) -> dict:
    unknown = sorted(set(row) - set(MASK_FIELDS))
    if unknown:
        raise ValueError(f"mask row {index}: unknown keys {unknown}; expected {', '.join(MASK_FIELDS)}")
    try:
        require_sha256(row.get("image_sha256"), "image_sha256")
        require_sha256(row.get("mask_sha256"), "mask_sha256")
        if not isinstance(row.get("mask_path"), str) or not row["mask_path"]:
            raise ValueError(f"mask_path must be a non-empty string, got {row.get('mask_path')!r}")
        require_choice("mask_source", row.get("mask_source"), MASK_SOURCES)
        if row.get("mask_label") is not None:
            validate_label(row["mask_label"])
        area = row.get("area_fraction")
        if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area) or not 0 < area <= 1:
            raise ValueError(f"area_fraction must be a number in (0, 1] (an empty mask is refused), got {area!r}")
        provenance = row.get("mask_provenance")
        if provenance is not None and not isinstance(provenance, str):
            raise ValueError(f"mask_provenance must be a string or None, got {provenance!r}")
    except ValueError as error:
        raise ValueError(f"mask row {index}: {error}") from error
    reading = row.get("reading")
    return {
        "image_sha256": row["image_sha256"], "mask_path": row["mask_path"], "mask_sha256": row["mask_sha256"],
        "mask_label": row.get("mask_label"), "area_fraction": float(area), "mask_source": row["mask_source"],
        "mask_provenance": provenance, "reading": None if reading is None else json.dumps(reading, sort_keys=True),
    }
