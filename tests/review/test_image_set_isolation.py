"""Image sets kept apart: demo commands never touch a clinical set, and each consumer draws from the sets it names.

Issue 14: `make demo-analysis` registered 120 phantom frames as real images beside clinical frames,
a clinical study then drew phantoms, simulated demo studies drew clinical frames, and the kiosk put
clinical frames into the public booth pool.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appconfig import AppConfig, Services
from database import image_sets
from database import images as image_store
from database import studies as study_store
from database.connection import open_db
from generation.phantom.frames import write_phantom_set
from review import simulate, studies, study_setup
from review.design import StudyDesign
from review.kiosk import __main__ as kiosk_cli
from review.kiosk.pools import build_pools
from review.presentation import encoded_length
from review.register import Target, register_real_images
from review.register import main as register_main
from review.study_setup import RaterSpec
from tests.review.conftest import ADMIN_PASSWORD, add_images

REPO = Path(__file__).resolve().parents[2]


def _members(db, name: str) -> set[str]:
    return {row["sha256"] for row in image_store.list_images(db, source="real", image_sets=[name])}


def _demo_set(db, folder: Path, n: int = 4) -> set[str]:
    """Phantom frames (other seeds than the clinical fixture's) registered into the public demo set."""
    write_phantom_set(folder, n, seed=11, size=(64, 64))
    register_real_images(db, folder, Target("demo", "phantom-demo", True))
    return _members(db, "demo")


def _makefile_demo_flags() -> list[str]:
    """The flags the Makefile's demo targets register with (``DEMO_SET := ...``)."""
    found = re.search(r"^DEMO_SET := (.+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    return found.group(1).split()


@pytest.fixture
def clinic(tmp_path):
    """A database whose clinical set 'clinic' holds 6 frames per label, with two checkpoints' images."""
    db_path = tmp_path / "study.db"
    db = open_db(db_path)
    ids = add_images(db, tmp_path / "clinical", real_sets=("clinic",))
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    yield db, db_path, ids, _members(db, "clinic")
    db.close()


def test_demo_commands_write_to_the_demo_set_and_leave_the_clinical_set_untouched(clinic, tmp_path, monkeypatch):
    db, db_path, _, before = clinic
    phantoms = tmp_path / "demo-real"
    write_phantom_set(phantoms, 3, seed=1, size=(64, 64))
    assert _makefile_demo_flags() == ["--set", "demo", "--kind", "phantom-demo", "--public"]
    assert register_main(["--data", str(phantoms), "--db", str(db_path), *_makefile_demo_flags()]) == 0
    assert register_main(["--data", str(phantoms), "--db", str(db_path), "--masks", *_makefile_demo_flags()]) == 0
    # The kiosk's own demo registration (what `make kiosk` does on an empty demo set), made small here.
    monkeypatch.setattr(kiosk_cli, "write_phantom_set", lambda folder, n, seed: write_phantom_set(folder, 2, seed=7,
                                                                                                   size=(64, 64)))
    kiosk_cli._register_demo_phantoms(db, tmp_path / "data")
    assert _members(db, "clinic") == before
    demo = image_sets.get_set(db, "demo")
    assert (demo["kind"], demo["public"]) == ("phantom-demo", True)
    assert len(_members(db, "demo")) == 6 + 4 and not _members(db, "demo") & before
    # A clinical study made afterwards draws only clinical frames.
    session = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    ids = [c["id"] for c in db.query("SELECT id FROM checkpoints ORDER BY id")]
    design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=2, real_per_label=6, size=64,
                         attention_checks=2)
    created = study_setup.create_study(db, tmp_path / "data", session, "clinical", design, [RaterSpec("rita")])
    rows = study_store.study_images(db, created.study_id)
    assert {len(Path(row["presented_path"]).read_bytes()) for row in rows} == {encoded_length(64, 64)}
    assert {row["role"] for row in rows} == {"real", "synthetic", "attention"}
    shown = {row["sha256"] for row in rows if row["role"] == "real"}
    assert len(shown) == 12 and shown <= before
    assert study_store.get_study(db, created.study_id)["design"]["image_sets"] == ["clinic"]


def test_simulated_studies_draw_from_the_demo_set_only(clinic, tmp_path):
    db, _, ids, before = clinic
    assert not _demo_set(db, tmp_path / "phantoms") & before
    session = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    assert simulate.parse_args([]).image_set == "demo"  # the command's default
    design = StudyDesign(mode="pair", checkpoint_ids=tuple(ids), images_per_cell=2, ratings_per_image=1, size=64)
    summary = simulate.simulate_panel(db, tmp_path / "data", session, "Simulated panel (pair)", design, n_raters=2)
    shown = {row["sha256"] for row in study_store.study_images(db, summary["study_id"]) if row["role"] == "real"}
    assert shown and shown <= _members(db, "demo") and not shown & before
    assert study_store.get_study(db, summary["study_id"])["design"]["image_sets"] == ["demo"]


def test_a_study_names_its_sets_and_a_demo_install_uses_the_demo_set(tmp_path):
    db = open_db(":memory:")
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    session = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    with pytest.raises(studies.ReviewError, match="no image set to draw real images from"):
        study_setup.study_sets(db)
    ids = add_images(db, tmp_path / "phantoms", real_sets=("demo",))
    design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=1, real_per_label=1, size=64)
    created = study_setup.create_study(db, tmp_path / "data", session, "demo", design, [RaterSpec("rita")])
    assert study_store.get_study(db, created.study_id)["design"]["image_sets"] == ["demo"]  # no clinical set here
    with pytest.raises(studies.ReviewError, match=r"no image set named 'nope'; sets: demo \(phantom-demo, public\)"):
        study_setup.create_study(db, tmp_path / "data", session, "real", StudyDesign(
            **{**design.to_dict(), "image_sets": ["nope"]}), [RaterSpec("rita")])


def test_kiosk_pools_show_only_public_sets(clinic, tmp_path):
    db, db_path, ids, before = clinic
    assert not _demo_set(db, tmp_path / "phantoms") & before
    config = AppConfig(data_dir=tmp_path / "d", checkpoints_dir=tmp_path / "c", db_path=db_path, device="cpu")
    pools = build_pools(Services(config), per_label=2, checkpoint_ids=ids)
    real = {image.sha256 for image in pools.images if image.source == "real"}
    assert real and real <= _members(db, "demo") and not real & before
    assert [s["name"] for s in pools.image_sets] == ["demo"]


def test_the_metrics_reference_set_is_named_and_recorded(clinic, tmp_path):
    from evaluation.scorecard import NothingToEvaluate, reference_sets

    db, *_ = clinic
    assert reference_sets(db) == ["clinic"]
    _demo_set(db, tmp_path / "phantoms", 2)
    assert reference_sets(db) == ["clinic"]  # clinical sets when there are any, never mixed with the demo
    assert reference_sets(db, ["demo"]) == ["demo"]
    with pytest.raises(NothingToEvaluate, match="no image set named 'x'"):
        reference_sets(db, ["x"])
