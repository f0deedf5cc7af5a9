"""Image sets: named sets of real images with their own flags, and databases made before sets existed."""

from __future__ import annotations

import sqlite3

import pytest
import sqlite_utils

from database import image_sets
from database import images as image_store
from database.connection import open_db
from database.schema import MIGRATIONS

SHA = [f"{i:x}" * 64 for i in range(1, 4)]


def _real(db, sha, label="AD", image_set=image_sets.DEFAULT_SET):
    return image_store.add_real_image(db, sha256=sha, label=label, path=f"/x/{sha[:4]}.png", width=8, height=8,
                                      image_set=image_set)


def test_a_database_made_before_image_sets_keeps_its_real_images_in_a_clinical_default_set(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite_utils.Database(path)
    MIGRATIONS.apply(old, stop_before="0007_image_sets")
    old.execute("INSERT INTO images (sha256, source, label, path, width, height, origin)"
                " VALUES (?, 'real', 'AD', '/old.png', 4, 4, '/clinic')", [SHA[0]])
    old.conn.commit()
    old.close()
    db = open_db(path)
    default = image_sets.get_set(db, "default")
    assert (default["kind"], default["public"]) == ("clinical", False)
    assert default["provenance"]["made_by"] == "migration 0007_image_sets"
    assert [row["sha256"] for row in image_store.list_images(db, image_sets=["default"])] == [SHA[0]]
    db.close()


def test_a_fresh_database_has_no_set_until_an_image_is_registered():
    db = open_db(":memory:")
    assert image_sets.list_sets(db) == []
    _real(db, SHA[0])
    assert [(s["name"], s["kind"], s["public"], s["counts"]) for s in image_sets.list_sets(db)] == [
        ("default", "clinical", False, {"AD": 1, "NonAD": 0})]


def test_an_image_can_join_a_second_set_and_sets_filter_listings():
    db = open_db(":memory:")
    image_sets.ensure_set(db, "demo", "phantom-demo", True)
    assert _real(db, SHA[0], image_set="demo")
    assert not _real(db, SHA[0], image_set="default")  # already stored: joins the set, no new row
    _real(db, SHA[1], "NonAD", image_set="demo")
    assert {r["sha256"] for r in image_store.list_images(db, image_sets=["demo"])} == {SHA[0], SHA[1]}
    assert [r["sha256"] for r in image_store.list_images(db, image_sets=["default"])] == [SHA[0]]
    assert image_store.list_images(db, image_sets=[]) == []


def test_flags_are_fixed_and_names_checked():
    db = open_db(":memory:")
    image_sets.ensure_set(db, "clinic", "clinical", False)
    with pytest.raises(image_sets.ImageSetError, match="is clinical, not public; its flags are fixed"):
        image_sets.ensure_set(db, "clinic", public=True)
    with pytest.raises(image_sets.ImageSetError, match="kind must be one of clinical, phantom-demo; got 'x'"):
        image_sets.ensure_set(db, "new", "x")
    with pytest.raises(image_sets.ImageSetError, match="not valid"):
        image_sets.ensure_set(db, "../etc")
    assert image_sets.ensure_set(db, "clinic")["kind"] == "clinical"


def test_resolve_picks_sets_by_kind_or_name_and_says_which_exist():
    db = open_db(":memory:")
    image_sets.ensure_set(db, "clinic", "clinical")
    image_sets.ensure_set(db, "demo", "phantom-demo", True)
    assert [s["name"] for s in image_sets.resolve(db, None, kind="clinical")] == ["clinic"]
    assert [s["name"] for s in image_sets.resolve(db, None, public=True)] == ["demo"]
    with pytest.raises(image_sets.ImageSetError, match=r"no image set named 'nope'; sets: clinic \(clinical, not public\)"):
        image_sets.resolve(db, ["nope"])
    with pytest.raises(image_sets.ImageSetError, match="'clinic' is clinical, not public; required: clinical, public"):
        image_sets.resolve(db, ["clinic"], public=True)


def test_only_real_images_belong_to_sets():
    db = open_db(":memory:")
    db.execute("INSERT INTO checkpoints (path, name, step, kind, fingerprint) VALUES ('/c', 'c', 1, 'pipeline', 'f')")
    image_store.add_synthetic_image(db, sha256=SHA[2], label="AD", path="/s.png", width=8, height=8, checkpoint_id=1,
                                    prompt="p", negative_prompt="", seed=1, scheduler="dpm++", steps=1, guidance=1.0,
                                    seconds=0.1)
    image_sets.ensure_set(db, "clinic")
    with pytest.raises(sqlite3.IntegrityError, match="only real images"):
        image_sets.add_members(db, "clinic", [SHA[2]])
