"""Review latency, submit -> next item (p50/p95), for 1 and N raters at once: this checkout against a baseline commit.

    .venv/bin/python benchmarks/review.py [--raters 20] [--trials 20] [--baseline 1468bbf] [--no-http]

Each code tree (the baseline commit, exported with ``git archive``, and this checkout) is measured
in its own worker process, in the same run, the same way:
- in-process: the work one submit handler does, timed per call from 1 and from N threads. A tree
  is timed as its Rate tab calls it: with ``studies.submit_and_next_shared``, ``Services.db()``, the
  session check, then the shared commit; with ``studies.submit_and_next``, the same on the thread's
  connection; an older tree as that code was timed (``studies.submit`` then ``studies.next_item`` on
  one ``connect``);
- over HTTP: the served app (``create_app(config).queue(default_concurrency_limit=2)``, as app.py
  serves it) in a server process of its own, as in use, driven by gradio_client from N threads of the
  worker process on the same machine, each a signed-in rater calling ``/submit_rating`` until the
  schedule ends (queue, JSON and the image download included). ``--same-process`` serves the app
  from the clients' own process instead (one interpreter lock for server and clients), as the
  figures before December 2026 were measured.
  The clients pass ``ssl_verify=False``: each gradio_client request builds new httpx clients,
  and with TLS verification on each one loads the CA bundle (about 60 ms of client CPU, three
  times per request, for a plain-HTTP 127.0.0.1 address). ``--gradio-client-defaults`` measures
  with that cost, as the figures in issue 17 were.
Every submit must be stored exactly once; the worker checks the ratings table afterwards.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE_REF = "1468bbf"  # the code measured in issue 17: server 12 / 143 ms (p50 / p95, 20 raters), HTTP 156 ms p50
ANSWER = {"real_or_synthetic": "real", "source_confidence": 3, "realism": 4, "pathology": "AD", "pathology_confidence": 2}
HTTP_ANSWER = ("real", "3", "4", "AD", "2", [], "", None, None, None, None)


# ---------------------------------------------------------------------------------------------
# The worker: runs inside one code tree (its folder first on sys.path), prints its times as JSON


def make_study(tmp: Path, raters: int, trials: int):
    """A single-mode study of about ``trials`` trials per rater, open, with ``raters`` raters r00, r01, ..."""
    # Imported here: from the code tree this worker measures (its folder was put first on sys.path).
    from database import raters as rater_store
    from database import studies as study_store
    from database.connection import connect
    from review import studies, study_setup
    from review.design import StudyDesign
    from tests.review.conftest import add_images

    config = study_config(tmp)
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
        for spec in specs:  # the profile is asked before the first trial: given already
            rater_store.set_profile(db, rater_store.get_rater_by_username(db, spec.username)["id"], "gastroenterology",
                                    10, "1000-5000")
    return config, created.study_id


def rate_in_process(services, study_id: int, user: str, password: str) -> list[float]:
    """One rater's submits through the server-side functions; seconds per submit -> next item."""
    # Imported here: from the code tree this worker measures.
    from review import studies

    with services.db() as db:
        token = studies.sign_in(db, user, password)
        view = studies.next_item(db, token, study_id)
    combined = hasattr(studies, "submit_and_next")
    shared = hasattr(studies, "submit_and_next_shared")
    times = []
    while view is not None:
        key = f"key-{user}-{view.trial_id}"
        start = time.perf_counter()
        with services.db() as db:
            if shared:  # as the Rate tab's submit calls it
                studies.account(db, token)
                _, view = studies.submit_and_next_shared(services.pool, token, study_id, view.trial_id, ANSWER, key)
            elif combined:
                studies.account(db, token)
                _, view = studies.submit_and_next(db, token, study_id, view.trial_id, ANSWER, key)
            else:  # the baseline's path, as its benchmark timed it
                studies.submit(db, token, study_id, view.trial_id, ANSWER, key)
                view = studies.next_item(db, token, study_id)
        times.append(time.perf_counter() - start)
    return times


