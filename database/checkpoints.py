"""SQL for checkpoints: anything that generates, keyed by its path and weights fingerprint."""

from __future__ import annotations

import json
import logging

import sqlite_utils

from database.checks import require_choice, require_int, require_text

logger = logging.getLogger(__name__)

CHECKPOINT_KINDS: tuple[str, ...] = ("pipeline", "training-output")
STAGES: tuple[int, ...] = (1, 2)
_KEEP_IF_NONE = ("base_path", "metadata")  # upsert_checkpoint leaves these alone when None


def upsert_checkpoint(
    db: sqlite_utils.Database,
    *,
    path: str,
    name: str,
    step: int,
    stage: int | None,
    kind: str,
    fingerprint: str,
    base_path: str | None = None,
    metadata: dict | None = None,
) -> int:
    """Record a checkpoint, keyed by its path and weights fingerprint; update it if already known.

    A folder whose weights changed (retrained in place) becomes a new row, so images made from
    the old weights keep pointing at the old weights' row.

    Args:
        path: Where the diffusers folder lies; with ``fingerprint``, the key.
        name: Display name.
        step: Training step (0 for a pipeline that was not trained here).
        stage: 1 (appearance), 2 (pathology) or None.
        kind: ``"pipeline"`` or ``"training-output"``.
        fingerprint: Fingerprint of the weights.
        base_path: For a training output, the pipeline it was trained on.
        metadata: Anything else, stored as JSON.

    On update, every field given replaces the stored one; ``base_path`` and ``metadata`` passed
    as None keep their stored values.

    Returns:
        The checkpoint's id (unchanged on update).

    Raises:
        ValueError: If an argument is outside its allowed values.
    """
    require_text("path", path)
    values = _checkpoint_values(name=name, step=step, stage=stage, kind=kind, fingerprint=fingerprint,
                                base_path=base_path, metadata=metadata)
    with db.atomic():
        existing = next(db.query("SELECT * FROM checkpoints WHERE path = ? AND fingerprint = ?", [path, fingerprint]), None)
        if existing is None:
            if next(db.query("SELECT 1 FROM checkpoints WHERE path = ?", [path]), None):
                logger.warning("checkpoint %s: new weights (fingerprint %s); recorded as a new checkpoint row", path, fingerprint)
            cursor = db.execute(
                "INSERT INTO checkpoints (path, name, step, stage, kind, fingerprint, base_path,"
                " metadata) VALUES (:path, :name, :step, :stage, :kind, :fingerprint,"
                " :base_path, :metadata)",
                {"path": path, **values},
            )
            return int(cursor.lastrowid)
        # base_path and metadata left as None keep what is stored: re-discovering a folder
        # must not erase what an earlier call recorded.
        changed = {
            key: value
            for key, value in values.items()
            if existing[key] != value and not (key in _KEEP_IF_NONE and value is None)
        }
        if changed:
            assignments = ", ".join(f"{key} = :{key}" for key in changed)
            db.execute(f"UPDATE checkpoints SET {assignments} WHERE id = :id", {**changed, "id": existing["id"]})
        return int(existing["id"])


def _checkpoint_values(*, name, step, stage, kind, fingerprint, base_path, metadata) -> dict:
    """The checked columns of a checkpoint row (all but its path)."""
    require_text("name", name)
    step = require_int("step", step, minimum=0)
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES} or None, got {stage!r}")
    require_choice("kind", kind, CHECKPOINT_KINDS)
    require_text("fingerprint", fingerprint)
    return {
        "name": name, "step": step, "stage": stage, "kind": kind, "fingerprint": fingerprint,
        "base_path": base_path,
        "metadata": None if metadata is None else json.dumps(metadata, sort_keys=True),
    }


def list_checkpoints(db: sqlite_utils.Database) -> list[dict]:
    """Return all checkpoints ordered by step, then name, with ``metadata`` decoded."""
    rows = db.query("SELECT * FROM checkpoints ORDER BY step, name, id")
    return [_decode_checkpoint(row) for row in rows]


def _decode_checkpoint(row: dict) -> dict:
    row["metadata"] = None if row["metadata"] is None else json.loads(row["metadata"])
    return row

