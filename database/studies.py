"""SQL for studies, the images they show and their trials (schedules).

Every function takes a ``Database`` from ``database.connection.open_db`` and writes inside
``db.atomic()``. Nothing here knows about HTTP or Gradio; ``review.studies`` holds the rules (who
may do what) and calls these functions.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Iterable

import sqlite_utils

from common.clock import now_utc, stamp
from database.raters import DuplicateName


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
