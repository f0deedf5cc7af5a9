"""The demo project: phantom frames, two studies rated by a simulated panel, and their metrics, built in one go.

What ``make demo-data`` and ``make demo-analysis`` do, as one function the app runs in the background
(``DemoBuild``: the admin's *Build demo project* button, or ``python app.py --demo-project``), so
that after the first start every tab has something real to show:

1. phantom "real" frames (``DemoSizes.real_per_label`` per pathology, seed 1) in ``DATA/demo-real``,
   registered into the public phantom-demo image set ``demo`` (``review.register``);
2. the demo checkpoints' training frames (seed 0) in ``DATA/demo-train``, for the memorisation check;
3. a single and a pair study filled by the seeded SIMULATED rater panel (``review.simulate``), which
   first generates the synthetic images the studies need;
4. every metric of the demo checkpoints against the ``demo`` set (``evaluation.scorecard``, EfficientNet).

Everything it makes is marked as demo: the image set's kind (phantom-demo), the studies' and
raters' ``simulated`` flag (and "— demo" in the study names), the metric results'
``details.reference_sets`` (``["demo"]``). Nothing is written into a clinical image set, and no
clinical image is read. Running it again adds nothing that is there already (frames already drawn
are kept, registration is by sha256, a study of the same name is skipped; the metrics are
recomputed).
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from common.clock import now_utc, stamp
from common.device import resolve_device
from database import image_sets
from database import metric_results as metric_store
from database import studies as study_store
from database.connection import connect
from evaluation.cache import FeatureCache
from evaluation.features import get_extractor
from evaluation.scorecard import compute_scorecard
from generation.datasets import MANIFEST_FILE
from generation.phantom.frames import write_phantom_set
from review import simulate
from review.register import Target, register_real_images

logger = logging.getLogger(__name__)

DEMO_SET = image_sets.DEMO_SET
DEMO_TARGET = Target(DEMO_SET, "phantom-demo", True)
LOCK_FILE = "demo-project.lock"
Progress = Callable[[float, str], None]


class DemoBusy(RuntimeError):
    """A demo project is being built already (in this server, or by another process on the same data folder)."""


@dataclass(frozen=True)
class DemoSizes:
    """How big the demo project is; the defaults are ``make demo-analysis``'s (about 4-5 minutes on 2 CPU cores)."""

    real_per_label: int = 60
    train_per_label: int = 300
    raters: int = 8
    synthetic_per_label: int = 4
    size: int = 64
    extractor: str = "efficientnet"
    device: str = "auto"


# Share of the whole build each step takes (measured 2026-12 on 2 CPU cores: 320 s in all), for one progress bar.
STEPS: tuple[tuple[str, float], ...] = (
    ("drawing phantom frames for the demo image set", 0.04),
    ("registering them into the image set 'demo' (phantom-demo, public)", 0.01),
    ("drawing the demo checkpoints' training frames", 0.14),
    ("simulated panel: generating images and filling the single-image study", 0.13),
    ("simulated panel: filling the pair study", 0.06),
    ("metrics of the demo checkpoints against the demo set (EfficientNet)", 0.62),
)


def build_demo_project(services, sizes: DemoSizes = DemoSizes(), on_progress: Progress | None = None) -> dict:
    """Build (or complete) the demo project in ``services``' data folder and database.

    Args:
        services: The app's ``Services`` (config, database, pipeline cache).
        sizes: How many frames, raters and images; small ones for tests.
        on_progress: Called with (fraction done, what is being done).

    Returns:
        ``demo_summary`` of the finished project.

    Raises:
        ReviewError: If the simulated panel cannot run (e.g. a real account named ``sim-01``).
        NothingToEvaluate: If the metrics find nothing to compare.
        ValueError, OSError: For bad sizes or an unwritable data folder.
    """
    progress = _Steps(on_progress or (lambda fraction, text: None))
    data_dir = Path(services.config.data_dir)
    real_dir, train_dir = data_dir / "demo-real", data_dir / "demo-train"
    progress.step(0)
    _phantoms(real_dir, sizes.real_per_label, seed=1)
    progress.step(1)
    with connect(services.config.db_path) as db:
        register_real_images(db, real_dir, DEMO_TARGET)
    progress.step(2)
    _phantoms(train_dir, sizes.train_per_label, seed=0)
    for number, mode in ((3, "single"), (4, "pair")):
        progress.step(number)
        # The command line's own composition (sim-admin, the images, the designs, skipping a study
        # already made), so the app's demo and `make demo-analysis` make the same studies.
        args = simulate.parse_args(["--mode", mode, "--set", DEMO_SET, "--raters", str(sizes.raters),
                                     "--per-label", str(sizes.synthetic_per_label), "--size", str(sizes.size)])
        simulate.run(services, args)
    progress.step(5)
    extractor = get_extractor(sizes.extractor, device=resolve_device(sizes.device))
    with connect(services.config.db_path) as db:
        compute_scorecard(db, extractor, FeatureCache(data_dir / "features"), training_dir=train_dir,
                          image_sets=[DEMO_SET], on_progress=progress.within(5))
        summary = demo_summary(db)
    progress.done()
    return summary


