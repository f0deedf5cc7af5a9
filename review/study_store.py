"""SQL for studies, raters, sessions, invitations, trials and ratings (schema in ``review.store``).

Like ``review.store``, every function takes a ``Database`` from ``review.store.open_db`` and
writes inside ``db.atomic()``. Nothing here knows about HTTP or Gradio; ``review.studies``
holds the rules (who may do what) and calls these functions.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

import sqlite_utils

from review.auth import now_utc, stamp

RATING_FIELDS: tuple[str, ...] = (
    "real_or_synthetic", "source_confidence", "realism", "pathology", "pathology_confidence",
    "synthetic_choice", "choice_confidence", "pathology_left", "pathology_right", "artifacts",
    "comment", "response_ms", "mask_fit",
)


class DuplicateName(ValueError):
    """A username or study name that is already taken."""


# ---------------------------------------------------------------------------------------------
# Raters and sessions


def create_rater(
    db: sqlite_utils.Database, username: str, role: str = "rater", password_hash: str | None = None,
    simulated: bool = False,
) -> int:
    """Add a rater (or admin) and return its id.

    Raises:
        DuplicateName: If the username is taken.
        sqlite3.IntegrityError: If ``role`` is not rater or admin, or the name is empty or too long.
    """
    try:
        with db.atomic():
            cursor = db.execute(
                "INSERT INTO raters (username, role, password_hash, simulated) VALUES (?, ?, ?, ?)",
                [username, role, password_hash, int(simulated)],
            )
    except sqlite3.IntegrityError as error:
        if "UNIQUE" in str(error):
            raise DuplicateName(f"username {username!r} is already taken") from error
        raise
    return int(cursor.lastrowid)


def get_rater(db: sqlite_utils.Database, rater_id: int) -> dict | None:
    return next(db.query("SELECT * FROM raters WHERE id = ?", [rater_id]), None)


def get_rater_by_username(db: sqlite_utils.Database, username: str) -> dict | None:
    return next(db.query("SELECT * FROM raters WHERE username = ?", [username]), None)


def list_raters(db: sqlite_utils.Database) -> list[dict]:
    return list(db.query("SELECT * FROM raters ORDER BY username"))


def set_password_hash(db: sqlite_utils.Database, rater_id: int, password_hash: str) -> None:
    with db.atomic():
        db.execute("UPDATE raters SET password_hash = ? WHERE id = ?", [password_hash, rater_id])


def set_profile(
    db: sqlite_utils.Database, rater_id: int, specialty: str, years_practice: int, colonoscopies: str,
) -> None:
    """Store the rater's background (asked once, kept for stratified analysis)."""
    with db.atomic():
        db.execute(
            "UPDATE raters SET specialty = ?, years_practice = ?, colonoscopies = ?, profile_at = ?"
            " WHERE id = ?",
            [specialty, years_practice, colonoscopies, stamp(now_utc()), rater_id],
        )


def add_session(db: sqlite_utils.Database, token_hash: str, rater_id: int, expires_at: str) -> None:
    with db.atomic():
        db.execute("INSERT INTO sessions (token_hash, rater_id, expires_at) VALUES (?, ?, ?)",
                   [token_hash, rater_id, expires_at])


def session_rater(db: sqlite_utils.Database, token_hash: str) -> dict | None:
    """The rater a live (unexpired) session belongs to, or None."""
    return next(db.query(
        "SELECT raters.* FROM sessions JOIN raters ON raters.id = sessions.rater_id"
        " WHERE sessions.token_hash = ? AND sessions.expires_at > ?",
        [token_hash, stamp(now_utc())],
    ), None)


def add_invitation(db: sqlite_utils.Database, token_hash: str, study_id: int, rater_id: int,
                   expires_at: str) -> None:
    with db.atomic():
        db.execute(
            "INSERT INTO invitations (token_hash, study_id, rater_id, expires_at) VALUES (?, ?, ?, ?)",
            [token_hash, study_id, rater_id, expires_at],
        )


def get_invitation(db: sqlite_utils.Database, token_hash: str) -> dict | None:
    return next(db.query("SELECT * FROM invitations WHERE token_hash = ?", [token_hash]), None)


