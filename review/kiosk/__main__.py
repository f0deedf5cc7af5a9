"""``python -m review.kiosk``: build the kiosk's pools, hide a nickname, reset the kiosk database.

A door: it wires the kiosk to the app's configuration, the study database and the generator.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

from appconfig import Services, build_config
from database import images as image_store
from database import kiosk as kiosk_store
from database.studies import get_study
from generation.errors import USER_ERRORS
from generation.library import list_checkpoints
from generation.phantom.frames import write_phantom_set
from review.kiosk.game import KioskError, clean_nickname
from review.kiosk.pools import PoolsError, build_pools, default_pools_dir, load_pools
from review.register import register_real_images

logger = logging.getLogger(__name__)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m review.kiosk",
                                     description="The conference kiosk: build its image pools, tend its leaderboard.")
    parser.add_argument("--data-dir", type=Path, help="project data folder (env POLYP_DATA_DIR; default ./data)")
    parser.add_argument("--db", type=Path, help="study database (env POLYP_DB; default DATA/polypturing.db)")
    parser.add_argument("--kiosk-db", type=Path, help="kiosk database (env POLYP_KIOSK_DB; default DATA/kiosk.db)")
    commands = parser.add_subparsers(dest="command", required=True)
    pools = commands.add_parser("pools", help="present images per checkpoint and pathology into DATA/kiosk/pools/",
                                description="Build the kiosk's pools. Without --checkpoints or --study: the embedded "
                                            "demo's checkpoints (and, if no real image is registered, the demo's "
                                            "phantom frames, as `make demo-data` does).")
    pools.add_argument("--checkpoints", nargs="+", default=[], metavar="PATH", help="checkpoint folders")
    pools.add_argument("--study", type=int, action="append", default=[], metavar="ID",
                       help="use the checkpoints of this study (repeatable)")
    pools.add_argument("--per-label", type=int, default=12, help="synthetic images per checkpoint and pathology (default 12)")
    pools.add_argument("--real-per-label", type=int, default=None,
                       help="real images per pathology, at most (default: as many as synthetic images per pathology, "
                            "so no image comes back more often than another across games)")
    pools.add_argument("--size", type=int, default=None, help="presentation size in px (default: the smallest native side, 64-512)")
    pools.add_argument("--seed", type=int, default=0, help="seed of generation and sampling (default 0)")
    pools.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to generate (default auto: cuda when present)")
    pools.add_argument("--no-generate", action="store_true", help="use stored images only; generate nothing")
    pools.add_argument("--if-missing", action="store_true", help="do nothing if pools already exist (for `make kiosk`)")
    hide = commands.add_parser("hide", help="take a nickname off the leaderboard")
    hide.add_argument("nickname")
    reset = commands.add_parser("reset", help="delete the kiosk database: every game and the leaderboard (pools stay)")
    reset.add_argument("--yes", action="store_true", help="required: confirms the deletion")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 done, 2 refused)."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    flags = []
    for name, flag in (("data_dir", "--data-dir"), ("db", "--db"), ("kiosk_db", "--kiosk-db"), ("device", "--device")):
        if getattr(args, name, None) is not None:
            flags += [flag, str(getattr(args, name))]
    config = build_config(flags)
    try:
        if args.command == "pools":
            return _pools_command(config, args)
        if args.command == "hide":
            db = kiosk_store.open_kiosk_db(config.kiosk_db_path)
            try:
                hidden = kiosk_store.hide_nickname(db, clean_nickname(args.nickname) or "")
            finally:
                db.close()
            print(f"{hidden} game(s) named {args.nickname!r} taken off the leaderboard")
            return 0
        if not args.yes:
            print(f"error: this deletes every kiosk game in {config.kiosk_db_path}; add --yes", file=sys.stderr)
            return 2
        for suffix in ("", "-wal", "-shm"):
            Path(f"{config.kiosk_db_path}{suffix}").unlink(missing_ok=True)
        print(f"kiosk database {config.kiosk_db_path} deleted; the next game starts a new one")
        return 0
    except (KioskError, PoolsError, sqlite3.Error, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _pools_command(config, args) -> int:
    if args.if_missing:
        try:
            pools = load_pools(default_pools_dir(config.data_dir))
            print(f"kiosk pools present in {pools.directory} ({len(pools.images)} images); not rebuilt")
            return 0
        except PoolsError:
            pass

    services = Services(config)
    study_ids = []
    db = services.db()
    try:
        for study_id in args.study:
            study = get_study(db, study_id)
            if study is None:
                raise KioskError(f"no study with id {study_id} in {config.db_path}")
            study_ids += study["design"]["checkpoint_ids"]
        demo = not args.checkpoints and not args.study
        if demo and not any(image_store.count_images(db)["real"].values()):
            _register_demo_phantoms(db, config.data_dir)
    finally:
        db.close()
    paths = list(args.checkpoints)
    if demo:
        paths = [str(info.path) for info in list_checkpoints([config.demo_dir], config.base)]
    try:
        pools = build_pools(services, paths, args.per_label, args.seed, args.size, args.real_per_label,
                            checkpoint_ids=study_ids, generate=not args.no_generate)
    except USER_ERRORS as error:
        raise KioskError(str(error)) from error
    print(f"kiosk pools: {len(pools.images)} images of {len(pools.checkpoints)} checkpoints at {pools.size} px "
          f"in {pools.directory}")
    return 0


def _register_demo_phantoms(db, data_dir: Path) -> None:
    """What `make demo-data` registers: 60 phantom frames per pathology (seed 1) as the demo's "real" images."""
    folder = Path(data_dir) / "demo-real"
    logger.info("no real images registered: drawing the demo's phantom frames into %s (as `make demo-data`)", folder)
    write_phantom_set(folder, 60, seed=1)
    register_real_images(db, folder)


if __name__ == "__main__":
    sys.exit(main())
