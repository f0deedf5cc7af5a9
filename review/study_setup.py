"""Setting up a study (admin): design -> presented images -> schedules -> stored; audit; open, close.

The design is frozen when the study is created: the images it shows, every rater's schedule and
the presentation settings are stored with it, made by pure seeded functions
(``review.schedule``, ``review.presentation``), so the same design and seed give the same study.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

import sqlite_utils

from common.files import sha256_file, write_atomic
from database import image_sets
from database import images as image_store
from database import masks as mask_store
from database import raters as rater_store
from database import studies as study_store
from generation.library import generate_and_record, record_checkpoint
from generation.masks.files import load_mask
from generation.prompts import load_prompts
from generation.sampling import MAX_SEED, SamplingRequest
from review import auth
from review.attention import write_attention_images
from review.audit import audit_files
from review.design import DesignError, StudyDesign, StudyItem, select_items
from review.presentation import PresentationSettings, present_file
from review.schedule import make_schedules
from review.studies import ReviewError, create_account, require_admin

logger = logging.getLogger(__name__)

AUDIT_THRESHOLD = 0.75
"""A study opens only if the presented images' cross-validated real-vs-synthetic AUC from
nuisance cues stays at or below this and no single cue exceeds it, unless overridden."""


@dataclass(frozen=True)
class RaterSpec:
    """A rater named when a study is created; with a password they can also sign in by name."""

    username: str
    password: str | None = None


def parse_raters(text: str | None) -> list[RaterSpec]:
    """The raters an admin typed, one per line: ``username`` (invitation link) or ``username,password``.

    Blank lines are skipped.

    Raises:
        ReviewError: For a line without a username, naming its number.
    """
    specs = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        user, _, pwd = line.partition(",")
        if not user.strip():
            raise ReviewError(f"raters line {number}: expected `username` or `username,password`, got {line!r}")
        specs.append(RaterSpec(user.strip(), pwd.strip() or None))
    return specs


@dataclass(frozen=True)
class CreatedStudy:
    study_id: int
    invitations: dict[str, str] = field(default_factory=dict)  # username -> invitation token (shown once)
    trials_per_rater: dict[str, int] = field(default_factory=dict)


def create_study(
    db: sqlite_utils.Database, data_dir: Path, session: str, name: str, design: StudyDesign,
    raters: list[RaterSpec], simulated: bool = False,
) -> CreatedStudy:
    """Create a study in draft: pick its images, present them, make every rater's schedule.

    Raises:
        Forbidden: If the session is not an admin's.
        ReviewError: For a bad name, too few images for the design, or no raters.
    """
    admin = require_admin(db, session)
    name = (name or "").strip()
    if not 1 <= len(name) <= 200:
        raise ReviewError("study name must have 1-200 characters")
    if not raters:
        raise ReviewError("name at least one rater (one username per line)")
    design = replace(design, image_sets=study_sets(db, design.image_sets, simulated))
    rater_ids = {spec.username: _rater_id(db, spec, simulated) for spec in raters}
    synthetic = [_item(row) for row in image_store.list_images(db, source="synthetic")
                 if row["checkpoint_id"] in design.checkpoint_ids]
    real = [_item(row) for row in image_store.list_images(db, source="real", image_sets=design.image_sets)]
    masks = _masks(db) if design.show_masks else None
    if masks is not None:  # only images whose mask can be outlined
        synthetic = [item for item in synthetic if item.sha256 in masks]
        real = [item for item in real if item.sha256 in masks]
    try:
        items = select_items(design, synthetic, real)
        attention = _attention_images(data_dir, design)
        schedules = make_schedules(design, items, list(rater_ids.values()), tuple(attention))
    except DesignError as error:
        raise ReviewError(str(error)) from error
    settings = PresentationSettings(size=design.size)
    shown = {sha for trials in schedules.values() for trial in trials for sha in trial.images}
    images, written = _present(db, data_dir, shown, attention, settings, masks)
    trials = [_trial_row(rater, trial) for rater, schedule in schedules.items() for trial in schedule]
    try:
        study_id = study_store.create_study(
            db, name=name, mode=design.mode, design=design.to_dict(), presentation=settings.to_dict(),
            created_by=admin.id, simulated=simulated, rater_ids=rater_ids.values(), images=images,
            trials=trials)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    invitations = {user: new_invitation(db, session, study_id, user) for user in rater_ids}
    per_rater = {user: len(schedules[rid]) for user, rid in rater_ids.items()}
    logger.info("study %s (%s) created: %d raters, %d images", study_id, name, len(rater_ids), len(images))
    return CreatedStudy(study_id, invitations, per_rater)


def study_sets(db: sqlite_utils.Database, names: tuple[str, ...] | list[str] = (),
               simulated: bool = False) -> tuple[str, ...]:
    """The image sets a study draws its real images from (recorded in its design).

    ``names`` when given; else every clinical set, or on a demo install without a clinical set
    the phantom-demo sets (never both kinds unless named); a simulated study: the demo set. The
    New study form can offer ``database.image_sets.list_sets(db)`` and pass the chosen names as
    ``StudyDesign(image_sets=...)``.

    Raises:
        ReviewError: For an unknown set, or when there is no set to draw from.
    """
    try:
        if names:
            chosen = image_sets.resolve(db, list(names))
        elif simulated:
            chosen = image_sets.resolve(db, [image_sets.DEMO_SET])
        else:
            chosen = (image_sets.resolve(db, None, kind="clinical")
                      or image_sets.resolve(db, None, kind="phantom-demo"))
    except image_sets.ImageSetError as error:
        raise ReviewError(f"{error}; register images with `python -m review.register --data DIR --set NAME`") from error
    if not chosen:
        raise ReviewError("no image set to draw real images from: register clinical frames with "
                          "`python -m review.register --data DIR --set NAME` (the demo's phantoms: `make demo-data`)")
    return tuple(s["name"] for s in chosen)


def new_invitation(db: sqlite_utils.Database, session: str, study_id: int, username: str,
                   days: float = auth.INVITATION_DAYS) -> str:
    """A fresh invitation token for a rater of a study (admin only); the link is ``/?invite=TOKEN``."""
    require_admin(db, session)
    rater = rater_store.get_rater_by_username(db, username)
    if rater is None or not study_store.is_study_rater(db, study_id, rater["id"]):
        raise ReviewError(f"{username!r} is not a rater of study {study_id}")
    token = auth.new_token()
    rater_store.add_invitation(db, auth.token_hash(token), study_id, rater["id"], auth.expiry(days))
    return token


def audit_study(db: sqlite_utils.Database, session: str, study_id: int,
                threshold: float = AUDIT_THRESHOLD) -> dict:
    """Run the blinding audit on a study's real and synthetic images and store it."""
    require_admin(db, session)
    study = _study(db, study_id)
    rows = study_store.study_images(db, study_id)
    real = [Path(row["source_path"]) for row in rows if row["role"] == "real"]
    fake = [Path(row["source_path"]) for row in rows if row["role"] == "synthetic"]
    settings = PresentationSettings(size=study["presentation"]["size"])
    try:
        result = audit_files(real, fake, settings, threshold=threshold, seed=study["design"]["seed"])
    except ValueError as error:
        raise ReviewError(f"blinding audit could not run: {error}") from error
    audit = result.to_dict()
    study_store.set_study_audit(db, study_id, audit, study["audit_override"])
    return audit


