"""The first run without a browser: the setup token (review.setup), its endpoint, and the demo project's build."""

from __future__ import annotations

import json
import threading

import pytest

from app import create_app
from appconfig import AppConfig, Services, build_config
from database import image_sets
from database import raters as rater_store
from database import studies as study_store
from database.connection import connect
from database.raters import DuplicateName
from evaluation.demo_project import DemoBuild, DemoBusy, DemoSizes, demo_summary
from review import auth, setup, studies
from review.auth import WeakPassword
from review.setup import INVALID, FirstRun
from review.studies import NotSignedIn, ReviewError

PASSWORD = "owner-password-1"


@pytest.fixture
def db(tmp_path):
    with connect(tmp_path / "study.db") as database:
        yield database


def _admins(db) -> list[str]:
    return [row["username"] for row in rater_store.list_raters(db) if row["role"] == "admin"]


# ---------------------------------------------------------------------------------------------
# The setup token


def test_a_token_is_drawn_only_while_no_real_admin_exists(db):
    drawn = FirstRun.draw(db)
    assert drawn is not None
    first_run, token = drawn
    assert len(token) >= 32 and first_run.matches(token)
    assert FirstRun.draw(db)[1] != token  # random, not derived from anything
    studies.create_account(db, "sim-admin", "admin", "random-password-x", simulated=True)
    assert setup.needs_admin(db)  # the demo's simulated admin is nobody's account
    studies.create_account(db, "alice", "admin", PASSWORD)
    assert not setup.needs_admin(db) and FirstRun.draw(db) is None


def test_the_token_creates_one_admin_signs_them_in_and_is_spent(db):
    first_run, token = FirstRun.draw(db)
    session = first_run.create_admin(db, token, "alice", PASSWORD, PASSWORD, client="10.0.0.5")
    who = studies.account(db, session)
    assert (who.username, who.role) == ("alice", "admin") and first_run.spent
    with pytest.raises(NotSignedIn, match="not valid"):
        first_run.create_admin(db, token, "mallory", PASSWORD, PASSWORD, client="10.0.0.5")
    assert _admins(db) == ["alice"]


def test_a_wrong_token_creates_nothing_and_the_message_tells_nothing(db):
    first_run, token = FirstRun.draw(db)
    for wrong in ("", None, token[:-1], token + "x", token.upper() if token.upper() != token else token.lower()):
        with pytest.raises(NotSignedIn) as refused:
            first_run.create_admin(db, wrong, "mallory", PASSWORD, PASSWORD, client=f"10.0.0.{len(str(wrong))}")
        assert str(refused.value) == INVALID
    assert _admins(db) == [] and not first_run.spent


def test_the_token_stops_working_once_an_admin_exists_another_way(db):
    first_run, token = FirstRun.draw(db)
    studies.create_account(db, "alice", "admin", PASSWORD)  # python -m review.accounts add alice --role admin
    with pytest.raises(NotSignedIn) as refused:
        first_run.create_admin(db, token, "mallory", PASSWORD, PASSWORD)
    assert str(refused.value) == INVALID and _admins(db) == ["alice"]


@pytest.mark.parametrize(("username", "password", "again", "error", "match"), [
    ("alice", PASSWORD, PASSWORD + "x", ReviewError, "the two passwords differ"),
    ("alice", "short", "short", WeakPassword, "at least 8 characters"),
    ("al ice", PASSWORD, PASSWORD, ReviewError, "username must be 1-64 characters"),
    ("dana", PASSWORD, PASSWORD, DuplicateName, "already taken"),
])
def test_bad_input_is_named_and_leaves_the_token_usable(db, username, password, again, error, match):
    studies.create_account(db, "dana", "rater", "dana-password")
    first_run, token = FirstRun.draw(db)
    with pytest.raises(error, match=match):
        first_run.create_admin(db, token, username, password, again)
    assert not first_run.spent and _admins(db) == []
    first_run.create_admin(db, token, "alice", PASSWORD, PASSWORD)
    assert _admins(db) == ["alice"]


def test_wrong_tokens_are_throttled_like_sign_in(db):
    first_run, token = FirstRun.draw(db)
    for _ in range(auth.FREE_FAILURES["client"]):
        with pytest.raises(NotSignedIn, match="not valid"):
            first_run.check(db, "guess", "10.9.9.9")
    with pytest.raises(NotSignedIn, match="too many failed sign-ins"):
        first_run.check(db, token, "10.9.9.9")  # even the right token waits: the address is throttled
    with pytest.raises(NotSignedIn, match="too many failed sign-ins"):
        studies.sign_in(db, "anyone", "whatever", client="10.9.9.9")  # one budget with sign-in
    first_run.check(db, token, "127.0.0.1")  # the owner, elsewhere, is not held up


