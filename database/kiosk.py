"""The kiosk database: the only module that speaks SQL to it.

A separate SQLite file (default ``DATA/kiosk.db``): conference visitors' games never touch the
study database, and the study database never holds a kiosk play. Three tables:

* ``games``: one per visitor game, keyed by the sha256 of a random token held by the browser
  tab; its seed, when it started and finished, the score once finished, an optional nickname.
* ``rounds``: the pairs a game shows, drawn when the game starts (which file is left and right,
  which side is synthetic, the pathology and the checkpoint the synthetic image came from).
* ``answers``: at most one per round (primary key ``(game_id, position)``): the first answer stands,
  so a double tap, a second tap by another visitor or a retried request stores nothing new.

Every function takes a ``Database`` from ``open_kiosk_db``; writes run inside ``db.atomic()``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlite_utils
from sqlite_utils import Migrations

from database.connection import connect, open_database

logger = logging.getLogger(__name__)

_NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
_MS_SINCE = "CAST(round((julianday('now') - julianday({column})) * 86400000) AS INTEGER)"

MIGRATIONS = Migrations("polypturing-kiosk")


@MIGRATIONS(name="0001_games_rounds_answers")
def _create_tables(db: sqlite_utils.Database) -> None:
    strict = " STRICT" if db.supports_strict else ""
    db.execute(f"""
        CREATE TABLE games (
            id INTEGER PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE CHECK (length(token_hash) = 64),
            seed INTEGER NOT NULL,
            rounds INTEGER NOT NULL CHECK (rounds BETWEEN 1 AND 100),
            pools TEXT NOT NULL,
            started_at TEXT NOT NULL DEFAULT {_NOW},
            finished_at TEXT NULL,
            seconds REAL NULL CHECK (seconds IS NULL OR seconds >= 0),
            score INTEGER NULL CHECK (score IS NULL OR score BETWEEN 0 AND rounds),
            nickname TEXT NULL CHECK (nickname IS NULL OR length(nickname) BETWEEN 1 AND 24),
            hidden INTEGER NOT NULL DEFAULT 0 CHECK (hidden IN (0, 1))
        ){strict}""")
    db.execute(f"""
        CREATE TABLE rounds (
            game_id INTEGER NOT NULL REFERENCES games(id),
            position INTEGER NOT NULL CHECK (position >= 0),
            left_file TEXT NOT NULL,
            right_file TEXT NOT NULL,
            synthetic_side TEXT NOT NULL CHECK (synthetic_side IN ('left', 'right')),
            label TEXT NOT NULL CHECK (label IN ('AD', 'NonAD')),
            checkpoint TEXT NOT NULL,
            checkpoint_step INTEGER NULL,
            checkpoint_fingerprint TEXT NOT NULL,
            real_sha256 TEXT NOT NULL,
            synthetic_sha256 TEXT NOT NULL,
            shown_at TEXT NULL,
            PRIMARY KEY (game_id, position)
        ){strict}""")
    db.execute(f"""
        CREATE TABLE answers (
            game_id INTEGER NOT NULL,
            position INTEGER NOT NULL,
            choice TEXT NOT NULL CHECK (choice IN ('left', 'right')),
            correct INTEGER NOT NULL CHECK (correct IN (0, 1)),
            response_ms INTEGER NULL CHECK (response_ms IS NULL OR response_ms >= 0),
            answered_at TEXT NOT NULL DEFAULT {_NOW},
            PRIMARY KEY (game_id, position),
            FOREIGN KEY (game_id, position) REFERENCES rounds(game_id, position)
        ){strict}""")
    db.execute("CREATE INDEX games_finished ON games(finished_at, score)")


def open_kiosk_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the kiosk database and bring its schema up to date.

    Args:
        path: A file path (its parent folder is created) or ``":memory:"``.

    Returns:
        A ``Database`` with foreign keys on, a 5 s busy timeout and WAL journaling (files). Use it
        only in the thread that opened it.
    """
    return open_database(path, MIGRATIONS)


def connect_kiosk(path: str | Path):
    """``with connect_kiosk(path) as db:``: the kiosk database, opened as ``open_kiosk_db`` and closed afterwards."""
    return connect(path, MIGRATIONS)


def create_game(db: sqlite_utils.Database, token_hash: str, seed: int, pools: str, rounds: list[dict]) -> int:
    """Store a new game and all its rounds in one transaction; returns the game's id.

    Args:
        rounds: Dicts with the ``rounds`` columns except ``game_id`` and ``shown_at``.
    """
    with db.atomic():
        cursor = db.execute("INSERT INTO games (token_hash, seed, rounds, pools) VALUES (?, ?, ?, ?)",
                            [token_hash, seed, len(rounds), pools])
        game_id = int(cursor.lastrowid)
        for row in rounds:
            db.execute(
                "INSERT INTO rounds (game_id, position, left_file, right_file, synthetic_side, label, checkpoint,"
                " checkpoint_step, checkpoint_fingerprint, real_sha256, synthetic_sha256) VALUES (:game_id,"
                " :position, :left_file, :right_file, :synthetic_side, :label, :checkpoint, :checkpoint_step,"
                " :checkpoint_fingerprint, :real_sha256, :synthetic_sha256)", {**row, "game_id": game_id})
    return game_id


