"""A study database with real and synthetic images (phantom frames, small) and an admin."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from database import checkpoints as checkpoint_store
from database import image_sets
from database import images as image_store
from database import masks as mask_store
from database import studies as study_store
from database.connection import connect, open_db
from generation.masks.files import mask_to_image
from generation.phantom.frames import render_phantom
from review import studies, study_setup
from review.design import StudyDesign

ADMIN_PASSWORD = "admin-password-1"


def add_images(db, folder: Path, n_real: int = 6, n_synthetic: int = 3, checkpoints: int = 2,
               real_sets: tuple[str, ...] = ("default", "demo")) -> list[int]:
    """Phantoms stored as real images (per label) and as synthetic images of ``checkpoints`` checkpoints.

    The real images go into every set of ``real_sets``: by default both the clinical ``default`` set
    (what real studies and the metrics draw from) and the public phantom-demo ``demo`` set (what
    simulated studies and the kiosk draw from), so one fixture serves every kind of test. Tests of
    set isolation pass their own.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if "demo" in real_sets:
        image_sets.ensure_set(db, "demo", "phantom-demo", True)

    def write(name: str, label: str, seed: int) -> tuple[str, Path]:
        path = folder / f"{name}.png"
        render_phantom(label, seed, (64, 64)).image.save(path)
        return hashlib.sha256(path.read_bytes()).hexdigest(), path

    for label in ("AD", "NonAD"):
        for i in range(n_real):
            sha, path = write(f"real-{label}-{i}", label, 1000 + i)
            for name in real_sets:
                image_store.add_real_image(db, sha256=sha, label=label, path=str(path), width=64, height=64,
                                           image_set=name)
    ids = []
    for c in range(checkpoints):
        cid = checkpoint_store.upsert_checkpoint(db, path=f"/ckpt/{c}", name=f"checkpoint-{(c + 1) * 100}", step=(c + 1) * 100,
                                      stage=2, kind="pipeline", fingerprint=f"fp{c}")
        ids.append(cid)
        rows = []
        for label in ("AD", "NonAD"):
            for i in range(n_synthetic):
                sha, path = write(f"syn-{c}-{label}-{i}", label, 5000 + 100 * c + i)
                rows.append({"sha256": sha, "label": label, "path": str(path), "width": 64, "height": 64,
                             "checkpoint_id": cid, "prompt": f"{label} polyp", "negative_prompt": "", "seed": i,
                             "scheduler": "dpm++", "steps": 20, "guidance": 3.0, "seconds": 0.1})
        image_store.add_synthetic_images(db, rows)
    return ids


def add_phantom_masks(db, folder, every: int = 1) -> int:
    """Give every ``every``-th stored image its exact phantom mask (the images are phantoms of known seeds)."""
    folder.mkdir(parents=True, exist_ok=True)
    added = 0
    for number, image in enumerate(image_store.list_images(db)):
        if number % every:
            continue
        name = image["path"].rsplit("/", 1)[-1].removesuffix(".png")
        kind, *rest = name.split("-")
        seed = 1000 + int(rest[-1]) if kind == "real" else 5000 + 100 * int(rest[0]) + int(rest[-1])
        mask = render_phantom(image["label"], seed, (64, 64)).mask
        path = folder / f"{name}-mask.png"
        mask_to_image(mask).save(path)
        mask_store.add_mask(db, image_sha256=image["sha256"], mask_path=str(path),
                            mask_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                            area_fraction=float(mask.mean()), mask_source="phantom")
        added += 1
    return added


@pytest.fixture
def review_env(tmp_path):
    """(db, data_dir, admin session, checkpoint ids) with 6 real per label and 3 synthetic per checkpoint x label."""
    db = open_db(tmp_path / "study.db")
    ids = add_images(db, tmp_path / "images")
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    session = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    yield db, tmp_path / "data", session, ids
    db.close()


def open_single_study(config, images: Path, name: str, raters: list, ratings_per_image: int, seed: int):
    """``add_images`` into ``config``'s database, an admin, and an open single-mode study of 2 synthetic
    images per cell and 4 real per label for ``raters`` (``RaterSpec``s), its audit recorded as passed.

    Returns:
        What ``study_setup.create_study`` returned.
    """
    with connect(config.db_path) as db:
        ids = add_images(db, images)
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
        admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
        design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=2, real_per_label=4,
                             ratings_per_image=ratings_per_image, repeats=1, attention_checks=1, size=64, seed=seed)
        created = study_setup.create_study(db, config.data_dir, admin, name, design, raters)
        study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
        study_setup.open_study(db, admin, created.study_id)
    return created
