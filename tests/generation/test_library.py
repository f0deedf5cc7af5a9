"""The Generate flow: images on disk and rows in the database are one unit."""

from __future__ import annotations

import sqlite3

import pytest

from appconfig import AppConfig, Services
from database import checkpoints as checkpoint_store
from database import images as image_store
from generation.library import generate_and_record, list_checkpoints
from generation.sampling import SamplingRequest


@pytest.fixture
def services(tmp_path, tiny_run):
    config = AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "checkpoints", db_path=tmp_path / "s.db", device="cpu", demo_dir=tiny_run)
    return Services(config)


def _request(**overrides):
    return SamplingRequest(**{"label": "NonAD", "prompt": "a polyp", "n": 2, "steps": 2, **overrides})


def test_generate_and_record_stores_files_and_rows(services, tiny_run):
    rows = generate_and_record(services, tiny_run / "checkpoint-2", _request())
    with services.db() as db:
        stored = image_store.list_images(db, source="synthetic")
        checkpoints = checkpoint_store.list_checkpoints(db)
    assert sorted(r["sha256"] for r in stored) == sorted(r["sha256"] for r in rows)
    assert {r["checkpoint_stage"] for r in stored} == {1}
    assert checkpoints[0]["fingerprint"] == list_checkpoints([tiny_run])[0].fingerprint


def test_a_failed_store_removes_the_files_it_wrote(services, tiny_run, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(image_store, "add_synthetic_images", refuse)
    with pytest.raises(sqlite3.OperationalError):
        generate_and_record(services, tiny_run / "checkpoint-4", _request(seed=40))
    assert not list(services.config.generated_dir.rglob("*.png"))


def test_regenerating_an_identical_image_keeps_one_file_and_one_row(services, tiny_run):
    first = generate_and_record(services, tiny_run / "checkpoint-4", _request(n=1))
    again = generate_and_record(services, tiny_run / "checkpoint-4", _request(n=1))
    assert first[0]["sha256"] == again[0]["sha256"] and again[0]["new_file"] is False
    assert len(list(services.config.generated_dir.rglob("*.png"))) == 1
    with services.db() as db:
        assert sum(image_store.count_images(db)["synthetic"].values()) == 1


def test_a_checkpoint_in_a_run_folder_is_stored_under_its_run_name(services, tiny_run):
    import shutil

    shutil.copytree(tiny_run, services.config.checkpoints_dir / "run1")
    generate_and_record(services, services.config.checkpoints_dir / "run1" / "checkpoint-2", _request(n=1))
    with services.db() as db:
        names = [row["name"] for row in checkpoint_store.list_checkpoints(db)]
    assert names == ["run1/checkpoint-2"]
