"""SQL for ratings: one per trial, stored once whatever the retries, and the tidy export.

Every function takes a ``Database`` from ``database.connection.open_db`` and writes inside
``db.atomic()``.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from database.studies import _TRIAL_SELECT

RATING_FIELDS: tuple[str, ...] = (
    "real_or_synthetic", "source_confidence", "realism", "pathology", "pathology_confidence",
    "synthetic_choice", "choice_confidence", "pathology_left", "pathology_right", "artifacts",
    "comment", "response_ms", "mask_fit",
)


def unrated_trials(db: sqlite_utils.Database, study_id: int, rater_id: int, limit: int) -> list[dict]:
    """The rater's first ``limit`` unrated trials in schedule order (the one to show now, then the next ones).

    The rows are ``database.studies.next_trial``'s (the trial, its presented files, ``rating_id``).
    """
    return list(db.query(
        f"{_TRIAL_SELECT} WHERE trials.study_id = ? AND trials.rater_id = ? AND ratings.id IS NULL"
        " ORDER BY trials.position LIMIT ?", [study_id, rater_id, limit]))


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
            " ON CONFLICT DO NOTHING RETURNING *",
            [trial_id, rater_id, key, *(row[field] for field in RATING_FIELDS)],
        )
        inserted = cursor.fetchall()  # to the end: the statement must be done before the transaction ends
        if inserted:
            return True, dict(zip([column[0] for column in cursor.description], inserted[0]))
        existing = next(db.query("SELECT * FROM ratings WHERE trial_id = ? OR idempotency_key = ?",
                                 [trial_id, key]))
    return False, existing


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
