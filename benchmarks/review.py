"""Review server latency: submit -> next item (p50/p95) with 1 and 20 raters at once, and SQLite commits/s.

    .venv/bin/python benchmarks/review.py [--raters 20] [--trials 20]

Two measurements of the same path:
- in-process: the work one submit handler does (``studies.submit`` + ``studies.next_item``, each
  with its own SQLite connection, as in the app), timed per call from 1 and from N threads;
- over HTTP: the same through the served app with gradio_client (queue, JSON, file cache included).
Baseline for the commit rate: a bare ``INSERT`` + commit per row into a table of the same shape,
measured in the same run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

if __name__ == "__main__":
    # Run as a script only, and before gradio and torch are imported below (as `python app.py` does):
    # no usage reports, no Hub downloads, idle OpenMP threads that sleep; the project from any folder.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app import create_app  # noqa: E402
from appconfig import AppConfig  # noqa: E402
from database import ratings as rating_store  # noqa: E402
from database import studies as study_store  # noqa: E402
from database.connection import connect  # noqa: E402
from review import studies, study_setup  # noqa: E402
from review.design import StudyDesign  # noqa: E402
from tests.review.conftest import add_images  # noqa: E402

ANSWER = {"real_or_synthetic": "real", "source_confidence": 3, "realism": 4, "pathology": "AD", "pathology_confidence": 2}


def make_study(tmp: Path, raters: int, trials: int) -> tuple[AppConfig, int]:
    config = AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "ck", db_path=tmp / "study.db", device="cpu")
    with connect(config.db_path) as db:
        ids = add_images(db, tmp / "images", n_real=trials, n_synthetic=max(1, trials // 4))
        studies.create_account(db, "admin", "admin", "admin-password")
        admin = studies.sign_in(db, "admin", "admin-password")
        design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=max(1, trials // 4),
                             real_per_label=trials // 2, ratings_per_image=raters, size=64, seed=0)
        specs = [study_setup.RaterSpec(f"r{i:02d}", f"password-{i:02d}") for i in range(raters)]
        created = study_setup.create_study(db, config.data_dir, admin, "bench", design, specs)
        study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
        study_setup.open_study(db, admin, created.study_id)
    return config, created.study_id


def rate_in_process(config: AppConfig, study_id: int, user: str, password: str) -> list[float]:
    with connect(config.db_path) as db:
        token = studies.sign_in(db, user, password)
        view = studies.next_item(db, token, study_id)
    times = []
    while view is not None:
        start = time.perf_counter()
        with connect(config.db_path) as db:
            studies.submit(db, token, study_id, view.trial_id, ANSWER, f"key-{user}-{view.trial_id}")
            view = studies.next_item(db, token, study_id)
        times.append(time.perf_counter() - start)
    return times


def rate_over_http(url: str, study_id: int, user: str, password: str) -> list[float]:
    from gradio_client import Client

    client = Client(url, verbose=False)
    token = client.predict(user, password, api_name="/sign_in")[0]
    reply = client.predict(token, study_id, api_name="/next_trial")
    times = []
    while reply[2]:
        start = time.perf_counter()
        reply = client.predict(token, study_id, reply[2], reply[3], "real", "3", "4", "AD", "2", [], "", None, None, None, None,
                               api_name="/submit_rating")
        times.append(time.perf_counter() - start)
    return times


def run(raters: int, trials: int, how: str) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        config, study_id = make_study(Path(tmp), raters, trials)
        users = [(f"r{i:02d}", f"password-{i:02d}") for i in range(raters)]
        app = None
        if how == "http":
            app = create_app(config).queue(default_concurrency_limit=2)
            app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        try:
            with concurrent.futures.ThreadPoolExecutor(raters) as pool:
                if how == "http":
                    jobs = [pool.submit(rate_over_http, app.local_url, study_id, u, p) for u, p in users]
                else:
                    jobs = [pool.submit(rate_in_process, config, study_id, u, p) for u, p in users]
                return [t for job in jobs for t in job.result()]
        finally:
            if app is not None:
                app.close()


def commit_rates(n: int = 500) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        config, study_id = make_study(Path(tmp), 1, 8)
        with connect(config.db_path) as db:
            trial_ids = [row["id"] for row in db.query("SELECT id FROM trials")]
            rater = next(db.query("SELECT id FROM raters WHERE username = 'r00'"))["id"]
            # ratings of one trial are refused after the first, so time fresh trials: re-insert after deleting
            start = time.perf_counter()
            for i in range(n):
                trial = trial_ids[i % len(trial_ids)]
                if i >= len(trial_ids):
                    with db.atomic():
                        db.execute("DELETE FROM ratings WHERE trial_id = ?", [trial])
                rating_store.insert_rating(db, trial, rater, f"commit-{i:06d}", ANSWER)
            ours = n / (time.perf_counter() - start)
        bare = sqlite3.connect(Path(tmp) / "bare.db", isolation_level=None)
        bare.execute("PRAGMA journal_mode=WAL")
        bare.execute("CREATE TABLE r (id INTEGER PRIMARY KEY, k TEXT UNIQUE, a TEXT, b INT, c INT, d TEXT, e INT)")
        start = time.perf_counter()
        for i in range(n):
            bare.execute("BEGIN")
            bare.execute("INSERT INTO r (k, a, b, c, d, e) VALUES (?, 'real', 3, 4, 'AD', 2)", [f"k{i}"])
            bare.execute("COMMIT")
        baseline = n / (time.perf_counter() - start)
        bare.close()
    return ours, baseline


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raters", type=int, default=20)
    parser.add_argument("--trials", type=int, default=20, help="approximate trials per rater")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; command: {' '.join(sys.argv)}\n")
    print("| path | raters at once | submits | p50 ms | p95 ms | p95 / p95 of 1 rater |")
    print("|---|---|---|---|---|---|")
    for how in ("in-process", "http"):
        base = None
        for raters in (1, args.raters):
            times = run(raters, args.trials, how)
            p95 = pct(times, 95)
            base = base or p95
            print(f"| {how} | {raters} | {len(times)} | {pct(times, 50):.1f} | {p95:.1f} | {p95 / base:.2f} |")
    ours, bare = commit_rates()
    print(f"\nSQLite commits: insert_rating {ours:.0f}/s; bare INSERT+COMMIT baseline {bare:.0f}/s (ratio {ours / bare:.2f})")


if __name__ == "__main__":
    main()
