"""The study database: the only module that speaks SQL.

A real SQLite file opened through sqlite-utils. Every function takes a ``Database`` made by
``open_db``; writes run inside ``db.atomic()`` so a failure leaves nothing half-written. The
sha256 of an image file is its identity everywhere (``images.sha256``); paths are only where
the file lies.

A ``sqlite3`` connection belongs to the thread that opened it, so callers open a database per
call or per thread; ``open_db`` is cheap once the migrations have been applied.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import re
import sqlite3
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils import Migrations

from generation.labels import LABELS, validate_label

logger = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("real", "synthetic")
CHECKPOINT_KINDS: tuple[str, ...] = ("pipeline", "training-output")
STAGES: tuple[int, ...] = (1, 2)
BUSY_TIMEOUT_MS = 5000
_KEEP_IF_NONE = ("base_path", "metadata")  # upsert_checkpoint leaves these alone when None

_SHA256 = re.compile(r"[0-9a-f]{64}")
_NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"

MIGRATIONS = Migrations("polypturing")
"""The schema, one migration per change; ``open_db`` applies the pending ones."""


@MIGRATIONS(name="0001_images_checkpoints_provenance")
def _create_core_tables(db: sqlite_utils.Database) -> None:
    # Written as SQL rather than table.create() because the CHECK constraints and foreign keys
    # are the point: the database itself refuses an unknown label, source or checkpoint.
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE checkpoints (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL,
            name TEXT NOT NULL,
            step INTEGER NOT NULL CHECK (step >= 0),
            stage INTEGER NULL CHECK (stage IN (1, 2)),
            kind TEXT NOT NULL CHECK (kind IN ('pipeline', 'training-output')),
            fingerprint TEXT NOT NULL CHECK (length(fingerprint) > 0),
            base_path TEXT NULL,
            metadata TEXT NULL CHECK (metadata IS NULL OR json_valid(metadata)),
            discovered_at TEXT NOT NULL DEFAULT {_NOW},
            UNIQUE (path, fingerprint)
        ){strict}""")
    db.execute(f"""
        CREATE TABLE images (
            sha256 TEXT PRIMARY KEY
                CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
            source TEXT NOT NULL CHECK (source IN ('real', 'synthetic')),
            label TEXT NOT NULL CHECK (label IN ('AD', 'NonAD')),
            path TEXT NOT NULL,
            width INTEGER NOT NULL CHECK (width > 0),
            height INTEGER NOT NULL CHECK (height > 0),
            origin TEXT NULL,
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute(f"""
        CREATE TABLE provenance (
            image_sha256 TEXT PRIMARY KEY REFERENCES images(sha256),
            checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
            prompt TEXT NOT NULL,
            negative_prompt TEXT NOT NULL,
            seed INTEGER NOT NULL,
            scheduler TEXT NOT NULL,
            steps INTEGER NOT NULL CHECK (steps > 0),
            guidance REAL NOT NULL,
            width INTEGER NOT NULL CHECK (width > 0),
            height INTEGER NOT NULL CHECK (height > 0),
            seconds REAL NOT NULL CHECK (seconds >= 0),
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute("CREATE INDEX images_source_label ON images(source, label)")
    db.execute("CREATE INDEX provenance_checkpoint ON provenance(checkpoint_id)")


# Later migrations each go in their own @MIGRATIONS function below (never edit an applied one).
# The review tables' functions live in review/study_store.py (this module grew past one noun).


@MIGRATIONS(name="0002_review_studies_raters_trials_ratings")
def _create_review_tables(db: sqlite_utils.Database) -> None:
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE raters (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
            role TEXT NOT NULL CHECK (role IN ('rater', 'admin')),
            password_hash TEXT NULL,
            specialty TEXT NULL,
            years_practice INTEGER NULL CHECK (years_practice IS NULL OR years_practice BETWEEN 0 AND 70),
            colonoscopies TEXT NULL,
            profile_at TEXT NULL,
            simulated INTEGER NOT NULL DEFAULT 0 CHECK (simulated IN (0, 1)),
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    # Tokens are stored as their sha256: a copy of the database signs nobody in.
    db.execute(f"""
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            created_at TEXT NOT NULL DEFAULT {_NOW},
            expires_at TEXT NOT NULL
        ){strict}""")
    db.execute(f"""
        CREATE TABLE studies (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
            mode TEXT NOT NULL CHECK (mode IN ('single', 'pair')),
            design TEXT NOT NULL CHECK (json_valid(design)),
            presentation TEXT NOT NULL CHECK (json_valid(presentation)),
            status TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'open', 'closed')),
            audit TEXT NULL CHECK (audit IS NULL OR json_valid(audit)),
            audit_override TEXT NULL CHECK (audit_override IS NULL OR json_valid(audit_override)),
            simulated INTEGER NOT NULL DEFAULT 0 CHECK (simulated IN (0, 1)),
            created_by INTEGER NULL REFERENCES raters(id),
            created_at TEXT NOT NULL DEFAULT {_NOW},
            opened_at TEXT NULL,
            closed_at TEXT NULL
        ){strict}""")
    db.execute(f"""
        CREATE TABLE invitations (
            token_hash TEXT PRIMARY KEY,
            study_id INTEGER NOT NULL REFERENCES studies(id),
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            created_at TEXT NOT NULL DEFAULT {_NOW},
            expires_at TEXT NOT NULL
        ){strict}""")
    db.execute(f"""
        CREATE TABLE study_raters (
            study_id INTEGER NOT NULL REFERENCES studies(id),
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            PRIMARY KEY (study_id, rater_id)
        ){strict}""")
    # Every image a study shows, real, synthetic or attention check, under a random token; the
    # presented file is what the browser receives. Attention images are not in `images`.
    db.execute(f"""
        CREATE TABLE study_images (
            study_id INTEGER NOT NULL REFERENCES studies(id),
            sha256 TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('real', 'synthetic', 'attention')),
            label TEXT NULL CHECK (label IS NULL OR label IN ('AD', 'NonAD')),
            checkpoint_id INTEGER NULL REFERENCES checkpoints(id),
            source_path TEXT NOT NULL,
            token TEXT NOT NULL UNIQUE,
            presented_path TEXT NOT NULL,
            PRIMARY KEY (study_id, sha256)
        ){strict}""")
    db.execute(f"""
        CREATE TABLE trials (
            id INTEGER PRIMARY KEY,
            study_id INTEGER NOT NULL REFERENCES studies(id),
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            position INTEGER NOT NULL CHECK (position >= 0),
            kind TEXT NOT NULL CHECK (kind IN ('normal', 'repeat', 'attention')),
            image_left TEXT NOT NULL,
            image_right TEXT NULL,
            synthetic_side TEXT NULL CHECK (synthetic_side IS NULL OR synthetic_side IN ('left', 'right')),
            repeat_of INTEGER NULL,
            cell TEXT NOT NULL,
            shown_at TEXT NULL,
            UNIQUE (study_id, rater_id, position),
            FOREIGN KEY (study_id, image_left) REFERENCES study_images(study_id, sha256),
            FOREIGN KEY (study_id, image_right) REFERENCES study_images(study_id, sha256)
        ){strict}""")
    db.execute(f"""
        CREATE TABLE ratings (
            id INTEGER PRIMARY KEY,
            trial_id INTEGER NOT NULL UNIQUE REFERENCES trials(id),
            rater_id INTEGER NOT NULL REFERENCES raters(id),
            idempotency_key TEXT NOT NULL UNIQUE CHECK (length(idempotency_key) BETWEEN 8 AND 128),
            real_or_synthetic TEXT NULL CHECK (real_or_synthetic IS NULL OR real_or_synthetic IN ('real', 'synthetic')),
            source_confidence INTEGER NULL CHECK (source_confidence IS NULL OR source_confidence BETWEEN 1 AND 5),
            realism INTEGER NULL CHECK (realism IS NULL OR realism BETWEEN 1 AND 5),
            pathology TEXT NULL CHECK (pathology IS NULL OR pathology IN ('AD', 'NonAD', 'cannot tell')),
            pathology_confidence INTEGER NULL CHECK (pathology_confidence IS NULL OR pathology_confidence BETWEEN 1 AND 5),
            synthetic_choice TEXT NULL CHECK (synthetic_choice IS NULL OR synthetic_choice IN ('left', 'right')),
            choice_confidence INTEGER NULL CHECK (choice_confidence IS NULL OR choice_confidence BETWEEN 1 AND 5),
            pathology_left TEXT NULL CHECK (pathology_left IS NULL OR pathology_left IN ('AD', 'NonAD', 'cannot tell')),
            pathology_right TEXT NULL CHECK (pathology_right IS NULL OR pathology_right IN ('AD', 'NonAD', 'cannot tell')),
            artifacts TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(artifacts)),
            comment TEXT NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
            response_ms INTEGER NULL CHECK (response_ms IS NULL OR response_ms >= 0),
            submitted_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute("CREATE INDEX trials_rater ON trials(study_id, rater_id, position)")
    db.execute("CREATE INDEX ratings_rater ON ratings(rater_id)")


@MIGRATIONS(name="0003_metric_results")
def _create_metric_results(db: sqlite_utils.Database) -> None:
    # One row per (checkpoint, scope, metric, extractor, preprocessing): a refresh replaces it.
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE metric_results (
            id INTEGER PRIMARY KEY,
            checkpoint_id INTEGER NOT NULL REFERENCES checkpoints(id),
            scope TEXT NOT NULL CHECK (scope IN ('AD', 'NonAD', 'pooled')),
            metric TEXT NOT NULL CHECK (length(metric) > 0),
            value REAL NULL,
            ci_low REAL NULL,
            ci_high REAL NULL,
            extractor TEXT NOT NULL,
            preprocessing TEXT NOT NULL,
            n_real INTEGER NOT NULL CHECK (n_real >= 0),
            n_fake INTEGER NOT NULL CHECK (n_fake >= 0),
            details TEXT NULL CHECK (details IS NULL OR json_valid(details)),
            computed_at TEXT NOT NULL DEFAULT {_NOW},
            UNIQUE (checkpoint_id, scope, metric, extractor, preprocessing)
        ){strict}""")


@MIGRATIONS(name="0004_masks")
def _create_masks(db: sqlite_utils.Database) -> None:
    # One polyp mask per image (real or synthetic); SQL in review/mask_store.py. `reading` holds
    # how the file was read (colour map, threshold) so a colour-coded or lossy mask reads the same again.
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE masks (
            image_sha256 TEXT PRIMARY KEY REFERENCES images(sha256),
            mask_path TEXT NOT NULL CHECK (length(mask_path) > 0),
            mask_sha256 TEXT NOT NULL
                CHECK (length(mask_sha256) = 64 AND mask_sha256 NOT GLOB '*[^0-9a-f]*'),
            mask_label TEXT NULL CHECK (mask_label IS NULL OR mask_label IN ('AD', 'NonAD')),
            area_fraction REAL NOT NULL CHECK (area_fraction > 0 AND area_fraction <= 1),
            mask_source TEXT NOT NULL CHECK (mask_source IN ('real', 'augmented', 'procedural', 'phantom')),
            mask_provenance TEXT NULL,
            reading TEXT NULL CHECK (reading IS NULL OR json_valid(reading)),
            created_at TEXT NOT NULL DEFAULT {_NOW}
        ){strict}""")
    db.execute("CREATE INDEX masks_source ON masks(mask_source)")


@MIGRATIONS(name="0005_rating_mask_fit")
def _add_rating_mask_fit(db: sqlite_utils.Database) -> None:
    # Studies that show a polyp mask's outline ask whether it fits the lesion (review.design show_masks).
    db.execute("ALTER TABLE ratings ADD COLUMN mask_fit TEXT NULL"
               " CHECK (mask_fit IS NULL OR mask_fit IN ('fits', 'partly', 'does not fit'))")


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the study database and bring its schema up to date.

    Args:
        path: A file path (its parent folder is created) or ``":memory:"`` for tests.

    Returns:
        A ``Database`` with foreign keys on, a 5 s busy timeout and, for files, WAL journaling.
        It may only be used in the thread that called ``open_db``.

    Raises:
        sqlite3.Error: If the file cannot be opened as a SQLite database.
    """
    return open_database(path, MIGRATIONS)


def open_database(path: str | Path, migrations: Migrations) -> sqlite_utils.Database:
    """Open a SQLite file (or ``":memory:"``) the project's way and apply ``migrations``' pending steps.

    Shared by the study database (``open_db``) and the kiosk's own (``review.kiosk_store``).

    Raises:
        sqlite3.Error: If the file cannot be opened as a SQLite database.
    """
    if str(path) == ":memory:":
        db = sqlite_utils.Database(memory=True)
    else:
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite_utils.Database(file)
    try:
        # Per connection, and outside any transaction (SQLite ignores foreign_keys inside one).
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        if not db.memory:
            db.enable_wal()  # persistent in the file: a no-op after the first open
        if migrations.pending(db):
            _apply_migrations(db, migrations)
    except BaseException:
        db.close()
        raise
    return db


def _apply_migrations(db: sqlite_utils.Database, migrations: Migrations) -> None:
    try:
        migrations.apply(db)
    except sqlite3.DatabaseError:
        # Another process may have applied the same migrations between our check and our write.
        if migrations.pending(db):
            raise
    logger.info("%s schema at %s", migrations.name, migrations.applied(db)[-1].name)


# ---------------------------------------------------------------------------------------------
# Checkpoints


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
    _require_text("path", path)
    _require_text("name", name)
    step = _require_int("step", step, minimum=0)
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES} or None, got {stage!r}")
    _require_choice("kind", kind, CHECKPOINT_KINDS)
    _require_text("fingerprint", fingerprint)
    values = {
        "name": name, "step": step, "stage": stage, "kind": kind, "fingerprint": fingerprint,
        "base_path": base_path,
        "metadata": None if metadata is None else json.dumps(metadata, sort_keys=True),
    }
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
            db.execute(
                f"UPDATE checkpoints SET {assignments} WHERE id = :id",
                {**changed, "id": existing["id"]},
            )
        return int(existing["id"])


def list_checkpoints(db: sqlite_utils.Database) -> list[dict]:
    """Return all checkpoints ordered by step, then name, with ``metadata`` decoded."""
    rows = db.query("SELECT * FROM checkpoints ORDER BY step, name, id")
    return [_decode_checkpoint(row) for row in rows]


def _decode_checkpoint(row: dict) -> dict:
    row["metadata"] = None if row["metadata"] is None else json.loads(row["metadata"])
    return row


# ---------------------------------------------------------------------------------------------
# Images


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
) -> bool:
    """Store a real image unless its sha256 is already stored.

    Args:
        sha256: Hex sha256 of the file (64 lowercase hex characters).
        label: ``"AD"`` or ``"NonAD"``.
        path: Where the file lies.
        width: Width in pixels.
        height: Height in pixels.
        origin: Where it came from (e.g. the registered folder or CSV).

    Returns:
        True if a row was added, False if that sha256 was already stored.

    Raises:
        ValueError: If an argument is outside its allowed values.
    """
    row = _image_row(sha256=sha256, source="real", label=label, path=path, width=width,
                     height=height, origin=origin)
    with db.atomic():
        return _insert_image(db, row)


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
    _require_sha256(sha256)
    return next(db.query(f"{_IMAGE_SELECT} WHERE images.sha256 = ?", [sha256]), None)


def list_images(
    db: sqlite_utils.Database,
    *,
    source: str | None = None,
    label: str | None = None,
    checkpoint_id: int | None = None,
) -> list[dict]:
    """Return images (shaped as ``get_image``) matching every filter given, by source, label, path.

    Raises:
        ValueError: If ``source`` or ``label`` is not an allowed value.
    """
    clauses: list[str] = []
    params: list[Any] = []
    if source is not None:
        _require_choice("source", source, SOURCES)
        clauses.append("images.source = ?")
        params.append(source)
    if label is not None:
        clauses.append("images.label = ?")
        params.append(validate_label(label))
    if checkpoint_id is not None:
        clauses.append("provenance.checkpoint_id = ?")
        params.append(checkpoint_id)
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
    _require_sha256(sha256)
    _require_choice("source", source, SOURCES)
    validate_label(label)
    _require_text("path", path)
    if origin is not None:
        _require_text("origin", origin)
    return {
        "sha256": sha256, "source": source, "label": label, "path": path,
        "width": _require_int("width", width, minimum=1),
        "height": _require_int("height", height, minimum=1),
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
        _require_text("scheduler", row["scheduler"])
        provenance = {
            "image_sha256": image["sha256"],
            "checkpoint_id": _require_int("checkpoint_id", row["checkpoint_id"], minimum=1),
            "prompt": row["prompt"],
            "negative_prompt": row["negative_prompt"],
            "seed": _require_int("seed", row["seed"]),
            "scheduler": row["scheduler"],
            "steps": _require_int("steps", row["steps"], minimum=1),
            "guidance": _require_number("guidance", row["guidance"]),
            "width": image["width"],
            "height": image["height"],
            "seconds": _require_number("seconds", row["seconds"], minimum=0.0),
        }
    except ValueError as error:
        raise ValueError(f"synthetic image row {index}: {error}") from error
    return image, provenance


# ---------------------------------------------------------------------------------------------
# Boundary checks: each message names the argument, the value received and what is allowed.


def _require_sha256(value: object) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ValueError(f"sha256 must be 64 lowercase hex characters, got {value!r}")


def _require_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _require_text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")


def _require_int(name: str, value: object, minimum: int | None = None) -> int:
    # numbers.Integral also admits numpy integers, which sqlite3 cannot bind: return a plain int.
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{name} must fit in a signed 64-bit integer, got {value!r}")
    return int(value)


def _require_number(name: str, value: object, minimum: float | None = None) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)
