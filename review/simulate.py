"""A seeded panel of simulated raters that fills a study through the real rating path.

Usage::

    python -m review.simulate [--db PATH] [--data-dir DIR] [--mode single|pair|both] [--raters 8]
                              [--seed 0] [--per-label N] [--size PX] [--checkpoints PATH ...]

So that the Analysis tab has data on the embedded demo, ``simulate_panel`` creates a study marked
``simulated`` with raters ``sim-01`` .. ``sim-NN`` (simulated accounts, which can never join a real
study, nor real accounts a simulated one), and answers every trial of every rater with
``studies.next_item`` and ``studies.submit``, exactly as a browser would. The stored ratings are
therefore shaped exactly like real ones, and flagged in the export (``study_simulated``,
``rater_simulated``). They are not evidence about any checkpoint: never pool them with real studies.
Their real images come from the demo image set (``--set``), never from a clinical set unless named.

The raters' behaviour (cues read from the images, traits, answers) is ``review.simulated_raters``.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sqlite3
import sys
from pathlib import Path

import sqlite_utils

from common.cli import run_cli
from common.labels import LABELS
from database import image_sets
from database import images as image_store
from database import raters as rater_store
from database import studies as study_store
from database.connection import connect
from generation.pipelines import CheckpointLoadError, TextEncoderMissing
from review import studies, study_setup
from review.design import StudyDesign
from review.simulated_raters import ImageCues, SimulatedRater, answer_trial, draw_panel, fit_cues, image_descriptors
from review.studies import ReviewError
from review.study_setup import RaterSpec

logger = logging.getLogger(__name__)

OVERRIDE_REASON = "simulated panel (no audit)"
ADMIN_USERNAME = "sim-admin"
MAX_RATERS = 99


# ---------------------------------------------------------------------------------------------
# The panel


def simulate_panel(db: sqlite_utils.Database, data_dir: Path, session: str, name: str, design: StudyDesign,
                   n_raters: int = 8, seed: int = 0) -> dict:
    """Create a simulated study and fill it with a seeded panel through the real rating path.

    The study is created with ``simulated=True`` for raters ``sim-01`` .. ``sim-NN`` (simulated
    accounts, created or reused; each gets a fresh random password, used once to sign in), gets
    its blinding audit, and is opened (with the override reason ``OVERRIDE_REASON`` if the audit
    fails). Each rater saves a profile and answers every trial via ``studies.next_item`` and
    ``studies.submit``; the same database state, design and seed give the same answers.

    Args:
        db: The study database.
        data_dir: The app's data folder (presented images are written under it).
        session: An admin's session token.
        name: The study's name.
        design: The study design; in single mode at least 2 real images per label.
        n_raters: Panel size, 1 to ``MAX_RATERS``.
        seed: Seeds the raters' traits and answers (the design has its own seed).

    Returns:
        ``{"study_id", "name", "mode", "raters", "careless", "ratings", "audit_passed"}``.

    Raises:
        Forbidden: If the session is not an admin's.
        ReviewError: For a bad panel size or seed, too few real images, a design that shows masks,
            or a ``sim-NN`` name that belongs to a real account.
    """
    studies.require_admin(db, session)
    if isinstance(n_raters, bool) or not isinstance(n_raters, int) or not 1 <= n_raters <= MAX_RATERS:
        raise ReviewError(f"n_raters must be an integer from 1 to {MAX_RATERS}, got {n_raters!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ReviewError(f"seed must be a non-negative integer, got {seed!r}")
    if design.show_masks:
        raise ReviewError("a simulated panel does not judge whether masks fit their lesions: "
                          "create mask studies (show_masks) with real raters")
    if design.mode == "single" and design.real_images_per_label < 2:
        raise ReviewError("a simulated panel learns what real looks like from the study's real images: "
                          f"the design needs real_per_label >= 2, got {design.real_images_per_label}")
    panel = draw_panel(n_raters, seed)
    passwords = {rater.username: secrets.token_urlsafe(18) for rater in panel}
    existing = {r.username for r in panel if rater_store.get_rater_by_username(db, r.username) is not None}
    created = study_setup.create_study(db, data_dir, session, name, design,
                                       [RaterSpec(u, p) for u, p in passwords.items()], simulated=True)
    for username in sorted(existing):  # their old passwords are unknown (random): set new ones
        studies.set_password(db, username, passwords[username])
    study_id = created.study_id
    audit = study_setup.audit_study(db, session, study_id)
    study_setup.open_study(db, session, study_id, "" if audit["passed"] else OVERRIDE_REASON)
    cues = study_cues(db, study_id, design.size)
    stored = 0
    for rater in panel:
        token = studies.sign_in(db, rater.username, passwords[rater.username])
        studies.save_profile(db, token, rater.specialty, rater.years, rater.colonoscopies)
        stored += _rate_all(db, token, study_id, rater, design.mode, cues, seed)
    careless = next((r.username for r in panel if r.careless), None)
    logger.info("simulated panel: study %s (%s), %d raters (careless: %s), %d ratings stored",
                study_id, name, len(panel), careless, stored)
    return {"study_id": study_id, "name": name, "mode": design.mode, "raters": [r.username for r in panel],
            "careless": careless, "ratings": stored, "audit_passed": bool(audit["passed"])}


def study_cues(db: sqlite_utils.Database, study_id: int, size: int) -> dict[str, ImageCues | None]:
    """Cues for every image of a study (``None`` for attention cards), fitted on its real images."""
    rows = study_store.study_images(db, study_id)
    descriptors = {row["sha256"]: image_descriptors(image_store.get_image(db, row["sha256"])["path"], size)
                   for row in rows if row["role"] != "attention"}
    real = [row for row in rows if row["role"] == "real"]
    fitted = fit_cues({row["sha256"]: descriptors[row["sha256"]] for row in real},
                      {row["sha256"]: row["label"] for row in real}, descriptors)
    return {row["sha256"]: fitted.get(row["sha256"]) for row in rows}


def _rate_all(db, token: str, study_id: int, rater: SimulatedRater, mode: str,
              cues: dict[str, ImageCues | None], seed: int) -> int:
    count = 0
    while (view := studies.next_item(db, token, study_id)) is not None:
        trial = study_store.get_trial(db, view.trial_id)  # server side: which images were sent
        shas = [sha for sha in (trial["image_left"], trial["image_right"]) if sha is not None]
        answers, response_ms = answer_trial(rater, mode, [cues[sha] for sha in shas], seed, trial["position"], shas)
        key = f"simulated-{study_id}-{view.trial_id}"
        if not studies.submit(db, token, study_id, view.trial_id, answers, key, response_ms=response_ms):
            raise ReviewError(f"trial {view.trial_id} was already rated; the panel stops")
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line's options (``python -m review.simulate --help``); the demo project builds them too."""
    parser = argparse.ArgumentParser(
        prog="python -m review.simulate",
        description=(
            "Fill demo studies with a seeded panel of SIMULATED raters (sim-01, sim-02, ...) so that "
            "the Analysis tab has data to show. The studies and raters are marked simulated (exported as "
            "study_simulated=1, rater_simulated=1), can never include real raters, and say nothing about "
            "real clinicians: never pool them with real studies. Synthetic images missing for the chosen "
            "checkpoints are generated first; real images must already be registered (make demo-data)."),
        epilog="exit status: 0 done (an existing simulated study of the same name is kept and skipped), "
               "2 a user error (one 'error: ...' line on stderr)",
    )
    parser.add_argument("--db", type=Path, metavar="PATH",
                        help="study database (env POLYP_DB; default DATA/polypturing.db)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="project data folder (env POLYP_DATA_DIR; default ./data)")
    parser.add_argument("--mode", choices=("single", "pair", "both"), default="both",
                        help="study mode(s) to simulate (default: both, one study each)")
    parser.add_argument("--raters", type=int, default=8, metavar="N", help=f"panel size, 1-{MAX_RATERS} (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the design, generation and the raters (default 0)")
    parser.add_argument("--per-label", type=int, default=4, metavar="N",
                        help="synthetic images per checkpoint and pathology; missing ones are generated (default 4)")
    parser.add_argument("--size", type=int, default=64, metavar="PX", help="presentation size in pixels (default 64)")
    parser.add_argument("--set", dest="image_set", default=image_sets.DEMO_SET, metavar="NAME",
                        help="image set of the studies' real images (default: the demo set of phantom frames, "
                             "`make demo-data`; never a clinical set unless named)")
    parser.add_argument("--checkpoints", nargs="+", type=Path, metavar="PATH",
                        help="checkpoint folders (default: the embedded demo checkpoints assets/demo/checkpoint-*)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import Services, config_from

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    config = config_from(db=args.db or None, data_dir=args.data_dir or None)
    return run_cli(lambda: _command(Services(config), args), (ValueError, OSError, sqlite3.Error))


def _command(services, args: argparse.Namespace) -> int:
    """Check the flags, fill the studies, print one line per study filled; return 0."""
    if not 1 <= args.raters <= MAX_RATERS or args.per_label < 1 or args.seed < 0:
        raise ReviewError(f"--raters must be 1-{MAX_RATERS}, --per-label >= 1 and --seed >= 0")
    for summary in run(services, args):
        print(f"study {summary['study_id']} {summary['name']!r}: {summary['ratings']} simulated ratings "
              f"by {len(summary['raters'])} raters")
    return 0


def run(services, args: argparse.Namespace) -> list[dict]:
    """Create and fill the simulated studies ``args`` asks for; returns one summary per study."""
    config = services.config
    with connect(config.db_path) as db:
        real = _real_counts(db, args.image_set)
        if min(real.values()) < 2:
            counts = ", ".join(f"{label} {n}" for label, n in real.items())
            raise ReviewError(f"the image set {args.image_set!r} in {config.db_path} holds too few real images ({counts}; "
                              "at least 2 per label): run `make demo-data` first, or python -m review.register "
                              f"--data DIR --set {args.image_set}")
        session = _admin_session(db)

    paths = [str(p) for p in args.checkpoints] if args.checkpoints else _demo_checkpoints(services)
    try:
        ids = study_setup.ensure_images(services, paths, args.per_label, args.seed, generate=True)
    except (CheckpointLoadError, TextEncoderMissing) as error:
        raise ReviewError(f"generating the missing synthetic images failed: {error}") from error
    where = "demo" if not args.checkpoints else "checkpoints " + ", ".join(map(str, ids))
    summaries = []
    with services.db() as db:
        for mode in (("single", "pair") if args.mode == "both" else (args.mode,)):
            name = f"Simulated panel ({mode}{f', seed {args.seed}' if args.seed else ''}) — {where}"
            if _existing(db, name):
                continue
            per_label = _real_counts(db, args.image_set)
            design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=args.per_label,
                                 real_per_label=min(args.per_label * len(ids), *per_label.values()),
                                 ratings_per_image=min(3, args.raters), repeats=3, attention_checks=3,
                                 size=args.size, seed=args.seed, image_sets=(args.image_set,))
            summaries.append(simulate_panel(db, config.data_dir, session, name, design, args.raters, args.seed))
    return summaries


def _real_counts(db: sqlite_utils.Database, image_set: str) -> dict[str, int]:
    """Real images per label in one image set (zeros when the set does not exist)."""
    found = next((s for s in image_sets.list_sets(db) if s["name"] == image_set), None)
    return found["counts"] if found else {label: 0 for label in LABELS}


def _admin_session(db: sqlite_utils.Database) -> str:
    """Sign in the simulated admin ``sim-admin``, creating it, with a fresh random password."""
    password = secrets.token_urlsafe(18)
    admin = rater_store.get_rater_by_username(db, ADMIN_USERNAME)
    if admin is None:
        studies.create_account(db, ADMIN_USERNAME, "admin", password, simulated=True)
    elif not admin["simulated"] or admin["role"] != "admin":
        raise ReviewError(f"the account {ADMIN_USERNAME!r} exists and is not a simulated admin; rename it first")
    else:
        studies.set_password(db, ADMIN_USERNAME, password)
    return studies.sign_in(db, ADMIN_USERNAME, password)


def _existing(db: sqlite_utils.Database, name: str) -> bool:
    study = next((s for s in study_store.list_studies(db) if s["name"] == name), None)
    if study is None:
        return False
    if not study["simulated"]:
        raise ReviewError(f"a real study is named {name!r}; rename it before simulating")
    logger.info("study %s (%s) already exists: kept, skipped", study["id"], name)
    return True


def _demo_checkpoints(services) -> list[str]:
    demo = services.config.demo_dir.resolve()
    found = [str(info.path) for info in services.checkpoints() if Path(info.path).resolve().parent == demo]
    if not found:
        raise ReviewError(f"no demo checkpoints under {demo}; give --checkpoints PATH ...")
    return found


if __name__ == "__main__":
    sys.exit(main())
