"""Opening a SQLite file the project's way: foreign keys on, a busy timeout, WAL, pending migrations applied.

A ``sqlite3`` connection belongs to the thread that opened it, so callers open a database per
call (``connect``) or keep one per thread (``ConnectionPool``, what the served app uses: opening a
connection costs more than a whole submit, as SQLite reads the schema again for every new one).
The pool's ``write`` commits the writes of threads arriving together in one transaction (group
commit), which the Rate tab's submits use.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils
from sqlite_utils import Migrations
from sqlite_utils.utils import dedupe_keys

from database.schema import MIGRATIONS

logger = logging.getLogger(__name__)
T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
SYNCHRONOUS = "FULL"
"""Per connection: the write-ahead log is synced at every commit, so an acknowledged rating survives a
power cut or an OS crash too, not only a killed server. ``NORMAL`` would sync only at checkpoints:
about 5x faster for 20 raters submitting at once (docs/benchmarks.md), at the price of the last
few acknowledged ratings on a power cut. Ratings are never lost here, so FULL."""


def open_db(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the study database and bring its schema up to date.

    Args:
        path: A file path (its parent folder is created) or ``":memory:"`` for tests.

    Returns:
        A ``Database`` with foreign keys on, a 5 s busy timeout and, for files, WAL journaling with
        ``synchronous=FULL`` (``SYNCHRONOUS``).
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


class Database(sqlite_utils.Database):
    """sqlite-utils' ``Database`` whose outermost ``atomic()`` is ``BEGIN IMMEDIATE``, taken under ``write_lock``.

    Immediate: a transaction that reads and then writes takes the write lock first, so it waits in
    SQLite's busy handler rather than failing when another connection commits between its read and
    its write. ``write_lock`` is a no-op here; ``ConnectionPool`` gives its connections a real one.
    """

    write_lock: AbstractContextManager = nullcontext()

    def query(self, sql: str, params: Sequence | dict[str, Any] | None = None) -> Iterator[dict]:
        """sqlite-utils' ``query``; a plain ``SELECT`` runs without its savepoint guard.

        sqlite-utils wraps every query in a savepoint so that a statement that writes and returns no
        rows can be undone; a ``SELECT`` cannot write, and the guard tripled the statements of a
        submit. Its rows are fetched at once, so no statement stays open on the connection.
        """
        if not sql.lstrip()[:7].upper().startswith("SELECT"):
            return super().query(sql, params)
        if self._tracer:
            self._tracer(sql, params)
        cursor = self.conn.execute(sql, () if params is None else params)
        keys = dedupe_keys(column[0] for column in cursor.description)
        return iter([dict(zip(keys, row)) for row in cursor.fetchall()])

    @contextmanager
    def atomic(self) -> Iterator[sqlite_utils.Database]:
        if self.conn.in_transaction:  # nested: sqlite-utils' savepoint
            with super().atomic():
                yield self
            return
        with self.write_lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.rollback()
                raise
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self.rollback()
                raise


def open_database(path: str | Path, migrations: Migrations) -> Database:
    """Open a SQLite file (or ``":memory:"``) the project's way and apply ``migrations``' pending steps.

    Shared by the study database (``open_db``) and the kiosk's own (``database.kiosk``).

    Raises:
        sqlite3.Error: If the file cannot be opened as a SQLite database.
    """
    if str(path) == ":memory:":
        db = Database(memory=True)
    else:
        file = Path(path)
        file.parent.mkdir(parents=True, exist_ok=True)
        db = Database(file)
    try:
        # Per connection, and outside any transaction (SQLite ignores foreign_keys inside one).
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA foreign_keys = ON")
        if not db.memory:
            db.enable_wal()  # persistent in the file: a no-op after the first open
            # FULL: see SYNCHRONOUS (an acknowledged rating survives a power cut as well).
            db.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
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


WRITE_BATCH = 64
"""Most writes ``ConnectionPool.write`` commits at once."""
WRITER_IDLE_S = 30.0
"""Seconds the writer thread waits for a write before it ends (and closes its connection)."""


class ConnectionPool:
    """One open connection per thread to one database file, reused from call to call; one writer at a time.

    ``with pool.connection() as db:`` is ``with connect(path) as db:`` without the cost of opening
    (reading the schema, checking migrations) and closing: each thread keeps its connection between
    calls (Gradio runs handlers on a fixed set of worker threads; a thread's connection closes when
    the thread ends). A nested ``connection()`` in the same thread gets a second connection.

    Every outermost ``db.atomic()`` of a pooled connection (a ``BEGIN IMMEDIATE``, see ``Database``) is
    taken under the pool's lock: the process's writers queue on that lock and each starts the moment the
    one before commits, instead of polling in SQLite's busy handler (which sleeps up to 100 ms between
    tries).
    Other processes (the command line) still meet SQLite's own lock and busy timeout.

    ``pool.write(work)`` runs a write on the pool's writer thread instead, with the writes of other
    threads that arrive meanwhile: several in one transaction and one synced commit (group commit).

    Args:
        path: The database file.
        migrations: The schema to bring the file up to; the study database's by default.
    """

    def __init__(self, path: str | Path, migrations: Migrations = MIGRATIONS):
        if str(path) == ":memory:":
            raise ValueError("ConnectionPool needs a database file: each thread's :memory: would be a different database")
        self.path = Path(path)
        self.migrations = migrations
        self._idle = threading.local()
        self._write_lock = threading.RLock()  # re-entrant: a nested connection's write then waits on SQLite, as without a pool
        self._start_writes()

    def write(self, work: Callable[[sqlite_utils.Database], T]) -> T:
        """``work(db)`` in a write transaction on the writer thread; its result once that transaction is committed.

        Writes of other threads waiting meanwhile (up to ``WRITE_BATCH``) share the transaction, each in a
        savepoint of its own, and its one commit: with ``synchronous=FULL`` a commit waits for the disk, and
        20 raters submitting at once then wait for a few commits instead of 20 in turn. A write is acknowledged
        (this returns) only after that commit; a ``work`` that raises leaves nothing (its savepoint is rolled
        back) and its error is raised here; a commit that fails is raised to every write of the batch.

        ``work`` runs on another thread: it must use only the ``db`` it is given and return plain values (no
        cursor or lazy rows of that connection).

        Raises:
            RuntimeError: If called from inside a ``work`` or while this thread holds the pool's write lock
                (inside a pooled ``db.atomic()``): the write would wait for itself.
        """
        if os.getpid() != self._pid:  # a forked child: the parent's writer thread and locks are not its own
            self._start_writes()
        if threading.current_thread() is self._writer or self._write_lock._is_owned():
            raise RuntimeError("ConnectionPool.write called inside a write (a work function or a pooled atomic()): "
                               "it would wait for itself")
        done: Future = Future()
        with self._writer_lock:
            if self._writer is None or not self._writer.is_alive():
                writer = threading.Thread(target=self._write_loop, name=f"writer {self.path.name}", daemon=True)
                writer.start()  # raises before anything is queued
                self._writer = writer
            self._writes.put((work, done))
        return done.result()

    def _start_writes(self) -> None:
        self._pid = os.getpid()
        self._writes: queue.SimpleQueue = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()  # starting and stopping the writer thread

    def _write_loop(self) -> None:
        """The writer thread: batches of writes until none arrives for ``WRITER_IDLE_S``, then it ends."""
        db = None
        try:
            while (batch := self._next_batch()) is not None:
                try:
                    if db is None or not _usable(db):
                        db = open_database(self.path, self.migrations)
                except BaseException as error:  # noqa: BLE001 - handed to every caller of the batch
                    _fail(batch, error)
                    continue
                if not self._commit_batch(db, batch):  # the batch failed: start the next on a fresh connection
                    db.close()
                    db = None
        except BaseException as error:  # noqa: BLE001 - the thread stops; nobody is left waiting
            logger.exception("the writer thread of %s stopped", self.path)
            with self._writer_lock:
                self._writer = None
                pending = []
                while not self._writes.empty():
                    pending.append(self._writes.get_nowait())
            _fail(pending, error)
        finally:
            if db is not None:
                db.close()

    def _next_batch(self) -> list | None:
        """The writes queued now (waiting for the first); None once none came for ``WRITER_IDLE_S``."""
        while True:
            try:
                batch = [self._writes.get(timeout=WRITER_IDLE_S)]
                break
            except queue.Empty:
                with self._writer_lock:
                    if self._writes.empty():  # nothing arrived meanwhile: the next write starts a new writer
                        self._writer = None
                        return None
        while len(batch) < WRITE_BATCH:
            try:
                batch.append(self._writes.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit_batch(self, db: Database, batch: list) -> bool:
        """One transaction for ``batch``'s writes, each in a savepoint; results are handed out after the commit.

        Returns:
            False if the batch as a whole failed (every caller has its error), else True.
        """
        outcomes = []
        try:
            with self._write_lock:  # the process's other writers (``Database.atomic``) wait for this batch
                db.conn.execute("BEGIN IMMEDIATE")
                try:
                    for work, done in batch:
                        db.conn.execute("SAVEPOINT polyp_write")
                        try:
                            outcomes.append((done, work(db), None))
                        except Exception as error:  # noqa: BLE001 - the caller's error, raised in the caller
                            if not db.conn.in_transaction:  # SQLite ended the whole transaction (disk full, I/O)
                                raise
                            db.conn.execute("ROLLBACK TO polyp_write")
                            outcomes.append((done, None, error))
                        db.conn.execute("RELEASE polyp_write")
                    db.conn.execute("COMMIT")
                except BaseException:
                    if db.conn.in_transaction:
                        db.conn.rollback()
                    raise
        except BaseException as error:  # noqa: BLE001 - nothing of the batch was stored: every caller hears why
            logger.error("a batch of %d writes to %s failed, nothing of it was stored: %s", len(batch), self.path, error)
            _fail(batch, error)
            return False
        for done, result, error in outcomes:
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)
        return True

    @contextmanager
    def connection(self) -> Iterator[sqlite_utils.Database]:
        """``with pool.connection() as db:`` this thread's connection; an open transaction is rolled back after."""
        db = getattr(self._idle, "db", None)
        self._idle.db = None
        if db is None or not _usable(db):
            db = open_database(self.path, self.migrations)
            db.write_lock = self._write_lock
        try:
            yield db
        finally:
            if _usable(db) and db.conn.in_transaction:
                db.conn.rollback()  # what a caller left uncommitted never leaks into the next call
            if getattr(self._idle, "db", None) is None and _usable(db):
                self._idle.db = db
            else:
                db.close()

    def close(self) -> None:
        """Close this thread's idle connection (others close with their threads)."""
        db = getattr(self._idle, "db", None)
        self._idle.db = None
        if db is not None:
            db.close()


def _fail(batch: list, error: BaseException) -> None:
    """Hand ``error`` to every caller of ``batch``, each its own copy (raised in many threads at once, one
    exception object would collect all their tracebacks), chained to the original."""
    for _, done in batch:
        try:
            mine = copy.copy(error)
        except Exception:  # noqa: BLE001 - an error type that cannot be copied: the message is kept
            mine = RuntimeError(str(error))
        mine.__cause__ = error
        done.set_exception(mine)


def _usable(db: sqlite_utils.Database) -> bool:
    try:
        db.conn.total_changes  # noqa: B018 - raises on a closed connection
    except sqlite3.ProgrammingError:
        return False
    return True
