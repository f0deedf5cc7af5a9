"""The application's configuration and services: built once from flags and environment.

Environment variables (flags win): ``POLYP_DATA_DIR`` (default ``./data`` in the project),
``POLYP_CHECKPOINTS`` (default ``DATA/checkpoints``), ``POLYP_DB`` (default ``DATA/polypturing.db``),
``POLYP_BASE`` (base pipeline for training outputs ``checkpoint-<N>/unet`` and LoRA adapters),
``POLYP_DEVICE`` (auto|cpu|cuda), ``HOST`` (default 127.0.0.1), ``PORT`` (default 7860),
``POLYP_KIOSK_DB`` (default ``DATA/kiosk.db``), ``POLYP_KIOSK_IDLE`` (kiosk reset after seconds idle, default 75),
``POLYP_PUBLIC_URL`` (the address raters open, for invitation links; default ``http://HOST:PORT``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from common.device import resolve_device
from database.connection import ConnectionPool
from generation.library import list_checkpoints
from generation.pipelines import PipelineCache

PROJECT_DIR = Path(__file__).resolve().parent
DEMO_DIR = PROJECT_DIR / "assets" / "demo"


@dataclass(frozen=True)
class AppConfig:
    """Where things live and how the app runs. Frozen: made once, passed everywhere."""

    data_dir: Path
    checkpoints_dir: Path
    db_path: Path
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 7860
    demo_dir: Path = DEMO_DIR
    base: Path | None = None
    max_cached_pipelines: int = 2
    kiosk: bool = False
    kiosk_db: Path | None = None
    kiosk_idle_s: float = 75.0
    demo_project: bool = False  # build the demo project in the background at start unless it exists
    public_url: str | None = None  # the address raters open (invitation links); None: http://HOST:PORT

    @property
    def generated_dir(self) -> Path:
        """Where generated images are written, one folder per checkpoint fingerprint."""
        return self.data_dir / "generated"

    @property
    def kiosk_db_path(self) -> Path:
        """The conference kiosk's own database (never the study database): ``kiosk_db`` or ``DATA/kiosk.db``."""
        return self.kiosk_db or self.data_dir / "kiosk.db"

    @property
    def link_base(self) -> str:
        """The start of every invitation link, without a trailing slash: ``public_url`` or ``http://HOST:PORT``."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python app.py",
        description="PolypTuring: generate, review and evaluate synthetic colonoscopy polyp images in the browser.",
    )
    parser.add_argument("--data-dir", type=Path, help="project data folder (env POLYP_DATA_DIR; default ./data)")
    parser.add_argument("--checkpoints", type=Path, help="folder scanned for checkpoints besides the demo (env POLYP_CHECKPOINTS; default DATA/checkpoints)")
    parser.add_argument("--db", type=Path, help="study database file (env POLYP_DB; default DATA/polypturing.db)")
    parser.add_argument("--base", type=Path, help="base pipeline folder that training outputs checkpoint-<N>/unet/ and LoRA adapters are loaded on (env POLYP_BASE)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to run models (env POLYP_DEVICE; default auto: cuda when present)")
    parser.add_argument("--host", help="address to serve on (env HOST; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to serve on (env PORT; default 7860)")
    parser.add_argument("--kiosk", action="store_true", help="serve the conference kiosk (spot the synthetic polyp) instead of the workbench")
    parser.add_argument("--kiosk-db", type=Path, help="the kiosk's own database (env POLYP_KIOSK_DB; default DATA/kiosk.db)")
    parser.add_argument("--public-url", help="the address raters open, for full invitation links, e.g. https://review.example.org "
                        "behind a TLS proxy (env POLYP_PUBLIC_URL; default http://HOST:PORT)")
    parser.add_argument("--demo-project", action="store_true",
                        help="at start, build the demo project in the background unless it exists: phantom frames in "
                             "the image set 'demo', a single and a pair study rated by a simulated panel, their metrics "
                             "(what `make run` passes when the data folder has no database yet)")
    parser.add_argument("--kiosk-idle", type=float, help="kiosk: seconds without a touch before it returns to its start screen (env POLYP_KIOSK_IDLE; default 75)")
    return parser


def build_config(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> AppConfig:
    """An ``AppConfig`` from command-line flags, then environment variables, then defaults.

    Raises:
        SystemExit: From argparse, on unknown flags or a bad value (with a usage message).
    """
    env = os.environ if env is None else env
    parser = build_parser()
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir or env.get("POLYP_DATA_DIR") or PROJECT_DIR / "data")
    device = args.device or env.get("POLYP_DEVICE", "auto")
    if device not in ("auto", "cpu", "cuda"):
        parser.error(f"POLYP_DEVICE must be auto, cpu or cuda, got {device!r}")
    port = args.port if args.port is not None else env.get("PORT", "7860")
    try:
        port = int(port)
    except ValueError:
        parser.error(f"PORT must be a number between 1 and 65535, got {port!r}")
    if not 0 < port < 65536:
        parser.error(f"PORT must be a number between 1 and 65535, got {port}")
    return AppConfig(
        data_dir=data_dir,
        checkpoints_dir=Path(args.checkpoints or env.get("POLYP_CHECKPOINTS") or data_dir / "checkpoints"),
        db_path=Path(args.db or env.get("POLYP_DB") or data_dir / "polypturing.db"),
        device=device,
        base=Path(args.base or env["POLYP_BASE"]) if (args.base or env.get("POLYP_BASE")) else None,
        host=args.host or env.get("HOST", "127.0.0.1"),
        port=port,
        kiosk=args.kiosk,
        kiosk_db=Path(args.kiosk_db or env["POLYP_KIOSK_DB"]) if (args.kiosk_db or env.get("POLYP_KIOSK_DB")) else None,
        kiosk_idle_s=_kiosk_idle(parser, args.kiosk_idle, env.get("POLYP_KIOSK_IDLE")),
        demo_project=args.demo_project,
        public_url=_public_url(parser, args.public_url or env.get("POLYP_PUBLIC_URL")),
    )


def _public_url(parser: argparse.ArgumentParser, text: str | None) -> str | None:
    """The ``--public-url`` / ``POLYP_PUBLIC_URL`` value, checked: http(s), a host, no query or fragment."""
    if not text:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        parser.error(f"--public-url (POLYP_PUBLIC_URL) must be an http:// or https:// address without ?query or "
                     f"#fragment, e.g. https://review.example.org, got {text!r}")
    return text.strip().rstrip("/")


def _kiosk_idle(parser: argparse.ArgumentParser, flag: float | None, text: str | None) -> float:
    try:
        seconds = flag if flag is not None else float(text or 75)
    except ValueError:
        parser.error(f"POLYP_KIOSK_IDLE must be a number of seconds, got {text!r}")
    if not 1 <= seconds <= 3600:
        parser.error(f"the kiosk's idle time must be between 1 and 3600 seconds, got {seconds:g}")
    return float(seconds)


def config_from(env: Mapping[str, str] | None = None, **flags: object) -> AppConfig:
    """``build_config`` from keyword flags, for command lines that take a few of the app's options.

    ``config_from(db=args.db, data_dir=args.data_dir)`` is ``build_config(["--db", ..., "--data-dir", ...])``;
    a flag given as None is not given (the environment, then the default, decides).
    """
    argv: list[str] = []
    for name, value in flags.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return build_config(argv, env)


def default_db_path(env: Mapping[str, str] | None = None) -> Path:
    """The database path the app uses when no flag is given (for command-line tools)."""
    return build_config([], env).db_path


@dataclass
class Services:
    """What every tab needs: the config, a pipeline cache and a way to open the database.

    The database is opened per call: a SQLite connection cannot cross Gradio's worker threads.
    """

    config: AppConfig
    pipelines: object = field(default=None)
    pool: ConnectionPool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.pool = ConnectionPool(self.config.db_path)  # one per app: its lock queues the app's writers
        if self.pipelines is None:
            self.pipelines = PipelineCache(resolve_device(self.config.device), self.config.max_cached_pipelines)

    def db(self):
        """``with services.db() as db:``: this thread's connection to the study database (migrated, kept open)."""
        return self.pool.connection()

    def checkpoints(self):
        """Every checkpoint of the embedded demo and the checkpoints folder, sorted by training step."""
        return list_checkpoints([self.config.demo_dir, self.config.checkpoints_dir], self.config.base)
