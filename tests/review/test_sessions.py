"""Sessions on the server: sign-out and revoke end them, idle and absolute expiry, single-use invitations,
throttled sign-in with the same answer for unknown users, only the shown trial accepted, a safe export."""

from __future__ import annotations

import csv
import io
import sqlite3
import statistics
import threading
import time

import pytest

from common.clock import now_utc, stamp
from database import raters as rater_store
from database import studies as study_store
from review import accounts, auth, studies, study_setup
from review.design import StudyDesign
from review.studies import Forbidden, NotSignedIn
from review.study_setup import RaterSpec

ANSWER = {"real_or_synthetic": "real", "source_confidence": 3, "realism": 4, "pathology": "NonAD",
          "pathology_confidence": 2}


def _study(db, data, admin, ids, raters, name="sessions"):
    design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=1, size=64, seed=4)
    created = study_setup.create_study(db, data, admin, name, design, raters)
    study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
    study_setup.open_study(db, admin, created.study_id)
    return created


def _age(db, column: str, table: str, value: str) -> None:
    db.execute(f"UPDATE {table} SET {column} = ?", [value])
    db.conn.commit()


def test_sign_out_ends_the_session_on_the_server(review_env):
    db, _, admin, _ = review_env
    studies.create_account(db, "carl", "rater", "carl-password")
    token = studies.sign_in(db, "carl", "carl-password")
    assert studies.account(db, token).username == "carl"
    studies.sign_out(db, token)
    with pytest.raises(NotSignedIn):
        studies.account(db, token)
    studies.sign_out(db, "never-issued")  # nothing to end: no error, nothing revealed
    assert studies.account(db, admin).role == "admin"  # other sessions live on


def test_revoke_from_the_command_line_ends_every_session_and_unused_invitation(review_env, tmp_path, capsys):
    db, data, admin, ids = review_env
    created = _study(db, data, admin, ids, [RaterSpec("dora", "dora-password"), RaterSpec("ed")])
    sessions = [studies.sign_in(db, "dora", "dora-password") for _ in range(2)]
    assert accounts.main(["--db", str(tmp_path / "study.db"), "revoke", "dora"]) == 0
    assert "2 session(s) ended" in capsys.readouterr().out
    for token in sessions:
        with pytest.raises(NotSignedIn):
            studies.account(db, token)
    assert studies.revoke_as_admin(db, admin, "ed") == (0, 1)  # ed's link, never used, is withdrawn
    with pytest.raises(NotSignedIn, match="not valid"):
        studies.redeem_invitation(db, created.invitations["ed"])
    with pytest.raises(Forbidden):
        studies.revoke_as_admin(db, studies.sign_in(db, "dora", "dora-password"), "admin")
    assert accounts.main(["--db", str(tmp_path / "study.db"), "revoke", "nobody"]) == 2


