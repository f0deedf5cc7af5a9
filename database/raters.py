"""SQL for raters (people and their role), their sessions and their invitations.

Every function takes a ``Database`` from ``database.connection.open_db`` and writes inside
``db.atomic()``. The rules (who may do what) are in ``review.studies``.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils

from common.clock import now_utc, stamp


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
        _insert_session(db, token_hash, rater_id, expires_at)


def _insert_session(db: sqlite_utils.Database, token_hash: str, rater_id: int, expires_at: str) -> None:
    now = stamp(now_utc())
    db.execute("INSERT INTO sessions (token_hash, rater_id, created_at, last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?)",
               [token_hash, rater_id, now, now, expires_at])


def session_rater(db: sqlite_utils.Database, token_hash: str, idle_since: str | None = None) -> dict | None:
    """The rater a live session belongs to (not revoked, not expired, seen after ``idle_since``), or None.

    The row has the rater's columns plus ``session_seen_at``, when the session was last used.
    """
    return next(db.query(
        "SELECT raters.*, COALESCE(sessions.last_seen_at, sessions.created_at) AS session_seen_at"
        " FROM sessions JOIN raters ON raters.id = sessions.rater_id"
        " WHERE sessions.token_hash = ? AND sessions.revoked_at IS NULL AND sessions.expires_at > ?"
        " AND COALESCE(sessions.last_seen_at, sessions.created_at) > ?",
        [token_hash, stamp(now_utc()), idle_since or ""],
    ), None)


def touch_session(db: sqlite_utils.Database, token_hash: str) -> None:
    """Record that a session was used now (its idle clock starts again)."""
    with db.atomic():
        db.execute("UPDATE sessions SET last_seen_at = ? WHERE token_hash = ?", [stamp(now_utc()), token_hash])


def revoke_session(db: sqlite_utils.Database, token_hash: str) -> bool:
    """End one session (sign-out); True if a live one was ended."""
    with db.atomic():
        cursor = db.execute("UPDATE sessions SET revoked_at = ? WHERE token_hash = ? AND revoked_at IS NULL",
                            [stamp(now_utc()), token_hash])
    return cursor.rowcount == 1


def revoke_rater(db: sqlite_utils.Database, rater_id: int) -> tuple[int, int]:
    """End every session of a rater and withdraw their unredeemed invitations; returns (sessions, invitations)."""
    now = stamp(now_utc())
    with db.atomic():
        sessions = db.execute("UPDATE sessions SET revoked_at = ? WHERE rater_id = ? AND revoked_at IS NULL",
                              [now, rater_id]).rowcount
        invitations = db.execute("UPDATE invitations SET revoked_at = ? WHERE rater_id = ? AND revoked_at IS NULL"
                                 " AND redeemed_at IS NULL", [now, rater_id]).rowcount
    return sessions, invitations


def add_invitation(db: sqlite_utils.Database, token_hash: str, study_id: int, rater_id: int,
                   expires_at: str) -> None:
    """Store a new invitation; the rater's earlier unredeemed invitations to the study stop working (re-issue)."""
    with db.atomic():
        db.execute("UPDATE invitations SET revoked_at = ? WHERE study_id = ? AND rater_id = ? AND revoked_at IS NULL"
                   " AND redeemed_at IS NULL", [stamp(now_utc()), study_id, rater_id])
        db.execute(
            "INSERT INTO invitations (token_hash, study_id, rater_id, expires_at) VALUES (?, ?, ?, ?)",
            [token_hash, study_id, rater_id, expires_at],
        )


def get_invitation(db: sqlite_utils.Database, token_hash: str) -> dict | None:
    return next(db.query("SELECT * FROM invitations WHERE token_hash = ?", [token_hash]), None)


def redeem_invitation(db: sqlite_utils.Database, token_hash: str, session_hash: str,
                      session_expires_at: str) -> dict | None:
    """Turn a live invitation into a session, once: in one transaction the invitation is marked
    redeemed and the session stored. Returns the invitation row, or None if it was unknown,
    already redeemed, withdrawn or expired (a second redeem, even at the same moment, gets None).
    """
    now = stamp(now_utc())
    with db.atomic():
        cursor = db.execute(
            "UPDATE invitations SET redeemed_at = ? WHERE token_hash = ? AND redeemed_at IS NULL"
            " AND revoked_at IS NULL AND expires_at > ?", [now, token_hash, now])
        if cursor.rowcount != 1:
            return None
        row = next(db.query("SELECT * FROM invitations WHERE token_hash = ?", [token_hash]))
        _insert_session(db, session_hash, row["rater_id"], min(session_expires_at, row["expires_at"]))
    return row


# ---------------------------------------------------------------------------------------------
# Failed sign-ins (throttling), keyed by "user:NAME" and "client:ADDRESS"


def sign_in_failures(db: sqlite_utils.Database, keys: list[str]) -> list[dict]:
    """The failure counts (``key``, ``failures``, ``last_failure_at``) of those ``keys`` that have any."""
    marks = ", ".join("?" for _ in keys)
    return list(db.query(f"SELECT * FROM sign_in_failures WHERE key IN ({marks})", list(keys)))


def record_sign_in_failure(db: sqlite_utils.Database, keys: list[str]) -> None:
    now = stamp(now_utc())
    with db.atomic():
        for key in keys:
            db.execute("INSERT INTO sign_in_failures (key, failures, last_failure_at) VALUES (?, 1, ?)"
                       " ON CONFLICT (key) DO UPDATE SET failures = failures + 1, last_failure_at = excluded.last_failure_at",
                       [key, now])


def clear_sign_in_failures(db: sqlite_utils.Database, keys: list[str]) -> None:
    marks = ", ".join("?" for _ in keys)
    with db.atomic():
        db.execute(f"DELETE FROM sign_in_failures WHERE key IN ({marks})", list(keys))
