"""The Review room through its HTTP API (gradio_client): 20 raters at once, and what a rater cannot reach."""

from __future__ import annotations

import concurrent.futures
import json

import pytest

from app import create_app
from appconfig import AppConfig
from database import studies as study_store
from database.connection import connect
from review import studies, study_setup
from review.design import StudyDesign
from tests.review.conftest import ADMIN_PASSWORD, open_single_study

N_RATERS = 20
SINGLE_ANSWER = ("synthetic", "4", "2", "AD", "3", ["colour"], "", None, None, None, None)


@pytest.fixture(scope="module")
def served_study(tmp_path_factory):
    from gradio_client import Client


    tmp = tmp_path_factory.mktemp("review-api")
    config = AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "checkpoints", db_path=tmp / "study.db", device="cpu")
    raters = [study_setup.RaterSpec(f"rater{i:02d}", f"password-{i:02d}") for i in range(N_RATERS)]
    created = open_single_study(config, tmp / "images", "concurrency", raters, ratings_per_image=10, seed=7)
    app = create_app(config).queue(default_concurrency_limit=2)
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=True, quiet=True)
    try:
        yield config, created, app.local_url, Client
    finally:
        app.close()


def _sign_in(client, user, password) -> str:
    return client.predict(user, password, api_name="/sign_in")[0]


def _rate_everything(url, Client, user, password, study_id) -> int:
    client = Client(url, verbose=False)
    token = _sign_in(client, user, password)
    reply = client.predict(token, study_id, api_name="/next_trial")
    submitted = 0
    while reply[2]:  # the trial id; empty when the rater is done
        trial, key = reply[2], reply[3]
        reply = client.predict(token, study_id, trial, key, *SINGLE_ANSWER, api_name="/submit_rating")
        if submitted == 0:  # a retry of the same submit (dropped connection): must store nothing new
            client.predict(token, study_id, trial, key, *SINGLE_ANSWER, api_name="/submit_rating")
        submitted += 1
    assert reply[0].startswith("### All done")
    return submitted


def test_twenty_raters_at_once_store_every_rating_exactly_once(served_study):
    config, created, url, Client = served_study
    with concurrent.futures.ThreadPoolExecutor(N_RATERS) as pool:
        futures = [pool.submit(_rate_everything, url, Client, f"rater{i:02d}", f"password-{i:02d}", created.study_id)
                   for i in range(N_RATERS)]
        results = [future.result(timeout=300) for future in futures]
    with connect(config.db_path) as db:
        per_rater = {row["username"]: (row["rated"], row["total"]) for row in study_store.study_progress(db, created.study_id)}
        total_ratings = db.execute("SELECT count(*) FROM ratings").fetchone()[0]
        distinct = db.execute("SELECT count(DISTINCT trial_id) FROM ratings").fetchone()[0]
    submitted = sum(results)
    assert all(rated == total for rated, total in per_rater.values()), per_rater
    assert total_ratings == distinct == submitted == sum(created.trials_per_rater.values())


def test_a_rater_reaches_neither_other_raters_trials_nor_admin_endpoints(served_study):
    from gradio_client.exceptions import AppError

    config, created, url, Client = served_study
    client = Client(url, verbose=False)
    mine = _sign_in(client, "rater00", "password-00")
    with connect(config.db_path) as db:
        other = db.execute("SELECT trials.id FROM trials JOIN raters ON raters.id = trials.rater_id"
                           " WHERE raters.username = 'rater01' ORDER BY position LIMIT 1").fetchone()[0]
    with pytest.raises(AppError, match="not in your schedule"):
        client.predict(mine, created.study_id, str(other), "steal-attempt-1", *SINGLE_ANSWER, api_name="/submit_rating")
    for endpoint, args in [("/export_ratings", (created.study_id,)), ("/study_progress", (created.study_id,)),
                           ("/list_studies", ()), ("/audit_study", (created.study_id,)),
                           ("/open_study", (created.study_id, "")), ("/close_study", (created.study_id,))]:
        with pytest.raises(AppError, match="needs an admin account"):
            client.predict(mine, *args, api_name=endpoint)
    with pytest.raises(AppError, match="sign in"):
        client.predict("forged-token", created.study_id, api_name="/next_trial")