def rate_over_http(url: str, study_id: int, user: str, password: str, client_defaults: bool) -> list[float]:
    """One rater's submits through the served app with gradio_client; seconds per ``/submit_rating``."""
    from gradio_client import Client

    client = Client(url, verbose=False, ssl_verify=client_defaults)
    token = client.predict(user, password, api_name="/sign_in")[0]
    reply = client.predict(token, study_id, api_name="/next_trial")
    times = []
    while reply[2]:
        start = time.perf_counter()
        reply = client.predict(token, study_id, reply[2], reply[3], *HTTP_ANSWER, api_name="/submit_rating")
        times.append(time.perf_counter() - start)
    return times


def study_config(tmp: Path):
    """The ``AppConfig`` of the study ``make_study`` writes under ``tmp``."""
    # Imported here: from the code tree this worker measures.
    from appconfig import AppConfig

    return AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "ck", db_path=tmp / "study.db", device="cpu")


def serve(tmp: Path, port: int) -> None:
    """The server process: the app of the study under ``tmp``, served as app.py serves it, until terminated."""
    # Imported here: from the code tree this worker measures.
    from app import create_app

    create_app(study_config(tmp)).queue(default_concurrency_limit=2).launch(
        server_name="127.0.0.1", server_port=port, quiet=True)


def start_server(tmp: Path) -> tuple[subprocess.Popen, str]:
    """Start ``serve`` in a process of its own (this script with ``--serve``); returns it and its address once it answers."""
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tree = Path(sys.path[0])
    # Its output goes nowhere: a server left running must not hold the worker's pipes open.
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--serve",
                               str(tmp), "--port", str(port)], cwd=tree, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an http_proxy
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the server process for {tree} ended with status {server.returncode}")
            try:
                with direct.open(url, timeout=5):
                    return server, url
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"the server process for {tree} did not answer at {url} within 120 s")
    except BaseException:
        stop_server(server)
        raise


def stop_server(server: subprocess.Popen) -> None:
    """End the server process: asked first, killed after 10 s."""
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def measure(how: str, raters: int, trials: int, client_defaults: bool = False, same_process: bool = False) -> list[float]:
    """Seconds per submit of ``raters`` raters rating at once (``how``: in-process or http), on a fresh study."""
    # Imported here: from the code tree this worker measures.
    from app import create_app
    from appconfig import Services
    from database.connection import connect

    with tempfile.TemporaryDirectory() as tmp:
        config, study_id = make_study(Path(tmp), raters, trials)
        users = [(f"r{i:02d}", f"password-{i:02d}") for i in range(raters)]
        app = server = None
        if how == "http" and same_process:
            app = create_app(config).queue(default_concurrency_limit=2)
            app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
            url = app.local_url
        elif how == "http":
            server, url = start_server(Path(tmp))
        try:
            services = Services(config)
            with concurrent.futures.ThreadPoolExecutor(raters) as pool:
                if how == "http":
                    jobs = [pool.submit(rate_over_http, url, study_id, u, p, client_defaults) for u, p in users]
                else:
                    jobs = [pool.submit(rate_in_process, services, study_id, u, p) for u, p in users]
                times = [t for job in jobs for t in job.result()]
        finally:
            if app is not None:
                app.close()
            if server is not None:
                stop_server(server)
        with connect(config.db_path) as db:
            stored = db.execute("SELECT count(*) FROM ratings").fetchone()[0]
        if stored != len(times):
            raise RuntimeError(f"{len(times)} submits acknowledged but {stored} ratings stored")
        return times


def worker(runs: list[list], client_defaults: bool, same_process: bool) -> None:
    """Print ``{"how/raters": [seconds, ...]}`` for each (how, raters, trials) of ``runs``."""
    out = {f"{how}/{raters}": measure(how, raters, trials, client_defaults, same_process) for how, raters, trials in runs}
    print(json.dumps(out))