def test_an_invitation_signs_in_once_even_when_redeemed_twice_at_the_same_moment(review_env):
    db, data, admin, ids = review_env
    created = _study(db, data, admin, ids, [RaterSpec("fay")])
    link = created.invitations["fay"]
    path = db.execute("PRAGMA database_list").fetchall()[0][2]
    results, barrier = [], threading.Barrier(4)

    def redeem():
        from database.connection import connect  # one connection per thread, as the server has

        with connect(path) as own:
            barrier.wait()
            try:
                results.append(studies.redeem_invitation(own, link)[1])
            except NotSignedIn as error:
                results.append(str(error))

    threads = [threading.Thread(target=redeem) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(created.study_id) == 1, results
    assert all("not valid" in r for r in results if r != created.study_id)
    assert db.execute("SELECT count(*) FROM sessions JOIN raters ON raters.id = sessions.rater_id"
                      " WHERE username = 'fay'").fetchone()[0] == 1


def test_a_reissued_invitation_replaces_the_unused_one_and_its_session_ends_with_it(review_env):
    db, data, admin, ids = review_env
    created = _study(db, data, admin, ids, [RaterSpec("gil")])
    first = created.invitations["gil"]
    second = study_setup.new_invitation(db, admin, created.study_id, "gil", days=2)
    with pytest.raises(NotSignedIn, match="not valid"):
        studies.redeem_invitation(db, first)
    token, study_id = studies.redeem_invitation(db, second)
    assert study_id == created.study_id
    expires = db.execute("SELECT expires_at FROM sessions WHERE rater_id = (SELECT id FROM raters WHERE username = 'gil')"
                         ).fetchone()[0]
    invitation = db.execute("SELECT expires_at FROM invitations WHERE redeemed_at IS NOT NULL").fetchone()[0]
    assert expires == invitation  # two days, not the fourteen of a password session
    assert studies.account(db, token).username == "gil"


def test_sessions_expire_when_idle_and_at_their_absolute_end(review_env):
    db, _, _, _ = review_env
    studies.create_account(db, "hal", "rater", "hal-password")
    idle, old = studies.sign_in(db, "hal", "hal-password"), studies.sign_in(db, "hal", "hal-password")
    long_ago = stamp(now_utc().replace(year=now_utc().year - 1))
    db.execute("UPDATE sessions SET last_seen_at = ? WHERE token_hash = ?", [long_ago, auth.token_hash(idle)])
    db.execute("UPDATE sessions SET expires_at = ? WHERE token_hash = ?", [long_ago, auth.token_hash(old)])
    db.conn.commit()
    for token in (idle, old):
        with pytest.raises(NotSignedIn):
            studies.account(db, token)
    used = studies.sign_in(db, "hal", "hal-password")
    a_while_ago = stamp(now_utc().replace(microsecond=0) - auth.timedelta(hours=auth.SESSION_IDLE_HOURS - 1))
    db.execute("UPDATE sessions SET last_seen_at = ? WHERE token_hash = ?", [a_while_ago, auth.token_hash(used)])
    db.conn.commit()
    studies.account(db, used)  # in use: its idle clock starts again
    seen = db.execute("SELECT last_seen_at FROM sessions WHERE token_hash = ?", [auth.token_hash(used)]).fetchone()[0]
    assert seen > a_while_ago


def test_failed_sign_ins_are_throttled_per_user_with_growing_delays(review_env):
    db, _, _, _ = review_env
    studies.create_account(db, "ida", "rater", "ida-password")
    for _ in range(auth.FREE_FAILURES["user"]):
        with pytest.raises(NotSignedIn, match="unknown username or wrong password"):
            studies.sign_in(db, "ida", "wrong-password", client="10.0.0.1")
    # The right password now waits too: a guesser learns nothing from it.
    with pytest.raises(NotSignedIn, match=r"too many failed sign-ins: try again in 1 s"):
        studies.sign_in(db, "ida", "ida-password", client="10.0.0.2")
    assert [auth.throttle_delay("user", n) for n in range(2, 7)] == [0, 1, 2, 4, 8]
    assert auth.throttle_delay("user", 100) == auth.MAX_DELAY_S
    _age(db, "last_failure_at", "sign_in_failures", "2000-01-01T00:00:00.000Z")
    assert studies.sign_in(db, "ida", "ida-password", client="10.0.0.2")
    assert rater_store.sign_in_failures(db, ["user:ida"]) == []  # a success clears the count


def test_failed_sign_ins_are_throttled_per_client_across_user_names(review_env):
    db, _, _, _ = review_env
    for number in range(auth.FREE_FAILURES["client"]):
        with pytest.raises(NotSignedIn, match="unknown username"):
            studies.sign_in(db, f"guess{number}", "whatever-password", client="192.0.2.7")
    with pytest.raises(NotSignedIn, match="too many failed sign-ins"):
        studies.sign_in(db, "admin", "admin-password-1", client="192.0.2.7")
    assert studies.sign_in(db, "admin", "admin-password-1", client="192.0.2.8")  # another client is not held up


def test_an_unknown_user_gets_the_same_message_in_the_same_time(review_env):
    db, _, _, _ = review_env
    studies.create_account(db, "jon", "rater", "jon-password")
    studies.create_account(db, "kim", "rater")  # invitation only: no password hash at all

    def timed(user) -> tuple[float, str]:
        rater_store.clear_sign_in_failures(db, [f"user:{user}"])
        start = time.perf_counter()
        with pytest.raises(NotSignedIn) as error:
            studies.sign_in(db, user, "wrong-password")
        return time.perf_counter() - start, str(error.value)

    known, unknown, no_hash = ([timed(user) for _ in range(5)] for user in ("jon", "nobody-at-all", "kim"))
    assert {message for _, message in known + unknown + no_hash} == {studies.BAD_CREDENTIALS}
    median = {name: statistics.median(t for t, _ in runs) for name, runs in
              (("known", known), ("unknown", unknown), ("no_hash", no_hash))}
    assert 0.5 < median["unknown"] / median["known"] < 2, median
    assert 0.5 < median["no_hash"] / median["known"] < 2, median


def test_a_submit_is_accepted_only_for_the_trial_the_server_showed(review_env):
    db, data, admin, ids = review_env
    _study(db, data, admin, ids, [RaterSpec("lea", "lea-password")])
    token = studies.sign_in(db, "lea", "lea-password")
    study_id = studies.rater_studies(db, token)[0]["id"]
    mine = [row["id"] for row in db.query("SELECT trials.id FROM trials JOIN raters ON raters.id = trials.rater_id"
                                          " WHERE username = 'lea' ORDER BY position")]
    with pytest.raises(Forbidden, match="not the image you are being shown"):
        studies.submit(db, token, study_id, mine[0], ANSWER, "key-never-shown")  # nothing shown yet
    view = studies.next_item(db, token, study_id)
    assert view.trial_id == mine[0]
    with pytest.raises(Forbidden, match="not the image you are being shown"):
        studies.submit(db, token, study_id, mine[1], ANSWER, "key-ahead-of-time")
    assert studies.submit(db, token, study_id, mine[0], ANSWER, "key-shown-one")
    assert not studies.submit(db, token, study_id, mine[0], ANSWER, "key-shown-one")  # a retry stores nothing new
    assert db.execute("SELECT count(*) FROM ratings WHERE response_ms IS NULL").fetchone()[0] == 0


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "=cmd|' /C calc'!A0", "+SUM(1,2)", "@SUM(1)",
                                  "-2+3", "\t=1", "\r=1"])