def open_study(db: sqlite_utils.Database, session: str, study_id: int, override_reason: str = "") -> dict:
    """Open a study for rating once its blinding audit passed, or with a recorded override.

    Raises:
        ReviewError: If no audit was run, or the audit failed and no override reason was given.
    """
    admin = require_admin(db, session)
    study = _study(db, study_id)
    audit = study["audit"]
    if audit is None:
        raise ReviewError("run the blinding audit before opening the study")
    override = study["audit_override"]
    if not audit.get("passed"):
        reason = (override_reason or "").strip()
        if not reason:
            leaks = ", ".join(leak["cue"] for leak in audit.get("leaks", [])) or "overall AUC"
            raise ReviewError(
                f"the blinding audit failed (presented AUC {audit.get('auc_presented'):.2f}, leaks: {leaks}); "
                "fix the images, or open anyway by giving an override reason (it is recorded)")
        override = {"by": admin.username, "reason": reason, "at": auth.stamp(auth.now_utc())}
        study_store.set_study_audit(db, study_id, audit, override)
    study_store.set_study_status(db, study_id, "open")
    return _study(db, study_id)


def close_study(db: sqlite_utils.Database, session: str, study_id: int) -> dict:
    require_admin(db, session)
    _study(db, study_id)
    study_store.set_study_status(db, study_id, "closed")
    return _study(db, study_id)


def progress(db: sqlite_utils.Database, session: str, study_id: int) -> list[dict]:
    """Per rater: rated of total, whether the profile is given, last rating time (admin only)."""
    require_admin(db, session)
    _study(db, study_id)
    return study_store.study_progress(db, study_id)


def studies_table(db: sqlite_utils.Database) -> list[list]:
    """Every study as a row of the admin's table: id, name, mode, status, raters, rated, trials, audit verdict."""
    rows = []
    for study in study_store.list_studies(db):
        progress = study_store.study_progress(db, study["id"])
        audit = study["audit"]
        verdict = "not run" if audit is None else ("passed" if audit.get("passed") else "FAILED") + (
            " (overridden)" if study["audit_override"] else "")
        rows.append([study["id"], study["name"], study["mode"], study["status"], len(progress),
                     sum(r["rated"] for r in progress), sum(r["total"] for r in progress), verdict])
    return rows


def _study(db, study_id) -> dict:
    study = study_store.get_study(db, int(study_id))
    if study is None:
        raise ReviewError(f"no study with id {study_id}")
    return study