def test_two_requests_with_the_token_at_once_make_one_admin(tmp_path):
    with connect(tmp_path / "study.db") as db:
        first_run, token = FirstRun.draw(db)
    outcomes = []

    def attempt(name):
        with connect(tmp_path / "study.db") as own:
            try:
                first_run.create_admin(own, token, name, PASSWORD, PASSWORD)
                outcomes.append(name)
            except NotSignedIn:
                outcomes.append(None)

    threads = [threading.Thread(target=attempt, args=(f"admin{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with connect(tmp_path / "study.db") as db:
        admins = _admins(db)
    assert len(admins) == 1 and sorted(outcomes, key=str).count(None) == 3 and admins[0] in outcomes


def test_the_token_is_kept_nowhere_on_disk(tmp_path):
    with connect(tmp_path / "study.db") as db:
        first_run, token = FirstRun.draw(db)
        first_run.create_admin(db, token, "alice", PASSWORD, PASSWORD)
    stored = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert token.encode() not in stored and auth.token_hash(token).encode() not in stored


def test_the_setup_link(tmp_path):
    assert setup.setup_url("T0K", "127.0.0.1", 7860) == "http://127.0.0.1:7860/?setup=T0K"
    assert setup.setup_url("T0K", "0.0.0.0", 8000) == "http://127.0.0.1:8000/?setup=T0K"
    assert setup.setup_url("T0K", "0.0.0.0", 8000, "https://review.example.org/") == "https://review.example.org/?setup=T0K"


def test_the_demo_project_flag():
    assert build_config(["--demo-project"], env={}).demo_project
    assert not build_config([], env={}).demo_project


# ---------------------------------------------------------------------------------------------
# Over HTTP


@pytest.fixture
def served(tmp_path):
    """The app with a setup token, launched; yields (config, client, token)."""
    from gradio_client import Client

    config = AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "checkpoints", db_path=tmp_path / "study.db",
                       device="cpu")
    services = Services(config)
    with services.db() as db:
        first_run, token = FirstRun.draw(db)
    app = create_app(config, services, first_run).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=True, quiet=True)
    try:
        yield config, Client(app.local_url, verbose=False), token
    finally:
        app.close()


def test_the_create_admin_endpoint_needs_the_page_that_read_the_token(served):
    config, client, token = served
    # An API caller never ran the page load that checks ?setup=TOKEN: its server-side token is empty.
    with pytest.raises(Exception, match="not valid"):
        client.predict("mallory", PASSWORD, PASSWORD, api_name="/create_admin")
    with connect(config.db_path) as db:
        assert _admins(db) == [] and setup.needs_admin(db)


def test_the_demo_panel_answers_admins_only(served):
    config, client, _ = served
    with pytest.raises(Exception, match="please sign in"):
        client.predict("", api_name="/demo_project_start")
    with connect(config.db_path) as db:
        studies.create_account(db, "dana", "rater", "dana-password")
        rater = studies.sign_in(db, "dana", "dana-password")
    with pytest.raises(Exception, match="needs an admin account"):
        client.predict(rater, api_name="/demo_project_start")
    assert not (config.data_dir / "demo-real").exists()


# ---------------------------------------------------------------------------------------------
# The demo project


SMALL = DemoSizes(real_per_label=8, train_per_label=4, raters=2, synthetic_per_label=1, device="cpu")


@pytest.mark.slow
def test_the_demo_project_builds_in_the_background_marked_demo_and_apart_from_clinical_data(tmp_path, tiny_run):
    # The tiny trained checkpoints stand in for the embedded demo's: the same path, in less time.
    config = AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "checkpoints", db_path=tmp_path / "study.db",
                       device="cpu", demo_dir=tiny_run)
    with connect(config.db_path) as db:
        image_sets.ensure_set(db, image_sets.DEFAULT_SET)  # a clinical set, as a real install has
    demo = DemoBuild(Services(config), SMALL)
    demo.start()
    with pytest.raises(DemoBusy, match="being built already"):
        demo.start()
    assert demo.state.phase == "running"
    state = demo.wait(timeout=540)
    assert state.phase == "done", state.error
    assert state.fraction == 1.0 and state.finished_at

    with connect(config.db_path) as db:
        summary = demo_summary(db)
        sets = {s["name"]: s for s in image_sets.list_sets(db)}
        made = study_store.list_studies(db)
        raters = rater_store.list_raters(db)
        results = list(db.query("SELECT metric, details FROM metric_results"))
        ratings = db.execute("SELECT count(*) FROM ratings").fetchone()[0]
    assert summary["ready"] and summary == state.summary
    assert sets["demo"]["kind"] == "phantom-demo" and sets["demo"]["public"]
    assert sets["demo"]["counts"] == {"AD": 8, "NonAD": 8}
    assert sets["default"]["counts"] == {"AD": 0, "NonAD": 0}  # nothing went into the clinical set
    assert sorted(s["design"]["mode"] for s in made) == ["pair", "single"] and ratings > 0
    assert all(s["simulated"] and s["design"]["image_sets"] == ["demo"] and s["name"].endswith("— demo") for s in made)
    assert raters and all(r["simulated"] for r in raters)  # sim-admin and the panel: no real account was made
    assert results and all(json.loads(row["details"])["reference_sets"] == ["demo"] for row in results)
    assert {row["metric"] for row in results} >= {"fid", "kid", "memorisation"}


def test_a_failed_build_says_why_and_can_be_started_again(tmp_path):
    config = AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "checkpoints", db_path=tmp_path / "study.db",
                       device="cpu")
    demo = DemoBuild(Services(config), DemoSizes(real_per_label=0))
    demo.start()
    state = demo.wait(timeout=60)
    assert state.phase == "failed" and "n_per_label must be an integer >= 1" in state.error
    demo.start()  # a failed build may be started again
    assert demo.wait(timeout=60).phase == "failed"


def test_a_second_process_on_the_same_data_folder_is_refused(tmp_path):
    from evaluation.demo_project import LOCK_FILE, _take_file_lock

    held = _take_file_lock(tmp_path / LOCK_FILE)
    try:
        config = AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "c", db_path=tmp_path / "study.db", device="cpu")
        with pytest.raises(DemoBusy, match="another process is building the demo project"):
            DemoBuild(Services(config), SMALL).start()
    finally:
        held.close()