def get_game(db: sqlite_utils.Database, token_hash: str) -> dict | None:
    return next(db.query("SELECT * FROM games WHERE token_hash = ?", [token_hash]), None)


def game_rounds(db: sqlite_utils.Database, game_id: int) -> list[dict]:
    """A game's rounds in order, each with its answer's ``choice``, ``correct``, ``response_ms`` (None if open)."""
    return list(db.query(
        "SELECT rounds.*, answers.choice, answers.correct, answers.response_ms FROM rounds"
        " LEFT JOIN answers ON answers.game_id = rounds.game_id AND answers.position = rounds.position"
        " WHERE rounds.game_id = ? ORDER BY rounds.position", [game_id]))


def mark_shown(db: sqlite_utils.Database, game_id: int, position: int) -> None:
    """Record when a round was first shown (response times count from then)."""
    with db.atomic():
        db.execute(f"UPDATE rounds SET shown_at = {_NOW} WHERE game_id = ? AND position = ? AND shown_at IS NULL",
                   [game_id, position])


def insert_answer(db: sqlite_utils.Database, game_id: int, position: int, choice: str, correct: bool) -> bool:
    """Store a round's answer unless it has one; finish the game when this was its last open round.

    Returns:
        True if stored now, False if the round was already answered (nothing changes then).
    """
    elapsed = _MS_SINCE.format(column="rounds.shown_at")
    with db.atomic():
        cursor = db.execute(
            f"INSERT INTO answers (game_id, position, choice, correct, response_ms)"
            f" SELECT ?, ?, ?, ?, {elapsed} FROM rounds WHERE rounds.game_id = ? AND rounds.position = ?"
            f" ON CONFLICT (game_id, position) DO NOTHING",
            [game_id, position, choice, int(bool(correct)), game_id, position])
        if cursor.rowcount != 1:
            return False
        db.execute(
            f"UPDATE games SET finished_at = {_NOW},"
            " seconds = (julianday('now') - julianday(started_at)) * 86400,"
            " score = (SELECT sum(correct) FROM answers WHERE answers.game_id = games.id)"
            " WHERE id = ? AND finished_at IS NULL"
            " AND (SELECT count(*) FROM answers WHERE answers.game_id = games.id) = games.rounds", [game_id])
    return True


def set_nickname(db: sqlite_utils.Database, game_id: int, nickname: str | None) -> None:
    """Name a finished game on the leaderboard (a second call replaces the name: one row per game)."""
    with db.atomic():
        db.execute("UPDATE games SET nickname = ? WHERE id = ? AND finished_at IS NOT NULL", [nickname, game_id])


def hide_nickname(db: sqlite_utils.Database, nickname: str) -> int:
    """Take every game with this nickname off the leaderboard (the organiser's tool); returns how many."""
    with db.atomic():
        return db.execute("UPDATE games SET hidden = 1 WHERE nickname = ? AND hidden = 0", [nickname]).rowcount


def leaderboard(db: sqlite_utils.Database, limit: int = 10) -> list[dict]:
    """Named, finished, not hidden games: best score first, then the faster game, then the earlier one."""
    return list(db.query(
        "SELECT id, nickname, score, rounds, seconds, finished_at FROM games"
        " WHERE finished_at IS NOT NULL AND nickname IS NOT NULL AND hidden = 0"
        " ORDER BY score DESC, seconds ASC, finished_at ASC, id ASC LIMIT ?", [limit]))


def finished_scores(db: sqlite_utils.Database) -> list[dict]:
    """``id``, ``score``, ``rounds`` of every finished game."""
    return list(db.query("SELECT id, score, rounds FROM games WHERE finished_at IS NOT NULL ORDER BY id"))


def checkpoint_totals(db: sqlite_utils.Database) -> list[dict]:
    """Per checkpoint fingerprint, over finished games only: ``checkpoint``, ``step``, ``n``, ``correct``."""
    return list(db.query(
        "SELECT rounds.checkpoint_fingerprint AS fingerprint, max(rounds.checkpoint) AS checkpoint,"
        " max(rounds.checkpoint_step) AS step, count(*) AS n, sum(answers.correct) AS correct"
        " FROM answers JOIN rounds ON rounds.game_id = answers.game_id AND rounds.position = answers.position"
        " JOIN games ON games.id = answers.game_id WHERE games.finished_at IS NOT NULL"
        " GROUP BY rounds.checkpoint_fingerprint ORDER BY step, checkpoint"))


def games_in_progress(db: sqlite_utils.Database, within_seconds: float) -> int:
    """Unfinished games answered in the last ``within_seconds`` (visitors playing now; Play pressed
    repeatedly without answering counts nothing)."""
    return next(db.query(
        "SELECT count(DISTINCT answers.game_id) AS n FROM answers JOIN games ON games.id = answers.game_id"
        " WHERE games.finished_at IS NULL AND julianday(answers.answered_at) >= julianday('now') - ? / 86400.0",
        [within_seconds]))["n"]


def count_games(db: sqlite_utils.Database) -> dict[str, int]:
    """``started`` and ``finished`` game counts."""
    return next(db.query("SELECT count(*) AS started, count(finished_at) AS finished FROM games"))