def test_a_trial_reply_names_no_source_label_or_checkpoint(served_study):
    config, created, url, Client = served_study
    client = Client(url, verbose=False)
    with connect(config.db_path) as db:
        studies_admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
        # a fresh rater added to a second study, so there is something left to show
        design = StudyDesign(mode="pair", checkpoint_ids=(1, 2), images_per_cell=1, size=64, seed=1)
        second = study_setup.create_study(db, config.data_dir, studies_admin, "leak check", design,
                                          [study_setup.RaterSpec("leakcheck", "password-leak")])
        study_store.set_study_audit(db, second.study_id, {"passed": True, "leaks": []})
        study_setup.open_study(db, studies_admin, second.study_id)
        forbidden = {row["source_path"] for row in study_store.study_images(db, second.study_id)}
        forbidden |= {row["sha256"] for row in study_store.study_images(db, second.study_id)}
        # The presented files' random names may spell "AD" or "ckpt" by chance: they are masked for
        # the word check (the paths, sha256s and labels above are checked in the raw reply).
        random_names = {row["token"] for row in study_store.study_images(db, second.study_id)}
    token = _sign_in(client, "leakcheck", "password-leak")
    shown = client.predict(token, second.study_id, api_name="/next_trial")
    reply = json.dumps(shown)
    for word in forbidden:
        assert word not in reply, word
    words = reply.replace(shown[3], "<submit key>")  # random too (secrets.token_urlsafe)
    for name in random_names:
        words = words.replace(name, "<random name>")
    for word in ["AD", "NonAD", "synthetic", "real-", "syn-", "checkpoint", "ckpt"]:
        assert word not in words, word


def test_an_incomplete_submit_names_every_missing_answer_and_stores_nothing(served_study):
    config, created, url, Client = served_study
    client = Client(url, verbose=False)
    with connect(config.db_path) as db:
        admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
        second = study_setup.create_study(db, config.data_dir, admin, "incomplete", StudyDesign(
            mode="single", checkpoint_ids=(1, 2), images_per_cell=1, size=64, seed=3),
            [study_setup.RaterSpec("hasty", "password-hasty")])
        study_store.set_study_audit(db, second.study_id, {"passed": True, "leaks": []})
        study_setup.open_study(db, admin, second.study_id)
    token = _sign_in(client, "hasty", "password-hasty")
    shown = client.predict(token, second.study_id, api_name="/next_trial")
    trial, key = shown[2], shown[3]
    partial = ("synthetic", None, "2", None, None, [], "", None, None, None, None)
    reply = client.predict(token, second.study_id, trial, key, *partial, api_name="/submit_rating")
    notice = next(value for value in reply if isinstance(value, str) and "please answer" in value)
    assert "please answer 3 more" in notice
    for title in ("Confidence", "Pathology", "Pathology confidence"):
        assert title in notice
    assert "Realism" not in notice and "Real or synthetic" not in notice
    assert reply[2] == reply[3] == {"__type__": "update"}  # the trial and its submit key are left as they are
    assert not any(isinstance(value, dict) and value.get("path") for value in reply)  # and the image: nothing is sent
    with connect(config.db_path) as db:
        assert db.execute("SELECT count(*) FROM ratings JOIN trials ON trials.id = ratings.trial_id"
                          " WHERE trials.study_id = ?", [second.study_id]).fetchone()[0] == 0
    reply = client.predict(token, second.study_id, trial, key, *SINGLE_ANSWER, api_name="/submit_rating")
    assert reply[0].startswith("**Image 2 of") and "please answer" not in json.dumps(reply)
    # A submit's reply is the next trial's values only: no layout update (each costs the server milliseconds).
    assert not [value for value in reply if isinstance(value, dict) and value.get("__type__") == "update"]