# ---------------------------------------------------------------------------------------------
# Studies


def create_study(
    db: sqlite_utils.Database, *, name: str, mode: str, design: dict, presentation: dict,
    created_by: int | None, simulated: bool, rater_ids: Iterable[int], images: list[dict],
    trials: list[dict],
) -> int:
    """Store a study with its raters, presented images and every trial, all or nothing.

    Args:
        images: Rows of ``study_images`` without ``study_id``.
        trials: Rows of ``trials`` without ``study_id``.

    Raises:
        DuplicateName: If a study of that name exists.
    """
    try:
        with db.atomic():
            cursor = db.execute(
                "INSERT INTO studies (name, mode, design, presentation, created_by, simulated)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [name, mode, json.dumps(design, sort_keys=True),
                 json.dumps(presentation, sort_keys=True), created_by, int(simulated)],
            )
            study_id = int(cursor.lastrowid)
            db.conn.executemany("INSERT INTO study_raters (study_id, rater_id) VALUES (?, ?)",
                           [(study_id, rater) for rater in rater_ids])
            db.conn.executemany(
                "INSERT INTO study_images (study_id, sha256, role, label, checkpoint_id, source_path,"
                " token, presented_path) VALUES (:study_id, :sha256, :role, :label, :checkpoint_id,"
                " :source_path, :token, :presented_path)",
                [{**row, "study_id": study_id} for row in images],
            )
            db.conn.executemany(
                "INSERT INTO trials (study_id, rater_id, position, kind, image_left, image_right,"
                " synthetic_side, repeat_of, cell) VALUES (:study_id, :rater_id, :position, :kind,"
                " :image_left, :image_right, :synthetic_side, :repeat_of, :cell)",
                [{**row, "study_id": study_id} for row in trials],
            )
    except sqlite3.IntegrityError as error:
        if "studies.name" in str(error):
            raise DuplicateName(f"a study named {name!r} already exists; choose another name") from error
        raise
    return study_id


def get_study(db: sqlite_utils.Database, study_id: int) -> dict | None:
    row = next(db.query("SELECT * FROM studies WHERE id = ?", [study_id]), None)
    return None if row is None else _decode_study(row)


def list_studies(db: sqlite_utils.Database) -> list[dict]:
    return [_decode_study(row) for row in db.query("SELECT * FROM studies ORDER BY id")]


def studies_for_rater(db: sqlite_utils.Database, rater_id: int) -> list[dict]:
    rows = db.query(
        "SELECT studies.* FROM studies JOIN study_raters ON study_raters.study_id = studies.id"
        " WHERE study_raters.rater_id = ? ORDER BY studies.id", [rater_id])
    return [_decode_study(row) for row in rows]


def is_study_rater(db: sqlite_utils.Database, study_id: int, rater_id: int) -> bool:
    return next(db.query("SELECT 1 FROM study_raters WHERE study_id = ? AND rater_id = ?",
                         [study_id, rater_id]), None) is not None


def set_study_status(db: sqlite_utils.Database, study_id: int, status: str) -> None:
    column = {"open": "opened_at", "closed": "closed_at"}.get(status)
    with db.atomic():
        if column:
            db.execute(f"UPDATE studies SET status = ?, {column} = ? WHERE id = ?",
                       [status, stamp(now_utc()), study_id])
        else:
            db.execute("UPDATE studies SET status = ? WHERE id = ?", [status, study_id])


def set_study_audit(db: sqlite_utils.Database, study_id: int, audit: dict,
                    override: dict | None = None) -> None:
    with db.atomic():
        db.execute("UPDATE studies SET audit = ?, audit_override = ? WHERE id = ?",
                   [json.dumps(audit, sort_keys=True),
                    None if override is None else json.dumps(override, sort_keys=True), study_id])


def study_images(db: sqlite_utils.Database, study_id: int) -> list[dict]:
    return list(db.query("SELECT * FROM study_images WHERE study_id = ? ORDER BY role, sha256", [study_id]))