# ---------------------------------------------------------------------------------------------
# The driver: exports the baseline, runs one worker per tree, prints the table


def export_tree(ref: str, into: Path) -> Path:
    """The files of commit ``ref`` in a new folder under ``into`` (``git archive``; the checkout is not touched)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref],
                             check=True, capture_output=True).stdout
    folder = into / f"baseline-{ref}"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def run_worker(tree: Path, runs: list[list], client_defaults: bool, same_process: bool) -> dict[str, list[float]]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--runs", json.dumps(runs)]
    if client_defaults:
        command.append("--gradio-client-defaults")
    if same_process:
        command.append("--same-process")
    done = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the worker for {tree} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def pct(values: list[float], q: int) -> float:
    """The ``q``-th percentile of ``values`` (seconds), in milliseconds."""
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def print_table(results: dict[str, dict[str, list[float]]], runs: list[list], baseline: str | None) -> None:
    print("| path | raters at once | code | submits | p50 ms | p95 ms | p50 / baseline | p95 / baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for how, raters, _ in runs:
        key = f"{how}/{raters}"
        base = results[baseline][key] if baseline else None
        for label, measured in results.items():
            times = measured[key]
            ratio = (f"{pct(times, 50) / pct(base, 50):.2f} | {pct(times, 95) / pct(base, 95):.2f}"
                     if base else "- | -")
            print(f"| {how} | {raters} | {label} | {len(times)} | {pct(times, 50):.1f} | {pct(times, 95):.1f} | {ratio} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raters", type=int, default=20, help="raters rating at once (default 20); 1 is measured too")
    parser.add_argument("--trials", type=int, default=20, help="approximate trials per rater (default 20)")
    parser.add_argument("--baseline", default=BASELINE_REF, help=f"git commit to compare with (default {BASELINE_REF}); '' for none")
    parser.add_argument("--tree", type=Path, default=REPO, help="the code to measure (default this checkout)")
    parser.add_argument("--no-http", action="store_true", help="only the in-process path")
    parser.add_argument("--gradio-client-defaults", action="store_true",
                        help="HTTP clients with httpx's TLS verification on (a CA bundle loaded per request), as in issue 17")
    parser.add_argument("--same-process", action="store_true",
                        help="serve the app from the HTTP clients' own process (one interpreter lock for both), as measured before")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--runs", help=argparse.SUPPRESS)
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port)
        return
    if args.worker:
        worker(json.loads(args.runs), args.gradio_client_defaults, args.same_process)
        return
    runs = [[how, raters, args.trials] for how in ("in-process", *(() if args.no_http else ("http",)))
            for raters in dict.fromkeys((1, args.raters))]
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.1f}; date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"command: {' '.join(sys.argv)}\n")
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        label = None
        try:
            baseline = export_tree(args.baseline, Path(tmp)) if args.baseline else None
        except (OSError, subprocess.CalledProcessError) as error:  # no git, or a copy without that commit
            print(f"no baseline: commit {args.baseline!r} could not be exported ({error}); measuring this tree only\n")
            baseline = None
        if baseline is not None:
            label = f"baseline {args.baseline}"
            results[label] = run_worker(baseline, runs, args.gradio_client_defaults, args.same_process)
        results["this tree" if args.tree == REPO else str(args.tree)] = run_worker(args.tree, runs, args.gradio_client_defaults, args.same_process)
    print_table(results, runs, label)
    print(f"\nEvery submit was stored exactly once; load average after the run {os.getloadavg()[0]:.1f}.")


if __name__ == "__main__":
    # Run as a script only, and before gradio and torch are imported (as `python app.py` does): no usage
    # reports, no Hub downloads, idle OpenMP threads that sleep; a worker imports the tree it measures.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "--worker" in sys.argv:
        sys.path.insert(0, sys.argv[sys.argv.index("--worker") + 1])
    main()
