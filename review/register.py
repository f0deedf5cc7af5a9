"""Register real, labelled images into the study database.

Usage::

    python -m review.register --data DIR_OR_CSV [--set NAME] [--kind clinical|phantom-demo] [--public] [--db PATH]
    python -m review.register --data DIR --masks [--colour-map JSON] [--mask-threshold N] [--set NAME] ...

Files are read where they lie and identified by their sha256; only their paths, labels and
sizes are stored. Registering the same data twice adds nothing. Every image goes into a named
image set (``database.image_sets``): ``default`` (clinical, not public) unless named, and a
phantom set (its ``PHANTOM.json``) into ``demo`` (phantom-demo, public). Phantom frames never
go into a clinical set. FIFOs, devices and symbolic link loops in the source are refused, with
one line, before anything is read or written.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from common.cli import refuse, run_cli
from common.clock import now_utc, stamp
from common.files import IMAGE_SUFFIXES
from common.images import refused_file
from database import image_sets
from database import images as image_store
from database import masks as mask_store
from database.connection import open_db
from generation.datasets import MANIFEST_FILE, DatasetError, Problem, scan_labelled
from generation.masks.files import scan_mask_pairs

logger = logging.getLogger(__name__)

DB_ENV_VAR = "POLYP_DB"


@dataclass(frozen=True)
class RegistrationReport:
    """What ``register_real_images`` did.

    Attributes:
        added: Images newly stored.
        already_stored: Usable images whose sha256 the database already held.
        duplicates: ``(duplicate, first)`` pairs within the source; only ``first`` was stored.
        problems: Files skipped because they are not usable images (or, with masks, pairs).
        masks_added: Masks newly stored (``register_masked_images``); None without masks.
        image_set: The set the images went into (``database.image_sets.get_set``).
    """

    added: int
    already_stored: int
    duplicates: list[tuple[Path, Path]]
    problems: list[Problem]
    masks_added: int | None = None
    image_set: dict | None = None


@dataclass(frozen=True)
class Target:
    """The image set a registration writes into, as asked for (None: the set's own flags, or the defaults)."""

    name: str | None = None
    kind: str | None = None
    public: bool | None = None


def register_real_images(db: sqlite_utils.Database, source: Path, target: Target = Target()) -> RegistrationReport:
    """Scan a labelled folder or CSV and store its images as real images of one set, in one transaction.

    Args:
        db: An open study database (``database.connection.open_db``).
        source: A folder holding ``AD/`` and/or ``NonAD/``, or a CSV with ``file,label``.
        target: The image set (``resolve_target``).

    Returns:
        Counts of added and already-stored images, the duplicates and the problems.

    Raises:
        DatasetError: If the source as a whole is unusable (see ``scan_labelled``), holds a FIFO,
            a device or a link loop, or is a phantom set aimed at a clinical image set.
        ImageSetError: For a bad set name or flags that differ from the set's own.
    """
    source = Path(source).resolve()
    refuse_special_files(source)
    scan = scan_labelled(source)
    added = 0
    with db.atomic():  # all of a source or none of it
        image_set = resolve_target(db, source, target)
        for file in scan.files:
            added += image_store.add_real_image(
                db, sha256=file.sha256, label=file.label, path=str(file.path.resolve()), width=file.width,
                height=file.height, origin=str(source), image_set=image_set["name"])
    report = RegistrationReport(added=added, already_stored=len(scan.files) - added, duplicates=scan.duplicates,
                                problems=scan.problems, image_set=image_set)
    logger.info("registered %s into set %s: %d added, %d already stored", source, image_set["name"], added,
                report.already_stored)
    return report


def register_masked_images(
    db: sqlite_utils.Database, source: Path, colour_map: dict | str | None = None, threshold: int | None = None,
    target: Target = Target(),
) -> RegistrationReport:
    """Scan a folder of image and mask pairs and store the images as real images with their masks.

    All pairs or none are stored (one transaction). An image already registered without a mask
    gets its mask. Masks of a phantom set (its ``PHANTOM.json``) are stored as ``phantom`` masks,
    others as ``real``.

    Args:
        db: An open study database.
        source: See ``generation.masks.files.scan_mask_pairs`` for the layouts.
        colour_map, threshold: How to read the masks (see ``generation.masks.files.load_mask``).
        target: The image set (``resolve_target``).

    Raises:
        DatasetError: If the folder as a whole is unusable (MaskError for a bad colour map), holds
            a FIFO, a device or a link loop, or is a phantom set aimed at a clinical image set.
    """
    source = Path(source).resolve()
    refuse_special_files(source)
    scan = scan_mask_pairs(source, colour_map, threshold)
    added = 0
    with db.atomic():
        image_set = resolve_target(db, source, target)
        for pair in scan.pairs:
            added += image_store.add_real_image(
                db, sha256=pair.sha256, label=pair.label, path=str(pair.image_path.resolve()),
                width=pair.width, height=pair.height, origin=str(source), image_set=image_set["name"],
            )
        masks_added = mask_store.add_masks(db, [{
            "image_sha256": pair.sha256, "mask_path": str(pair.mask_path.resolve()), "mask_sha256": pair.mask_sha256,
            "mask_label": pair.mask_label, "area_fraction": pair.area_fraction, "mask_source": pair.mask_source,
            "mask_provenance": None, "reading": pair.reading,
        } for pair in scan.pairs])
    logger.info("registered %s into set %s: %d images and %d masks added", source, image_set["name"], added, masks_added)
    return RegistrationReport(added=added, already_stored=len(scan.pairs) - added, duplicates=scan.duplicates,
                              problems=scan.problems, masks_added=masks_added, image_set=image_set)


def resolve_target(db: sqlite_utils.Database, source: Path, target: Target) -> dict:
    """The image set to register ``source`` into, made if new (with its provenance).

    Without a name: ``demo`` (phantom-demo, public) for a phantom set, else ``default``
    (clinical, not public). A phantom set is never registered into a clinical set.

    Raises:
        DatasetError: For a phantom set aimed at a clinical set.
        ImageSetError: For a bad name, or flags that differ from the existing set's.
    """
    phantom = source.is_dir() and (source / MANIFEST_FILE).is_file()
    name = target.name or (image_sets.DEMO_SET if phantom else image_sets.DEFAULT_SET)
    existing = image_sets.get_set(db, name)
    kind = target.kind or (existing["kind"] if existing else "phantom-demo" if phantom else "clinical")
    public = target.public if target.public is not None else (
        existing["public"] if existing else phantom and name == image_sets.DEMO_SET)
    if phantom and kind == "clinical":
        raise DatasetError(f"{source} is a phantom set ({MANIFEST_FILE}): phantom frames never go into the clinical "
                           f"image set {name!r}; register them with --set {image_sets.DEMO_SET} (or --kind phantom-demo)")
    provenance = {"made_by": "review.register", "first_source": str(source), "made_at": stamp(now_utc())}
    return image_sets.ensure_set(db, name, kind, public, provenance)


def refuse_special_files(source: Path) -> None:
    """Raise ``DatasetError`` naming the first FIFO, device, socket or link loop under a folder ``source``.

    Checked with ``os.stat`` alone before anything is opened: reading a FIFO named ``x.png``
    would block for ever, and a link loop would fail half-way through.
    """
    if not source.is_dir():
        return
    for root, dirs, names in os.walk(source, followlinks=False):
        for name in sorted(names) + sorted(d for d in dirs if os.path.islink(os.path.join(root, d))):
            path = Path(root) / name
            problem = refused_file(path)
            if problem is not None:
                raise DatasetError(f"{path} is {problem}; nothing was registered: remove it and run again")


def format_report(report: RegistrationReport, source: Path, db_path: str | Path) -> str:
    """Return the short human summary the CLI prints; paths are shown relative to the source."""
    source = Path(source).resolve()
    base = source if source.is_dir() else source.parent
    where = f", image set {report.image_set['name']!r} ({image_sets.describe(report.image_set)})" if report.image_set else ""
    lines = [
        f"Registered real images from {source} into {db_path}{where}",
        f"  added: {report.added}",
        f"  already stored: {report.already_stored}",
    ]
    if report.masks_added is not None:
        lines.append(f"  masks added: {report.masks_added}")
    if report.duplicates:
        lines.append(f"  duplicates (same content, kept the first): {len(report.duplicates)}")
        lines += [f"    {_shown(dup, base)} = {_shown(first, base)}" for dup, first in report.duplicates]
    if report.problems:
        lines.append(f"  problems (skipped): {len(report.problems)}")
        lines += [f"    {_shown(p.path, base)}: {p.reason}" for p in report.problems]
    return "\n".join(lines)


def _shown(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base))
    except (ValueError, RuntimeError, OSError):  # outside the source, or a link loop
        return str(path)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m review.register",
        description=(
            "Register real, labelled images (AD / NonAD) into the PolypTuring study database. "
            "Every file is decoded and hashed; unreadable or unsupported files are reported and "
            "skipped, and files with identical content are stored once. Files stay where they "
            "are; only their path, label, size and sha256 are stored."
        ),
        epilog=(
            "accepted layouts for --data:\n"
            "  DIR          a folder holding AD/ and/or NonAD/ with image files directly inside\n"
            "  FILE.csv     a CSV with a header containing file,label; file is relative to the\n"
            "               CSV's folder or absolute; label is AD or NonAD\n"
            "  DIR --masks  image and mask pairs: DIR/images/ mirrored by DIR/masks/ (same relative\n"
            "               folder and file stem; the label from an AD/ or NonAD/ folder level or\n"
            "               the mask colour), or a phantom set (DIR/AD/, DIR/NonAD/, DIR/masks/<label>/)\n"
            f"image types: {' '.join(IMAGE_SUFFIXES)}\n"
            "FIFOs, devices and symbolic link loops under DIR are refused before anything is written.\n"
            "exit status: 0 done, 2 unusable data source or image set"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, type=Path, metavar="DIR_OR_CSV",
                        help="folder with AD/ and NonAD/, or a CSV with file,label")
    parser.add_argument("--db", type=Path, default=None, metavar="PATH",
                        help=f"study database file (default: ${DB_ENV_VAR} if set, else the app's "
                             "data folder: $POLYP_DATA_DIR/polypturing.db or data/polypturing.db in the project)")
    parser.add_argument("--masks", action="store_true",
                        help="register image and mask pairs (binary or colour-coded masks; see the layouts below)")
    parser.add_argument("--colour-map", default=None, metavar="JSON",
                        help='with --masks: mask colours to labels, JSON text or file, e.g. \'{"#ff0000": "AD", "#00ff00": "NonAD"}\'')
    parser.add_argument("--mask-threshold", type=int, default=None, metavar="N",
                        help="with --masks: binarise lossy (JPEG) masks at grey level N (1-255); off by default")
    parser.add_argument("--set", dest="image_set", default=None, metavar="NAME",
                        help=f"image set the images go into (made if new; default {image_sets.DEFAULT_SET!r}, or "
                             f"{image_sets.DEMO_SET!r} for a phantom set); studies, metrics and the kiosk name their sets")
    parser.add_argument("--kind", choices=image_sets.KINDS, default=None,
                        help="the set's kind when it is made: clinical frames (default) or phantom-demo frames; "
                             "phantom sets (PHANTOM.json) are never registered as clinical")
    parser.add_argument("--public", action="store_const", const=True, default=None,
                        help="the set's images may be shown publicly (the kiosk shows only public sets); "
                             "fixed when the set is made")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log each file skipped and each duplicate as it is found")
    args = parser.parse_args(argv)
    if not args.masks and (args.colour_map is not None or args.mask_threshold is not None):
        parser.error("--colour-map and --mask-threshold need --masks")
    if args.mask_threshold is not None and not 1 <= args.mask_threshold <= 255:
        parser.error(f"--mask-threshold must be a grey level between 1 and 255, got {args.mask_threshold}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import default_db_path

    args = _parse_args(argv)
    # The summary lists every problem; per-file log lines only with --verbose.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    db_path = args.db if args.db is not None else default_db_path()
    try:
        db = open_db(db_path)
    except (sqlite3.Error, OSError) as error:
        return refuse(f"cannot open database {str(db_path)!r}: {error}")
    with closing(db):
        return run_cli(lambda: _register(db, args, db_path), (DatasetError, image_sets.ImageSetError))


def _register(db: sqlite_utils.Database, args: argparse.Namespace, db_path: Path) -> int:
    target = Target(args.image_set, args.kind, args.public)
    if args.masks:
        report = register_masked_images(db, args.data, args.colour_map, args.mask_threshold, target)
    else:
        report = register_real_images(db, args.data, target)
    counts = image_store.count_images(db)["real"]
    print(format_report(report, args.data, db_path))
    print("  real images now stored: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for image_set in image_sets.list_sets(db):
        counts = ", ".join(f"{label} {n}" for label, n in image_set["counts"].items())
        print(f"  image set {image_set['name']} ({image_sets.describe(image_set)}): {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