def _rater_id(db, spec: RaterSpec, simulated: bool) -> int:
    """The rater's id, creating the account if new; simulated and real raters never share a study."""
    existing = rater_store.get_rater_by_username(db, spec.username.strip())
    if existing is not None:
        if bool(existing["simulated"]) != bool(simulated):
            what, study = ("a simulated", "a real") if existing["simulated"] else ("a real", "a simulated")
            raise ReviewError(f"{existing['username']!r} is {what} account and cannot rate in {study} study; "
                              "simulated and real raters are never mixed: choose another username")
        return existing["id"]
    return create_account(db, spec.username, "rater", spec.password, simulated)


def _item(row: dict) -> StudyItem:
    return StudyItem(sha256=row["sha256"], source=row["source"], label=row["label"],
                     checkpoint_id=row["checkpoint_id"])


def _attention_images(data_dir: Path, design: StudyDesign) -> dict[str, Path]:
    if design.attention_checks == 0:
        return {}
    paths = write_attention_images(Path(data_dir) / "attention" / f"seed{design.seed}-{design.size}px",
                                   n=max(2, min(design.attention_checks, 6)), seed=design.seed, size=design.size)
    return {sha256_file(path): path for path in paths}


def _masks(db) -> dict[str, dict]:
    """Every stored mask row by image sha256 (for studies that outline masks)."""
    return {row["sha256"]: row for row in mask_store.list_masked_images(db)}


def _present(db, data_dir: Path, shown: set[str], attention: dict[str, Path],
             settings: PresentationSettings, masks: dict[str, dict] | None = None) -> tuple[list[dict], list[Path]]:
    """Write every shown image through the presentation transform under a random token (with its
    mask's outline when ``masks`` is given)."""
    out_dir = Path(data_dir) / "presented"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    try:
        for sha in sorted(shown):
            if sha in attention:
                meta = {"role": "attention", "label": None, "checkpoint_id": None, "path": str(attention[sha])}
            else:
                image = image_store.get_image(db, sha)
                meta = {"role": image["source"], "label": image["label"],
                        "checkpoint_id": image["checkpoint_id"], "path": image["path"]}
            token = auth.new_token()
            target = out_dir / f"{token}.png"
            try:
                outline = None if masks is None or sha in attention else _read_mask(masks[sha])
                write_atomic(target, present_file(Path(meta["path"]), settings.size, outline))
            except (OSError, ValueError) as error:
                raise ReviewError(f"image {meta['path']} could not be presented: {error}") from error
            written.append(target)
            rows.append({"sha256": sha, "role": meta["role"], "label": meta["label"],
                         "checkpoint_id": meta["checkpoint_id"], "source_path": meta["path"],
                         "token": token, "presented_path": str(target.resolve())})
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return rows, written


def _read_mask(row: dict):
    reading = row.get("reading") or {}
    mask, _ = load_mask(Path(row["mask_path"]), reading.get("colour_map"), reading.get("threshold"))
    return mask


def _trial_row(rater_id: int, trial) -> dict:
    return {"rater_id": rater_id, "position": trial.position, "kind": trial.kind,
            "image_left": trial.images[0], "image_right": trial.images[1] if len(trial.images) > 1 else None,
            "synthetic_side": trial.synthetic_side, "repeat_of": trial.repeat_of, "cell": trial.cell}


def ensure_images(services, checkpoint_paths: list[str], per_label: int, seed: int | None = None,
                  generate: bool = True, progress=None) -> list[int]:
    """The database ids of the chosen checkpoints, generating missing synthetic images if asked.

    For each checkpoint and pathology with fewer than ``per_label`` stored images, and
    ``generate`` true, the shortfall is generated with the default prompt and sampler from a
    base seed drawn with ``secrets`` (``new_seed``). The seeds stay on the server (provenance in
    the database); a rater who regenerates the demo checkpoints' images with seeds 0, 1, 2... and
    the default prompt, presents and hashes them, finds none of the files served.

    Args:
        seed: Not used for generation (seeds are never predictable); accepted so callers that
            pass the study's design seed keep working.
    """
    if not checkpoint_paths:
        raise ReviewError("choose at least one checkpoint")
    book = load_prompts()
    ids = []
    for number, path in enumerate(checkpoint_paths):
        checkpoint_id = record_checkpoint(services, path)
        ids.append(checkpoint_id)
        for label in ("AD", "NonAD"):
            with services.db() as db:
                have = len(image_store.list_images(db, source="synthetic", label=label, checkpoint_id=checkpoint_id))
            if have >= per_label or not generate:
                continue
            if progress is not None:
                progress((number, len(checkpoint_paths)), desc=f"generating {per_label - have} {label} images")
            request = SamplingRequest(label=label, prompt=book.default_prompt(label), negative_prompt=book.negative,
                                      n=per_label - have, seed=new_seed(per_label - have))
            generate_and_record(services, path, request)
    return ids


def new_seed(n: int) -> int:
    """A base seed from the operating system's CSPRNG for ``n`` images (seeds ``S`` .. ``S + n - 1``)."""
    return secrets.randbelow(MAX_SEED - n + 2)
