"""SQL for image sets: every registered real image belongs to one or more named sets.

A set carries its own flags, fixed when it is made: its ``kind`` (``clinical`` frames, or
``phantom-demo`` frames drawn by ``generation.phantom``) and whether its images ``public``ly may be
shown (the kiosk shows only public sets), and its provenance (who made it, from what). Studies,
the Evaluate reference set and the kiosk pools each name the sets they draw from, so demo phantoms
and clinical frames never mix unless someone names both.

Databases made before sets existed keep working: migration ``0007_image_sets`` puts their real
images into the set ``default``, flagged clinical and not public.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

import sqlite_utils

from common.labels import LABELS
from database.checks import require_choice

KINDS: tuple[str, ...] = ("clinical", "phantom-demo")
DEFAULT_SET = "default"
"""Where real images go when no set is named (clinical, not public), and where migration 0007 put old ones."""
DEMO_SET = "demo"
"""Where the demo commands register their phantom frames (phantom-demo, public)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ImageSetError(ValueError):
    """An unknown set, a bad set name, or flags that differ from the set's own."""


def check_name(name: object) -> str:
    """The set name, checked: 1-64 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.

    Raises:
        ImageSetError: Naming the value received and what is allowed.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ImageSetError(f"image set name {name!r} is not valid; allowed: 1-64 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")
    return name


def get_set(db: sqlite_utils.Database, name: str) -> dict | None:
    """One set (``id``, ``name``, ``kind``, ``public`` as bool, ``provenance`` as dict), or None."""
    row = next(db.query("SELECT * FROM image_sets WHERE name = ?", [name]), None)
    return _shaped(row) if row else None


def ensure_set(db: sqlite_utils.Database, name: str, kind: str | None = None, public: bool | None = None,
               provenance: dict | None = None) -> dict:
    """The set called ``name``, made with these flags if it does not exist yet.

    Args:
        name: The set's name (``check_name``).
        kind: ``"clinical"`` or ``"phantom-demo"``; None: the existing set's, or clinical for a new one.
        public: Whether its images may be shown publicly; None: the existing set's, or False.
        provenance: Recorded when the set is made (e.g. the command and the first source folder).

    Raises:
        ImageSetError: For a bad name or kind, or flags that differ from an existing set's: a
            set's flags are fixed when it is made.
    """
    check_name(name)
    if kind is not None:
        try:
            require_choice("kind", kind, KINDS)
        except ValueError as error:
            raise ImageSetError(f"image set {name!r}: {error}") from error
    existing = get_set(db, name)
    if existing is not None:
        wanted = {"kind": kind, "public": public}
        clash = {key: value for key, value in wanted.items() if value is not None and value != existing[key]}
        if clash:
            raise ImageSetError(
                f"image set {name!r} is {describe(existing)}; its flags are fixed when it is made, got "
                + ", ".join(f"{key}={value!r}" for key, value in clash.items()) + "; name another set")
        return existing
    with db.atomic():
        db.execute("INSERT INTO image_sets (name, kind, public, provenance) VALUES (?, ?, ?, ?)",
                   [name, kind or "clinical", int(bool(public)), json.dumps(provenance or {}, sort_keys=True)])
    return get_set(db, name)


def add_members(db: sqlite_utils.Database, name: str, shas: Iterable[str], origin: str | None = None) -> int:
    """Put stored real images into the existing set ``name``; returns how many were new to it."""
    image_set = get_set(db, name)
    if image_set is None:
        raise ImageSetError(f"no image set named {name!r}")
    added = 0
    with db.atomic():
        for sha in shas:
            cursor = db.execute(
                "INSERT INTO image_set_members (set_id, image_sha256, origin) VALUES (?, ?, ?)"
                " ON CONFLICT(set_id, image_sha256) DO NOTHING", [image_set["id"], sha, origin])
            added += cursor.rowcount
    return added


def list_sets(db: sqlite_utils.Database) -> list[dict]:
    """Every set, by name, with ``counts`` of its images per label (zeros included)."""
    sets = [_shaped(row) for row in db.query("SELECT * FROM image_sets ORDER BY name")]
    counts = db.query("SELECT set_id, images.label, count(*) AS n FROM image_set_members"
                      " JOIN images ON images.sha256 = image_set_members.image_sha256 GROUP BY set_id, images.label")
    by_set: dict[int, dict[str, int]] = {}
    for row in counts:
        by_set.setdefault(row["set_id"], {})[row["label"]] = row["n"]
    for image_set in sets:
        image_set["counts"] = {label: by_set.get(image_set["id"], {}).get(label, 0) for label in LABELS}
    return sets


def resolve(db: sqlite_utils.Database, names: Sequence[str] | None, *, kind: str | None = None,
            public: bool | None = None) -> list[dict]:
    """The named sets, or, without names, every set of ``kind`` (and ``public`` flag) given.

    Raises:
        ImageSetError: For a name that is no set (listing the sets there are), or a named set
            whose flags are not the ones required.
    """
    sets = list_sets(db)
    if not names:
        return [s for s in sets if (kind is None or s["kind"] == kind) and (public is None or s["public"] == public)]
    by_name = {s["name"]: s for s in sets}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        known = ", ".join(f"{s['name']} ({describe(s)})" for s in sets) or "none"
        raise ImageSetError(f"no image set named {', '.join(map(repr, unknown))}; sets: {known}")
    chosen = [by_name[name] for name in dict.fromkeys(names)]
    for image_set in chosen:
        if (kind is not None and image_set["kind"] != kind) or (public is not None and image_set["public"] != public):
            raise ImageSetError(f"image set {image_set['name']!r} is {describe(image_set)}; required: "
                                + describe({"kind": kind or image_set["kind"], "public": public
                                            if public is not None else image_set["public"]}))
    return chosen


def describe(image_set: dict) -> str:
    """``"clinical, not public"`` or ``"phantom-demo, public"``."""
    return f"{image_set['kind']}, {'public' if image_set['public'] else 'not public'}"


def _shaped(row: dict) -> dict:
    return {**row, "public": bool(row["public"]), "provenance": json.loads(row["provenance"] or "{}")}
