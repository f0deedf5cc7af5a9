"""Opening a SQLite file the project's way: foreign keys on, a busy timeout, WAL, pending migrations applied.

A ``sqlite3`` connection belongs to the thread that opened it, so callers open a database per
call or per thread; ``open_db`` is cheap once the migrations have been applied.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlite_utils
from sqlite_utils import Migrations

from database.schema import MIGRATIONS

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 5000


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


@contextmanager
def connect(path: str | Path, migrations: Migrations = MIGRATIONS) -> Iterator[sqlite_utils.Database]:
    """``with connect(path) as db:`` opens the database (``open_database``) and closes it afterwards.

    Args:
        path: A file path or ``":memory:"``.
        migrations: The schema to bring the file up to; the study database's by default.
    """
    db = open_database(path, migrations)
    try:
        yield db
    finally:
        db.close()


def open_database(path: str | Path, migrations: Migrations) -> sqlite_utils.Database:
    """Open a SQLite file (or ``":memory:"``) the project's way and apply ``migrations``' pending steps.

    Shared by the study database (``open_db``) and the kiosk's own (``database.kiosk``).

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


