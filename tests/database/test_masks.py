"""Masks in the study database: the migration, atomic writes, queries, and ``register --masks``."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from PIL import Image

from database import images as image_store
from database import masks as mask_store
from database.connection import open_db
from database.schema import MIGRATIONS
from generation.phantom.frames import write_phantom_set
from review import register

SHA = "a" * 64


def _image(db, sha=SHA, label="AD"):
    image_store.add_real_image(db, sha256=sha, label=label, path=f"/x/{sha[:4]}.png", width=8, height=8)


def _mask(sha=SHA, **extra):
    return {"image_sha256": sha, "mask_path": "/m.png", "mask_sha256": "b" * 64, "area_fraction": 0.25,
            "mask_source": "real", **extra}


@pytest.fixture
def db():
    database = open_db(":memory:")
    yield database
    database.close()


def test_migration_adds_the_masks_table(db):
    assert "0004_masks" in [m.name for m in MIGRATIONS.applied(db)]
    assert {"image_sha256", "mask_path", "mask_sha256", "mask_label", "area_fraction", "mask_source",
            "mask_provenance", "reading", "created_at"} <= set(db["masks"].columns_dict)


def test_add_get_list_and_count(db):
    _image(db)
    _image(db, "c" * 64, "NonAD")
    assert mask_store.add_mask(db, **_mask(reading={"colour_map": None, "threshold": 128}))
    assert not mask_store.add_mask(db, **_mask())  # an image keeps its first mask
    assert mask_store.get_mask(db, SHA)["reading"] == {"colour_map": None, "threshold": 128}
    assert mask_store.get_mask(db, "c" * 64) is None
    rows = mask_store.list_masked_images(db, source="real")
    assert [(r["sha256"], r["label"], r["mask_source"], r["area_fraction"]) for r in rows] == [(SHA, "AD", "real", 0.25)]
    assert mask_store.list_masked_images(db, label="NonAD") == []
    assert mask_store.list_masked_images(db, mask_source="procedural") == []
    assert mask_store.count_masks(db) == {"real": 1, "augmented": 0, "procedural": 0, "phantom": 0}


def test_a_batch_is_all_or_nothing(db):
    _image(db)
    with pytest.raises(sqlite3.IntegrityError):
        mask_store.add_masks(db, [_mask(), _mask("d" * 64)])  # the second image is not stored
    assert mask_store.get_mask(db, SHA) is None


@pytest.mark.parametrize("change, message", [
    ({"area_fraction": 0.0}, "area_fraction must be a number in \\(0, 1\\]"), ({"mask_source": "drawn"}, "mask_source must be one of"),
    ({"mask_label": "Polyp"}, "valid labels"), ({"mask_sha256": "xyz"}, "mask_sha256 must be 64"), ({"colour": 1}, "unknown keys"),
])
def test_bad_rows_are_refused_by_name(db, change, message):
    _image(db)
    with pytest.raises(ValueError, match=f"mask row 0: .*{message}"):
        mask_store.add_masks(db, [{**_mask(), **change}])


def test_register_masks_cli_stores_phantom_pairs_once(tmp_path, capsys):
    write_phantom_set(tmp_path / "ph", n_per_label=2, seed=1, size=(64, 64))
    db_path = tmp_path / "study.db"
    assert register.main(["--data", str(tmp_path / "ph"), "--masks", "--db", str(db_path)]) == 0
    assert "added: 4" in capsys.readouterr().out
    assert register.main(["--data", str(tmp_path / "ph"), "--masks", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert "added: 0" in out and "masks added: 0" in out
    db = open_db(db_path)
    rows = mask_store.list_masked_images(db)
    assert len(rows) == 4 and {r["mask_source"] for r in rows} == {"phantom"}
    db.close()


def test_register_masks_reads_colours_and_reports_problems(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    red = np.zeros((8, 8, 3), np.uint8)
    red[2:5, 2:5] = (255, 0, 0)
    for name in ("a", "b"):
        Image.fromarray(np.full((8, 8, 3), 90 if name == "a" else 91, np.uint8)).save(root / "images" / f"{name}.png")
    Image.fromarray(red).save(root / "masks" / "a.png")
    db_path = tmp_path / "study.db"
    code = register.main(["--data", str(root), "--masks", "--colour-map", '{"#ff0000": "AD"}', "--db", str(db_path)])
    out = capsys.readouterr().out
    assert code == 0 and "masks added: 1" in out and "b.png: has no mask: expected masks/b.*" in out
    db = open_db(db_path)
    (row,) = mask_store.list_masked_images(db)
    assert (row["label"], row["mask_label"], row["reading"]["colour_map"]) == ("AD", "AD", {"#ff0000": "AD"})
    db.close()


def test_register_without_masks_is_unchanged_and_mask_flags_need_masks(tmp_path, capsys):
    write_phantom_set(tmp_path / "ph", n_per_label=1, seed=1, size=(64, 64))
    db_path = tmp_path / "study.db"
    assert register.main(["--data", str(tmp_path / "ph"), "--db", str(db_path)]) == 0
    assert "masks added" not in capsys.readouterr().out
    db = open_db(db_path)
    assert len(image_store.list_images(db)) == 2 and mask_store.list_masked_images(db) == []
    db.close()
    with pytest.raises(SystemExit) as exit_info:
        register.main(["--data", str(tmp_path / "ph"), "--colour-map", "{}"])
    assert exit_info.value.code == 2 and "need --masks" in capsys.readouterr().err