def test_the_ratings_csv_neutralises_formula_cells(review_env, text):
    db, data, admin, ids = review_env
    _study(db, data, admin, ids, [RaterSpec("=mal", "mal-password")], name=text)
    token = studies.sign_in(db, "=mal", "mal-password")
    studies.save_profile(db, token, text, 3, "<100")
    study_id = studies.rater_studies(db, token)[0]["id"]
    view = studies.next_item(db, token, study_id)
    studies.submit(db, token, study_id, view.trial_id, {**ANSWER, "comment": text}, "key-formula-1")
    rows = list(csv.DictReader(io.StringIO(studies.export_csv(db, admin, study_id))))
    assert rows
    for row in rows:
        for column in ("study_name", "rater", "rater_specialty", "comment"):
            if row[column]:
                assert row[column].startswith("'") and row[column][1:] in (text, text.strip(), "=mal"), (column, row[column])
        assert row["rater_years_practice"] == "3"


def test_a_locked_database_is_retried_inside_the_server(tmp_path):
    from review.ui import retry_locked  # the tab's wrapper: every review callback goes through it

    path = tmp_path / "locked.db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.4, lambda: holder.execute("COMMIT")).start()
    calls = []

    @retry_locked
    def write():
        calls.append(1)
        with sqlite3.connect(path, timeout=0, check_same_thread=False) as conn:
            conn.execute("INSERT INTO t VALUES (1)")

    write()
    assert len(calls) > 1  # it met the lock and tried again, and the caller never saw the error
    assert sqlite3.connect(path).execute("SELECT count(*) FROM t").fetchone()[0] == 1