def presented_path(db: sqlite_utils.Database, token: str) -> str | None:
    row = next(db.query("SELECT presented_path FROM study_images WHERE token = ?", [token]), None)
    return None if row is None else row["presented_path"]


def _decode_study(row: dict) -> dict:
    for key in ("design", "presentation", "audit", "audit_override"):
        row[key] = None if row[key] is None else json.loads(row[key])
    return row


# ---------------------------------------------------------------------------------------------
# Trials and ratings

_TRIAL_SELECT = """
    SELECT trials.*, left_img.token AS left_token, left_img.presented_path AS left_path,
           right_img.token AS right_token, right_img.presented_path AS right_path,
           ratings.id AS rating_id
    FROM trials
    JOIN study_images AS left_img
      ON left_img.study_id = trials.study_id AND left_img.sha256 = trials.image_left
    LEFT JOIN study_images AS right_img
      ON right_img.study_id = trials.study_id AND right_img.sha256 = trials.image_right
    LEFT JOIN ratings ON ratings.trial_id = trials.id
"""


def next_trial(db: sqlite_utils.Database, study_id: int, rater_id: int) -> dict | None:
    """The rater's first unrated trial in schedule order, or None when all are rated."""
    return next(db.query(
        f"{_TRIAL_SELECT} WHERE trials.study_id = ? AND trials.rater_id = ? AND ratings.id IS NULL"
        " ORDER BY trials.position LIMIT 1", [study_id, rater_id]), None)


def get_trial(db: sqlite_utils.Database, trial_id: int) -> dict | None:
    return next(db.query(f"{_TRIAL_SELECT} WHERE trials.id = ?", [trial_id]), None)


def mark_shown(db: sqlite_utils.Database, trial_id: int) -> None:
    """Start the response clock (again, after a reload) for a trial."""
    with db.atomic():
        db.execute("UPDATE trials SET shown_at = ? WHERE id = ?", [stamp(now_utc()), trial_id])


def rater_progress(db: sqlite_utils.Database, study_id: int, rater_id: int) -> tuple[int, int]:
    """(rated, total) trials of one rater in one study."""
    row = next(db.query(
        "SELECT count(trials.id) AS total, count(ratings.id) AS rated FROM trials"
        " LEFT JOIN ratings ON ratings.trial_id = trials.id"
        " WHERE trials.study_id = ? AND trials.rater_id = ?", [study_id, rater_id]))
    return row["rated"], row["total"]


def study_progress(db: sqlite_utils.Database, study_id: int) -> list[dict]:
    """Per rater of a study: username, profile given, rated, total, last rating time."""
    return list(db.query(
        "SELECT raters.username, raters.profile_at IS NOT NULL AS profile_given,"
        " count(ratings.id) AS rated, count(trials.id) AS total,"
        " max(ratings.submitted_at) AS last_rating"
        " FROM study_raters JOIN raters ON raters.id = study_raters.rater_id"
        " LEFT JOIN trials ON trials.study_id = study_raters.study_id AND trials.rater_id = raters.id"
        " LEFT JOIN ratings ON ratings.trial_id = trials.id"
        " WHERE study_raters.study_id = ? GROUP BY raters.id ORDER BY raters.username", [study_id]))


def insert_rating(db: sqlite_utils.Database, trial_id: int, rater_id: int, key: str,
                  answers: dict[str, Any]) -> tuple[bool, dict]:
    """Store one rating for a trial unless the trial already has one.

    The trial's UNIQUE rating and the idempotency key's UNIQUE make a repeated submit (double
    click, second tab, retry) a no-op that returns the stored rating.

    Returns:
        (stored now, the trial's rating row).
    """
    row = {field: answers.get(field) for field in RATING_FIELDS}
    row["artifacts"] = json.dumps(sorted(answers.get("artifacts") or []))
    row["comment"] = answers.get("comment") or ""
    with db.atomic():
        cursor = db.execute(
            f"INSERT INTO ratings (trial_id, rater_id, idempotency_key, {', '.join(RATING_FIELDS)})"
            f" VALUES (?, ?, ?, {', '.join('?' for _ in RATING_FIELDS)})"
            " ON CONFLICT DO NOTHING",
            [trial_id, rater_id, key, *(row[field] for field in RATING_FIELDS)],
        )
        stored = cursor.rowcount == 1
        existing = next(db.query("SELECT * FROM ratings WHERE trial_id = ? OR idempotency_key = ?",
                                 [trial_id, key]))
    return stored, existing


