"""The served app killed with ``kill -9`` mid-study: every acknowledged rating is stored exactly once, and the
raters reconnecting at once after the restart never see a database error."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from appconfig import AppConfig
from database.connection import connect
from review import study_setup
from tests.conftest import REPO
from tests.review.conftest import open_single_study

N_RATERS = 6
ANSWER = ("real", "3", "4", "NonAD", "2", [], "", None, None, None, None)
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(config: AppConfig, port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    server = subprocess.Popen(
        [sys.executable, "app.py", "--data-dir", str(config.data_dir), "--db", str(config.db_path),
         "--checkpoints", str(config.checkpoints_dir), "--port", str(port), "--device", "cpu"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2)
            return server
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise AssertionError("the server did not start")


@pytest.fixture
def study(tmp_path):
    config = AppConfig(data_dir=tmp_path / "data", checkpoints_dir=tmp_path / "checkpoints", db_path=tmp_path / "study.db")
    raters = [study_setup.RaterSpec(f"kr{i}", f"kill-password-{i}") for i in range(N_RATERS)]
    created = open_single_study(config, tmp_path / "images", "kill -9", raters, ratings_per_image=3, seed=11)
    return config, created


def _rate(url: str, number: int, study_id: int, acked: list, errors: list, stop: threading.Event) -> bool:
    """Rate until done (True) or until the server goes away (False); acknowledged trial ids go to ``acked``."""
    from gradio_client import Client

    try:
        client = Client(url, verbose=False)
        token = client.predict(f"kr{number}", f"kill-password-{number}", api_name="/sign_in")[0]
        reply = client.predict(token, study_id, api_name="/next_trial")
        while reply[2]:
            trial = reply[2]
            reply = client.predict(token, study_id, trial, reply[3], *ANSWER, api_name="/submit_rating")
            acked.append(int(trial))
            if stop.is_set():
                time.sleep(0.05)
        return True
    except Exception as error:  # the server was killed under this rater: note what they saw
        errors.append(str(error))
        return False


def test_kill_9_mid_study_keeps_every_acknowledged_rating_exactly_once(study):
    config, created = study
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    acked: list[int] = []
    before_errors: list[str] = []
    server = _serve(config, port)
    stop = threading.Event()
    try:
        with concurrent.futures.ThreadPoolExecutor(N_RATERS) as pool:
            futures = [pool.submit(_rate, url, i, created.study_id, acked, before_errors, stop) for i in range(N_RATERS)]
            while len(acked) < 15 and not all(f.done() for f in futures):
                time.sleep(0.05)
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            first = [f.result(timeout=120) for f in futures]
        assert not all(first), "the kill came after everyone had finished"
        server = _serve(config, port)
        after_errors: list[str] = []
        with concurrent.futures.ThreadPoolExecutor(N_RATERS) as pool:  # everyone reconnects at once
            done = list(pool.map(lambda i: _rate(url, i, created.study_id, acked, after_errors, threading.Event()),
                                 range(N_RATERS)))
        assert all(done) and not after_errors, after_errors
    finally:
        server.kill()
        server.wait(timeout=30)
    with connect(config.db_path) as db:
        stored = [row[0] for row in db.execute("SELECT trial_id FROM ratings").fetchall()]
        no_time = db.execute("SELECT count(*) FROM ratings WHERE response_ms IS NULL").fetchone()[0]
    assert len(stored) == len(set(stored)) == sum(created.trials_per_rater.values())
    assert set(acked) <= set(stored) and len(acked) == len(set(acked))
    assert no_time == 0
