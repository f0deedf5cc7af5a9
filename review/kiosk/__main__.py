"""``python -m review.kiosk``: build the kiosk's pools, hide a nickname, reset the kiosk database.

A door: it wires the kiosk to the app's configuration, the study database and the generator.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from pathlib import Path

from appconfig import Services, config_from
from common.cli import refuse, run_cli
from database import image_sets
from database import images as image_store
from database import kiosk as kiosk_store
from database.studies import get_study
from generation.datasets import DatasetError
from generation.errors import USER_ERRORS
from generation.library import list_checkpoints
from generation.phantom.frames import write_phantom_set
from review.kiosk.game import KioskError, clean_nickname
from review.kiosk.pools import PoolsError, build_pools, default_pools_dir, load_pools
from review.register import Target, register_real_images

logger = logging.getLogger(__name__)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m review.kiosk",
                                     description="The conference kiosk: build its image pools, tend its leaderboard.")
    parser.add_argument("--data-dir", type=Path, help="project data folder (env POLYP_DATA_DIR; default ./data)")
    parser.add_argument("--db", type=Path, help="study database (env POLYP_DB; default DATA/polypturing.db)")
    parser.add_argument("--kiosk-db", type=Path, help="kiosk database (env POLYP_KIOSK_DB; default DATA/kiosk.db)")
    commands = parser.add_subparsers(dest="command", required=True)
    pools = commands.add_parser("pools", help="present images per checkpoint and pathology into DATA/kiosk/pools/",
                                description="Build the kiosk's pools. Real images come only from image sets flagged "
                                            "public (review.register --public). Without --checkpoints or --study: the "
                                            "embedded demo's checkpoints and the public 'demo' set of phantom frames "
                                            "(registered first if it is empty, as `make demo-data` does).")
    pools.add_argument("--checkpoints", nargs="+", default=[], metavar="PATH", help="checkpoint folders")
    pools.add_argument("--study", type=int, action="append", default=[], metavar="ID",
                       help="use the checkpoints of this study (repeatable)")
    pools.add_argument("--per-label", type=int, default=12, help="synthetic images per checkpoint and pathology (default 12)")
    pools.add_argument("--real-per-label", type=int, default=None,
                       help="real images per pathology, at most (default: as many as synthetic images per pathology, "
                            "so no image comes back more often than another across games)")
    pools.add_argument("--size", type=int, default=None, help="presentation size in px (default: the smallest native side, 64-512)")
    pools.add_argument("--set", dest="image_sets", action="append", default=None, metavar="NAME",
                       help="public image set the real images come from (repeatable; default: every public set, "
                            "the demo: the 'demo' set)")
    pools.add_argument("--seed", type=int, default=0,
                       help="seed of the sampling of stored images (default 0; generation seeds are random)")
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
    config = config_from(**{name: getattr(args, name, None) for name in ("data_dir", "db", "kiosk_db", "device")})
    return run_cli(lambda: _command(config, args), (KioskError, PoolsError, DatasetError, image_sets.ImageSetError,
                                                       sqlite3.Error, OSError))


def _command(config, args: argparse.Namespace) -> int:
    if args.command == "pools":
        return _pools_command(config, args)
    if args.command == "hide":
        with kiosk_store.connect_kiosk(config.kiosk_db_path) as db:
            hidden = kiosk_store.hide_nickname(db, clean_nickname(args.nickname) or "")
        print(f"{hidden} game(s) named {args.nickname!r} taken off the leaderboard")
        return 0
    if not args.yes:
        return refuse(f"this deletes every kiosk game in {config.kiosk_db_path}; add --yes")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{config.kiosk_db_path}{suffix}").unlink(missing_ok=True)
    print(f"kiosk database {config.kiosk_db_path} deleted; the next game starts a new one")
    return 0


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
    with services.db() as db:
        for study_id in args.study:
            study = get_study(db, study_id)
            if study is None:
                raise KioskError(f"no study with id {study_id} in {config.db_path}")
            study_ids += study["design"]["checkpoint_ids"]
        demo = not args.checkpoints and not args.study
        if demo and not image_store.list_images(db, source="real", image_sets=[image_sets.DEMO_SET]):
            _register_demo_phantoms(db, config.data_dir)
    paths = list(args.checkpoints)
    sets = args.image_sets
    if demo:
        paths = [str(info.path) for info in list_checkpoints([config.demo_dir], config.base)]
        sets = sets or [image_sets.DEMO_SET]
    try:
        pools = build_pools(services, paths, args.per_label, args.seed, args.size, args.real_per_label,
                            checkpoint_ids=study_ids, generate=not args.no_generate, image_sets=sets)
    except USER_ERRORS as error:
        raise KioskError(str(error)) from error
    print(f"kiosk pools: {len(pools.images)} images of {len(pools.checkpoints)} checkpoints at {pools.size} px "
          f"in {pools.directory}")
    return 0


def _register_demo_phantoms(db, data_dir: Path) -> None:
    """What `make demo-data` registers: 60 phantom frames per pathology (seed 1) into the public phantom-demo
    set ``demo``, never into a clinical set."""
    folder = Path(data_dir) / "demo-real"
    logger.info("the demo image set is empty: drawing the demo's phantom frames into %s (as `make demo-data`)", folder)
    write_phantom_set(folder, 60, seed=1)
    register_real_images(db, folder, Target(image_sets.DEMO_SET, "phantom-demo", True))


if __name__ == "__main__":
    sys.exit(main())