def demo_summary(db) -> dict:
    """What of the demo project is in the database.

    Returns:
        ``{"images": {label: n} of the demo set, "studies": [{"id", "name", "mode", "status"}] of the
        simulated studies on the demo set, "metric_results": n results against the demo set alone,
        "ready": all three present}``.
    """
    found = next((s for s in image_sets.list_sets(db) if s["name"] == DEMO_SET), None)
    counts = found["counts"] if found else {}
    demo_studies = [{"id": s["id"], "name": s["name"], "mode": (s["design"] or {}).get("mode"), "status": s["status"]}
                    for s in study_store.list_studies(db)
                    if s["simulated"] and list((s["design"] or {}).get("image_sets") or []) == [DEMO_SET]]
    results = sum(1 for row in metric_store.list_results(db)
                  if (row["details"] or {}).get("reference_sets") == [DEMO_SET])
    modes = {study["mode"] for study in demo_studies}
    ready = min(counts.values(), default=0) >= 2 and {"single", "pair"} <= modes and results > 0
    return {"images": counts, "studies": demo_studies, "metric_results": results, "ready": ready}


def _phantoms(folder: Path, per_label: int, seed: int) -> None:
    """Draw a phantom set into ``folder`` unless the same set (seed, count) is there already."""
    manifest = folder / MANIFEST_FILE
    if manifest.is_file():
        try:
            drawn = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            drawn = {}
        if drawn.get("seed") == seed and drawn.get("n_per_label") == per_label:
            return
    write_phantom_set(folder, per_label, seed=seed)


class _Steps:
    """One progress bar over ``STEPS``, each step's share weighted by how long it takes."""

    def __init__(self, report: Progress):
        self.report = report
        self.starts = [sum(weight for _, weight in STEPS[:i]) for i in range(len(STEPS))]

    def step(self, number: int) -> None:
        self.report(self.starts[number], STEPS[number][0])

    def within(self, number: int) -> Progress:
        """A step's own progress (0 to 1) as the whole build's."""
        start, (text, weight) = self.starts[number], STEPS[number]
        return lambda fraction, detail: self.report(start + weight * min(max(fraction, 0.0), 1.0), f"{text}: {detail}")

    def done(self) -> None:
        self.report(1.0, "done")


# ---------------------------------------------------------------------------------------------
# In the background


@dataclass(frozen=True)
class DemoState:
    """Where a background build stands: ``phase`` idle, running, done or failed."""

    phase: str = "idle"
    fraction: float = 0.0
    text: str = ""
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    summary: dict = field(default_factory=dict)


class DemoBuild:
    """The server's one background demo build: start it, read its progress; a second start is refused.

    The state lives in the server (a page reload reads it again); a file lock in the data folder
    also refuses a build started by another process on the same folder.
    """

    def __init__(self, services, sizes: DemoSizes = DemoSizes()):
        self.services, self.sizes = services, sizes
        self._lock = threading.Lock()
        self._state = DemoState()
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> DemoState:
        """The build's state now."""
        with self._lock:
            return self._state

    def start(self) -> None:
        """Start building in a background thread.

        Raises:
            DemoBusy: While a build runs (here, or in another process on the same data folder).
        """
        with self._lock:
            if self._state.phase == "running":
                raise DemoBusy("the demo project is being built already: its progress is shown here")
            lock = _take_file_lock(Path(self.services.config.data_dir) / LOCK_FILE)
            self._state = DemoState("running", 0.0, "starting", started_at=stamp(now_utc()))
            self._thread = threading.Thread(target=self._run, args=(lock,), name="demo-project", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> DemoState:
        """Wait for a started build to end (or ``timeout`` seconds); returns the state."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.state

    def _run(self, lock) -> None:
        try:
            summary = build_demo_project(self.services, self.sizes, self._progress)
        except Exception as error:  # shown to the admin in the app; the traceback goes to the log
            logger.exception("the demo project build failed")
            self._finish(replace(self.state, phase="failed", error=_failure(error)))
        else:
            self._finish(replace(self.state, phase="done", fraction=1.0, text="done", summary=summary))
        finally:
            lock.close()

    def _progress(self, fraction: float, text: str) -> None:
        logger.info("demo project: %3.0f%% %s", 100 * fraction, text)
        with self._lock:
            self._state = replace(self._state, fraction=fraction, text=text)

    def _finish(self, state: DemoState) -> None:
        with self._lock:
            self._state = replace(state, finished_at=stamp(now_utc()))


def _take_file_lock(path: Path):
    """An open file holding an exclusive lock on ``path`` (released when closed), or DemoBusy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a")  # noqa: SIM115 (held open by the build's thread, closed when it ends)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DemoBusy(f"another process is building the demo project in {path.parent}: wait for it to end") from None
    return handle


def _failure(error: Exception) -> str:
    """One line for the admin: a domain error's own message, else its type and message."""
    message = str(error) or type(error).__name__
    return message if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {message}"
