"""database.connection: immediate transactions, the SELECT fast path, synchronous mode, the per-thread pool and its group commit."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from database.connection import ConnectionPool, connect

COUNTER = "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)"


@pytest.fixture
def path(tmp_path):
    file = tmp_path / "study.db"
    with connect(file) as db:
        db.execute(COUNTER)
        db.execute("INSERT INTO counter (id, n) VALUES (1, 0)")
        db.conn.commit()
    return file


def test_atomic_takes_the_write_lock_when_it_begins(path):
    # A deferred BEGIN would let another connection write until this one's first write, and a
    # read-then-write transaction could then fail on a moved snapshot: BEGIN IMMEDIATE holds the lock.
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    with connect(path) as db, db.atomic():
        db.execute("SELECT n FROM counter").fetchone()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.execute("BEGIN IMMEDIATE")  # free once the transaction committed
    other.execute("ROLLBACK")
    other.close()


def test_nested_atomic_is_a_savepoint_that_rolls_back_alone(path):
    with connect(path) as db:
        with db.atomic():
            db.execute("UPDATE counter SET n = 1")
            with pytest.raises(RuntimeError), db.atomic():
                db.execute("UPDATE counter SET n = 2")
                raise RuntimeError("inner fails")
        assert db.execute("SELECT n FROM counter").fetchone()[0] == 1


def test_select_fast_path_returns_the_rows_and_leaves_no_transaction_open(path):
    with connect(path) as db:
        db.execute("INSERT INTO counter (id, n) VALUES (2, 5)")
        db.conn.commit()
        assert next(db.query("  select id, n AS n FROM counter WHERE id = ?", [2])) == {"id": 2, "n": 5}
        assert not db.conn.in_transaction
        assert [row["id"] for row in db.query("SELECT id FROM counter ORDER BY id")] == [1, 2]
        # Anything but a plain SELECT keeps sqlite-utils' guarded path: a row-less write is refused and undone.
        with pytest.raises(ValueError, match="returns rows"):
            db.query("UPDATE counter SET n = 9")
        assert db.execute("SELECT n FROM counter WHERE id = 2").fetchone()[0] == 5
        assert next(db.query("INSERT INTO counter (n) VALUES (7) RETURNING n")) == {"n": 7}


def test_files_use_wal_with_full_sync(path):
    with connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: an acknowledged rating survives a power cut
        assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_pool_keeps_one_connection_per_thread(path):
    pool = ConnectionPool(path)
    with pool.connection() as first:
        pass
    with pool.connection() as again:
        assert again is first  # reused: no schema read, no migration check
    seen = []

    def use():
        with pool.connection() as db:
            seen.append(db)
            db.execute("SELECT n FROM counter").fetchone()  # usable in its own thread

    worker = threading.Thread(target=use)
    worker.start()
    worker.join()
    assert seen and seen[0] is not first
    pool.close()


def test_pool_nested_use_gets_a_second_connection(path):
    pool = ConnectionPool(path)
    with pool.connection() as outer:
        with pool.connection() as inner:
            assert inner is not outer
            inner.execute("SELECT 1").fetchone()
        outer.execute("SELECT 1").fetchone()
    with pool.connection() as later:
        assert later is inner  # one is kept, the other closed
    pool.close()


def test_pool_rolls_back_what_a_caller_left_open(path):
    pool = ConnectionPool(path)
    with pool.connection() as db:
        db.conn.execute("BEGIN")
        db.conn.execute("UPDATE counter SET n = 42")
    with pool.connection() as db:
        assert not db.conn.in_transaction
        assert db.execute("SELECT n FROM counter").fetchone()[0] == 0
    pool.close()


def test_pool_replaces_a_connection_its_caller_closed(path):
    pool = ConnectionPool(path)
    with pool.connection() as db:
        db.close()
    with pool.connection() as fresh:
        assert fresh is not db
        assert fresh.execute("SELECT n FROM counter").fetchone()[0] == 0
    pool.close()


def test_pool_writers_take_turns_and_lose_no_update(path):
    # Read-then-write increments from many threads at once: each must see the one before committed.
    pool = ConnectionPool(path)
    order: list[str] = []
    errors: list[BaseException] = []

    def increment(name: str) -> None:
        try:
            with pool.connection() as db, db.atomic():
                n = db.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]
                order.append(f"{name} in")
                time.sleep(0.01)  # others now try to write
                db.execute("UPDATE counter SET n = ? WHERE id = 1", [n + 1])
                order.append(f"{name} out")
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=increment, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with connect(path) as db:
        assert db.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0] == 8
    # Never two writers inside at once: every "in" is followed by its own "out".
    assert all(order[i].split()[0] == order[i + 1].split()[0] for i in range(0, len(order), 2))


def test_pool_refuses_memory_databases():
    with pytest.raises(ValueError, match=":memory:"):
        ConnectionPool(":memory:")


# ---------------------------------------------------------------------------------------------
# pool.write: group commit on the writer thread

CHILD = ("CREATE TABLE IF NOT EXISTS child (id INTEGER PRIMARY KEY,"
         " counter_id INTEGER REFERENCES counter(id) DEFERRABLE INITIALLY DEFERRED)")


def _increment(db) -> int:
    n = db.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]
    db.execute("UPDATE counter SET n = ? WHERE id = 1", [n + 1])
    return n + 1


def _counter(path) -> int:
    with connect(path) as db:
        return db.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]


def _recording_batches(pool, monkeypatch) -> list[int]:
    """The size of each batch the writer commits, in order (recorded when it starts committing)."""
    sizes: list[int] = []
    commit = pool._commit_batch

    def recorded(db, batch):
        sizes.append(len(batch))
        commit(db, batch)

    monkeypatch.setattr(pool, "_commit_batch", recorded)
    return sizes


def _write_while_locked(pool, sizes: list[int], works: list) -> list:
    """``pool.write(work)`` for each of ``works``, from threads, all in one batch; each one's result or error.

    This thread holds the write lock while a first write (of nothing) reaches the writer, which then
    waits for the lock; ``works`` queue behind it, and the writer takes them all at once after it.
    """
    outcomes: list = [None] * len(works)

    def call(i: int) -> None:
        try:
            outcomes[i] = pool.write(works[i])
        except Exception as error:  # noqa: BLE001 - compared by the test
            outcomes[i] = error

    def wait_until(condition) -> None:
        deadline = time.monotonic() + 10
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)

    opening = threading.Thread(target=pool.write, args=(lambda db: None,))
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    with pool.connection() as db, db.atomic():  # the process's write lock: the writes wait meanwhile
        opening.start()
        wait_until(lambda: len(sizes) == 1)
        for thread in threads:
            thread.start()
        wait_until(lambda: pool._writes.qsize() == len(works))
    for thread in (opening, *threads):
        thread.join(timeout=10)
    assert sizes == [1, len(works)]
    return outcomes


def test_pool_write_shares_commits_between_threads_and_loses_no_update(path, monkeypatch):
    pool = ConnectionPool(path)
    sizes = _recording_batches(pool, monkeypatch)
    outcomes = _write_while_locked(pool, sizes, [_increment] * 10)
    assert sorted(outcomes) == list(range(1, 11))  # one commit; each saw the writes before it
    assert _counter(path) == 10


def test_a_write_that_raises_leaves_nothing_and_the_rest_of_its_batch_commits(path, monkeypatch):
    pool = ConnectionPool(path)
    sizes = _recording_batches(pool, monkeypatch)

    def refused(db):
        _increment(db)
        raise ValueError("refused after writing")

    outcomes = _write_while_locked(pool, sizes, [_increment, refused, _increment])
    assert isinstance(outcomes[1], ValueError) and "refused after writing" in str(outcomes[1])
    assert sorted(o for o in outcomes if isinstance(o, int)) == [1, 2]
    assert _counter(path) == 2


def test_a_failed_commit_is_raised_to_every_write_of_its_batch_and_stores_none(path, monkeypatch):
    with connect(path) as db:
        db.execute(CHILD)
    pool = ConnectionPool(path)
    sizes = _recording_batches(pool, monkeypatch)

    def dangling(db):  # a deferred foreign key: the statement passes, the COMMIT fails
        db.execute("INSERT INTO child (counter_id) VALUES (99)")
        return "inserted"

    outcomes = _write_while_locked(pool, sizes, [_increment, dangling, _increment])
    assert all(isinstance(o, sqlite3.IntegrityError) and "FOREIGN KEY" in str(o) for o in outcomes), outcomes
    assert _counter(path) == 0
    with connect(path) as db:
        assert db.execute("SELECT count(*) FROM child").fetchone()[0] == 0


def test_the_writer_thread_ends_when_idle_and_the_next_write_starts_another(path, monkeypatch):
    import database.connection as connection

    monkeypatch.setattr(connection, "WRITER_IDLE_S", 0.05)
    pool = ConnectionPool(path)
    assert pool.write(_increment) == 1
    deadline = time.monotonic() + 5
    while pool._writer is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool._writer is None
    assert pool.write(_increment) == 2
    assert _counter(path) == 2


def test_a_write_inside_a_write_is_refused_rather_than_waiting_for_itself(path):
    pool = ConnectionPool(path)
    with pytest.raises(RuntimeError, match="wait for itself"):
        pool.write(lambda db: pool.write(_increment))
    with pool.connection() as db, db.atomic():  # holding the pool's write lock
        with pytest.raises(RuntimeError, match="wait for itself"):
            pool.write(_increment)
    assert pool.write(_increment) == 1


def test_an_error_that_ends_the_transaction_fails_the_batch_with_that_error_and_the_next_write_works(path, monkeypatch):
    with connect(path) as db:  # a trigger that rolls the whole transaction back, as a full disk would end it
        db.execute("CREATE TABLE doomed (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TRIGGER doom BEFORE INSERT ON doomed BEGIN SELECT RAISE(ROLLBACK, 'the disk is full'); END")
    pool = ConnectionPool(path)
    sizes = _recording_batches(pool, monkeypatch)

    def doomed(db):
        db.execute("INSERT INTO doomed DEFAULT VALUES")

    outcomes = _write_while_locked(pool, sizes, [_increment, doomed])
    assert all(isinstance(o, sqlite3.IntegrityError) and "the disk is full" in str(o) for o in outcomes), outcomes
    assert outcomes[0] is not outcomes[1]  # each caller raises its own copy
    assert _counter(path) == 0
    assert pool.write(_increment) == 1


def test_a_writer_thread_that_stops_fails_what_waits_and_the_next_write_starts_another(path, monkeypatch):
    pool = ConnectionPool(path)
    broken = {"once": True}
    next_batch = pool._next_batch

    def breaks_once():
        if broken.pop("once", False):
            raise MemoryError("the writer thread ran out of memory")
        return next_batch()

    monkeypatch.setattr(pool, "_next_batch", breaks_once)
    with pytest.raises(MemoryError, match="ran out of memory"):
        pool.write(_increment)
    assert pool.write(_increment) == 1
