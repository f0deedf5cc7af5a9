"""Time to render the Analysis tab on a study, printed as Markdown.

    .venv/bin/python benchmarks/analysis.py [--data-dir data] [--study ID] [--extractor efficientnet] [--repeats 3]

Default: the newest study of the demo database (``make demo-analysis`` fills it). The database and
feature cache are copied to a temporary folder first (the benchmark adds an admin account there),
and nothing is written to the original. Rows:

- server side, step by step (features from a cold cache, then warm; the statistics of
  ``analyse_study``; the t-SNE embedding; every figure), as the Analysis tab's Analyse callback runs them;
- over HTTP: the app launched on a free port and the ``/analyse_study`` endpoint called with
  gradio_client, the way the tab's Analyse button does (warm cache), and the size of its reply.

The baseline is the warm server-side total; the HTTP row's ratio shows what transport and
serialising the figures add.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # the script only, before torch loads; importing it changes nothing
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import argparse
import json
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)

# The project's packages only now that sys.path holds the repository, and gradio only after the
# environment above is set (it reads it once, at import).
from app import create_app  # noqa: E402
from appconfig import AppConfig  # noqa: E402
from database.connection import connect  # noqa: E402
from evaluation.cache import FeatureCache  # noqa: E402
from evaluation.features import get_extractor  # noqa: E402
from evaluation.study.analysis import analyse_study, embedding_points, study_images, study_list  # noqa: E402
from evaluation.study.report import build_figures  # noqa: E402
from review import studies  # noqa: E402

PASSWORD = "bench-admin-password"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="the app's data folder (default ./data)")
    parser.add_argument("--study", type=int, help="study id (default: the newest)")
    parser.add_argument("--extractor", default="efficientnet", choices=("efficientnet", "inception"))
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats; the median is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="polyp-bench-analysis-") as tmp:
        config = _copy(args.data_dir, Path(tmp))
        study = args.study or _newest_study(config)
        rows = _server_side(config, study, args.extractor, args.repeats)
        rows.append(_over_http(config, study, args.extractor, args.repeats))
    _print(rows, study, args)


def _copy(data_dir: Path, tmp: Path) -> AppConfig:
    source = data_dir / "polypturing.db"
    if not source.is_file():
        raise SystemExit(f"error: no database at {source}; run `make demo-analysis` first")
    (tmp / "data").mkdir()
    shutil.copy2(source, tmp / "data" / "polypturing.db")
    config = AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "data" / "checkpoints",
                       db_path=tmp / "data" / "polypturing.db", device="cpu")
    with connect(config.db_path) as db:
        studies.create_account(db, "bench-admin", "admin", PASSWORD)
    return config


def _newest_study(config: AppConfig) -> int:
    with connect(config.db_path) as db:
        listed = study_list(db)
    if not listed:
        raise SystemExit("error: the database has no study; run `make demo-analysis` first")
    return listed[0]["id"]


def _server_side(config: AppConfig, study: int, extractor_name: str, repeats: int) -> list[tuple]:
    model = get_extractor(extractor_name)
    cache = FeatureCache(config.data_dir / "features")
    timings: dict[str, list[float]] = {}
    with connect(config.db_path) as db:
        start = time.perf_counter()
        images = study_images(db, study, model, cache)
        cold = time.perf_counter() - start
        for _ in range(repeats):
            steps = {}
            start = time.perf_counter()
            images = study_images(db, study, model, cache)
            steps["features (warm cache)"] = time.perf_counter() - start
            start = time.perf_counter()
            analysis = analyse_study(db, study, extractor_name, "none", images)
            steps["statistics (analyse_study, 300 bootstrap resamples)"] = time.perf_counter() - start
            start = time.perf_counter()
            fitted, points = embedding_points(images, analysis.frame, "tsne")
            steps["t-SNE embedding and thumbnails"] = time.perf_counter() - start
            start = time.perf_counter()
            build_figures(analysis, fitted, points)
            steps["figures (plotly)"] = time.perf_counter() - start
            for name, seconds in steps.items():
                timings.setdefault(name, []).append(seconds)
    rows = [(f"features, cold cache ({len(images.table)} images, {extractor_name})", cold, None)]
    rows += [(name, statistics.median(values), None) for name, values in timings.items()]
    total = sum(statistics.median(values) for values in timings.values())
    rows.append(("server side, warm total (baseline)", total, 1.0))
    return rows


def _over_http(config: AppConfig, study: int, extractor_name: str, repeats: int) -> tuple:
    from gradio_client import Client


    app = create_app(config).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        token = client.predict("bench-admin", PASSWORD, api_name="/sign_in")[0]
        times, size = [], 0
        for _ in range(repeats):
            start = time.perf_counter()
            reply = client.predict(token, study, extractor_name, "none", "tsne", "fid", "fooling_rate",
                                   api_name="/analyse_study")
            times.append(time.perf_counter() - start)
            size = len(json.dumps(reply, default=str))
    finally:
        app.close()
    return (f"Analyse button over HTTP (gradio_client, warm cache; reply {size / 1e6:.1f} MB)",
            statistics.median(times), "http")


def _print(rows: list[tuple], study: int, args) -> None:
    baseline = next(seconds for _, seconds, ratio in rows if ratio == 1.0)
    print(f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs, CPU only; load average {os.getloadavg()[0]:.2f}")
    print(f"- Date (UTC): {datetime.now(UTC):%Y-%m-%d %H:%M:%S}")
    print(f"- Command: `python benchmarks/analysis.py {shlex.join(sys.argv[1:])}`".replace(" `", " `", 1))
    print(f"- Study {study}, extractor {args.extractor}; median of {args.repeats} warm runs\n")
    print("| step | seconds | this / warm server total |")
    print("|---|---:|---:|")
    for name, seconds, ratio in rows:
        shown = "1.00 (baseline)" if ratio == 1.0 else f"{seconds / baseline:.2f}x" if ratio == "http" else ""
        print(f"| {name} | {seconds:.2f} | {shown} |")


if __name__ == "__main__":
    main()