def rater_ratings(db: sqlite_utils.Database, study_id: int, rater_id: int) -> list[dict]:
    """A rater's ratings joined with what the trial showed (for the personal summary)."""
    return list(db.query(
        "SELECT trials.kind, trials.synthetic_side, left_img.role AS left_role,"
        " left_img.label AS left_label, right_img.label AS right_label, ratings.*"
        " FROM ratings JOIN trials ON trials.id = ratings.trial_id"
        " JOIN study_images AS left_img ON left_img.study_id = trials.study_id AND left_img.sha256 = trials.image_left"
        " LEFT JOIN study_images AS right_img ON right_img.study_id = trials.study_id AND right_img.sha256 = trials.image_right"
        " WHERE trials.study_id = ? AND trials.rater_id = ? ORDER BY trials.position", [study_id, rater_id]))


def export_rows(db: sqlite_utils.Database, study_id: int) -> list[dict]:
    """One row per rating and shown image, joined with the rater, trial and image provenance.

    Single mode gives one row per rating; pair mode two (``side`` left and right), so every row
    describes one image as it was judged. Columns are documented in docs/review-export.md.
    """
    return list(db.query(_EXPORT_SQL, {"study_id": study_id}))


_EXPORT_SQL = """
WITH shown AS (
    SELECT trials.id AS trial_id, 'single' AS side, trials.image_left AS sha256 FROM trials
        WHERE trials.study_id = :study_id AND trials.image_right IS NULL
    UNION ALL
    SELECT trials.id, 'left', trials.image_left FROM trials
        WHERE trials.study_id = :study_id AND trials.image_right IS NOT NULL
    UNION ALL
    SELECT trials.id, 'right', trials.image_right FROM trials
        WHERE trials.study_id = :study_id AND trials.image_right IS NOT NULL
)
SELECT studies.id AS study_id, studies.name AS study_name, studies.mode, studies.simulated AS study_simulated,
       raters.username AS rater, raters.specialty AS rater_specialty,
       raters.years_practice AS rater_years_practice, raters.colonoscopies AS rater_colonoscopies,
       raters.simulated AS rater_simulated,
       trials.id AS trial_id, trials.position, trials.kind AS trial_kind, trials.repeat_of,
       shown.side, trials.synthetic_side,
       si.sha256 AS image_sha256, si.role AS image_source, si.label AS image_label,
       si.token AS image_token,
       provenance.checkpoint_id, checkpoints.name AS checkpoint_name, checkpoints.step AS checkpoint_step,
       checkpoints.stage AS checkpoint_stage, checkpoints.fingerprint AS checkpoint_fingerprint,
       provenance.prompt, provenance.negative_prompt, provenance.seed, provenance.scheduler,
       provenance.steps, provenance.guidance,
       ratings.id AS rating_id, ratings.real_or_synthetic, ratings.source_confidence, ratings.realism,
       ratings.pathology, ratings.pathology_confidence, ratings.synthetic_choice,
       ratings.choice_confidence, ratings.pathology_left, ratings.pathology_right,
       ratings.artifacts, ratings.mask_fit, ratings.comment, ratings.response_ms, ratings.submitted_at
FROM shown
JOIN trials ON trials.id = shown.trial_id
JOIN ratings ON ratings.trial_id = trials.id
JOIN studies ON studies.id = trials.study_id
JOIN raters ON raters.id = trials.rater_id
JOIN study_images AS si ON si.study_id = trials.study_id AND si.sha256 = shown.sha256
LEFT JOIN provenance ON provenance.image_sha256 = si.sha256
LEFT JOIN checkpoints ON checkpoints.id = provenance.checkpoint_id
ORDER BY raters.username, trials.position, shown.side
"""
