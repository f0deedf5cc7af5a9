"""Tests for the database:  schema, transactions and the image/checkpoint functions."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from database import checkpoints as checkpoint_store
from database import images as image_store
from database.connection import open_db
from database.schema import MIGRATIONS

SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture
def db():
    database = open_db(":memory:")
    yield database
    database.close()


@pytest.fixture
def checkpoint_id(db) -> int:
    return checkpoint_store.upsert_checkpoint(
        db, path="/ckpt/checkpoint-500", name="stage 1 @500", step=500, stage=1,
        kind="training-output", fingerprint="f00d", base_path="/ckpt/base",
    )


def synthetic(sha256: str, checkpoint_id: int, **overrides) -> dict:
    row = dict(
        sha256=sha256, label="AD", path=f"/gen/{sha256[:8]}.png", width=64, height=64,
        checkpoint_id=checkpoint_id, prompt="an adenoma", negative_prompt="", seed=7,
        scheduler="DPMSolverMultistepScheduler", steps=20, guidance=3.5, seconds=0.25,
    )
    return {**row, **overrides}


def test_migrations_create_tables(db) -> None:
    assert {"checkpoints", "images", "provenance"} <= set(db.table_names())
    assert MIGRATIONS.pending(db) == []
    assert [m.name for m in MIGRATIONS.applied(db)][0] == "0001_images_checkpoints_provenance"


def test_file_db_uses_wal_foreign_keys_and_reopens_cheaply(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "study.db"
    first = open_db(path)
    assert path.exists()
    assert first.journal_mode == "wal"
    assert first.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert first.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    first.close()

    again = open_db(path)
    assert MIGRATIONS.pending(again) == []  # applied once, by the first open
    assert again.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    again.close()


def test_upsert_checkpoint_is_idempotent_and_updates(db) -> None:
    kwargs = dict(path="/ckpt/a", name="a", step=100, stage=1, kind="pipeline",
                  fingerprint="abc", metadata={"lr": 1e-4})
    first = checkpoint_store.upsert_checkpoint(db, **kwargs)
    assert checkpoint_store.upsert_checkpoint(db, **kwargs) == first
    assert len(checkpoint_store.list_checkpoints(db)) == 1

    assert checkpoint_store.upsert_checkpoint(db, **{**kwargs, "step": 200, "stage": 2, "metadata": None}) == first
    (row,) = checkpoint_store.list_checkpoints(db)
    assert (row["step"], row["stage"], row["fingerprint"]) == (200, 2, "abc")
    assert row["metadata"] == {"lr": 1e-4}  # None keeps what is stored


def test_retrained_weights_at_the_same_path_are_a_new_checkpoint(db) -> None:
    kwargs = dict(path="/ckpt/a", name="a", step=100, stage=1, kind="pipeline", fingerprint="abc")
    old = checkpoint_store.upsert_checkpoint(db, **kwargs)
    new = checkpoint_store.upsert_checkpoint(db, **{**kwargs, "fingerprint": "def", "step": 300})
    assert new != old
    rows = {row["id"]: row for row in checkpoint_store.list_checkpoints(db)}
    assert (rows[old]["fingerprint"], rows[old]["step"]) == ("abc", 100), "old images keep the old weights' row"
    assert (rows[new]["fingerprint"], rows[new]["step"]) == ("def", 300)


def test_list_checkpoints_orders_by_step_then_name(db) -> None:
    for name, step in [("b", 10), ("a", 10), ("c", 5)]:
        checkpoint_store.upsert_checkpoint(db, path=f"/{name}", name=name, step=step, stage=None,
                                kind="pipeline", fingerprint="x")
    assert [c["name"] for c in checkpoint_store.list_checkpoints(db)] == ["c", "a", "b"]


@pytest.mark.parametrize(
    "change, match",
    [({"kind": "lora"}, "kind must be one of pipeline, training-output"),
     ({"stage": 3}, "stage must be one of"),
     ({"step": -1}, "step must be >= 0")],
)
def test_upsert_checkpoint_validates(db, change, match) -> None:
    kwargs = dict(path="/c", name="c", step=1, stage=1, kind="pipeline", fingerprint="x")
    with pytest.raises(ValueError, match=match):
        checkpoint_store.upsert_checkpoint(db, **{**kwargs, **change})


def test_add_real_image_twice_returns_false(db) -> None:
    assert image_store.add_real_image(db, sha256=SHA_A, label="AD", path="/a.png", width=4, height=3)
    assert not image_store.add_real_image(db, sha256=SHA_A, label="AD", path="/copy.png", width=4,
                                    height=3)
    assert image_store.get_image(db, SHA_A)["path"] == "/a.png"
    assert image_store.count_images(db) == {"real": {"AD": 1, "NonAD": 0},
                                      "synthetic": {"AD": 0, "NonAD": 0}}


def test_stored_sha256_matches_file_on_disk(db, tmp_path: Path) -> None:
    path = tmp_path / "frame.png"
    Image.new("RGB", (5, 4), (10, 20, 30)).save(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    image_store.add_real_image(db, sha256=digest, label="NonAD", path=str(path), width=5, height=4)
    (row,) = image_store.list_images(db, source="real")
    assert row["sha256"] == hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "change, match",
    [({"sha256": "A" * 64}, "sha256 must be 64 lowercase hex"),
     ({"sha256": "abc"}, "sha256 must be 64 lowercase hex"),
     ({"label": "Adenoma"}, "valid labels: AD, NonAD"),
     ({"width": 0}, "width must be >= 1")],
)
def test_add_real_image_validates(db, change, match) -> None:
    kwargs = dict(sha256=SHA_A, label="AD", path="/a.png", width=4, height=3)
    with pytest.raises(ValueError, match=match):
        image_store.add_real_image(db, **{**kwargs, **change})
    assert image_store.list_images(db) == []


def test_list_images_rejects_unknown_source(db) -> None:
    with pytest.raises(ValueError, match="source must be one of real, synthetic; got 'fake'"):
        image_store.list_images(db, source="fake")


def test_unknown_checkpoint_fails_and_leaves_no_image_row(db) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        image_store.add_synthetic_image(db, **synthetic(SHA_A, checkpoint_id=999))
    assert image_store.get_image(db, SHA_A) is None
    assert image_store.count_images(db)["synthetic"] == {"AD": 0, "NonAD": 0}


def test_get_image_joins_provenance_and_checkpoint(db, checkpoint_id) -> None:
    assert image_store.add_synthetic_image(db, **synthetic(SHA_A, checkpoint_id))
    assert not image_store.add_synthetic_image(db, **synthetic(SHA_A, checkpoint_id, seed=8))
    image = image_store.get_image(db, SHA_A)
    assert image["source"] == "synthetic"
    assert (image["prompt"], image["seed"], image["steps"], image["guidance"]) == (
        "an adenoma", 7, 20, 3.5)
    assert (image["checkpoint_id"], image["checkpoint_step"], image["checkpoint_stage"],
            image["checkpoint_path"]) == (checkpoint_id, 500, 1, "/ckpt/checkpoint-500")

    image_store.add_real_image(db, sha256=SHA_B, label="NonAD", path="/r.png", width=4, height=3)
    real = image_store.get_image(db, SHA_B)
    assert real["source"] == "real" and real["checkpoint_id"] is None and real["prompt"] is None


def test_add_synthetic_images_is_all_or_nothing(db, checkpoint_id) -> None:
    rows = [synthetic(SHA_A, checkpoint_id), synthetic(SHA_B, checkpoint_id=999)]
    with pytest.raises(sqlite3.IntegrityError):
        image_store.add_synthetic_images(db, rows)
    assert image_store.list_images(db) == []

    rows[1] = synthetic(SHA_B, checkpoint_id, label="NonAD")
    assert image_store.add_synthetic_images(db, rows) == 2
    assert image_store.add_synthetic_images(db, rows) == 0
    assert [i["sha256"] for i in image_store.list_images(db, checkpoint_id=checkpoint_id)] == [SHA_A, SHA_B]
    assert [i["sha256"] for i in image_store.list_images(db, label="NonAD")] == [SHA_B]


def test_add_synthetic_images_validates_every_row_first(db, checkpoint_id) -> None:
    bad = synthetic(SHA_B, checkpoint_id)
    del bad["seed"]
    with pytest.raises(ValueError, match=r"row 1: missing keys \['seed'\]"):
        image_store.add_synthetic_images(db, [synthetic(SHA_A, checkpoint_id), bad])
    with pytest.raises(ValueError, match="row 0: steps must be >= 1"):
        image_store.add_synthetic_images(db, [synthetic(SHA_A, checkpoint_id, steps=0)])
    assert image_store.list_images(db) == []


def test_database_constraints_back_the_python_checks(db) -> None:
    # Even a write that bypasses the functions above cannot store an unknown label.
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        db["images"].insert({"sha256": SHA_A, "source": "real", "label": "Adenoma",
                             "path": "/a", "width": 1, "height": 1})
