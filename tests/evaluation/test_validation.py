"""Validation while training: each checkpoint's FID, KID and label fidelity on the held-out split, in its
polypturing.json and in the study database under the checkpoint row discovery finds."""

from __future__ import annotations

import json

import pytest

from database.connection import connect
from database.metric_results import list_results
from evaluation.validation import TrainingValidator
from generation import train
from generation.checkpoints import inspect_checkpoint
from tests.conftest import write_labelled_folder
from tests.evaluation.conftest import make_tiny_extractor

REGISTRY = {"tiny": lambda device="cpu": make_tiny_extractor().to(device)}


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("validated")
    data = write_labelled_folder(root / "data", per_label=10)
    args = train.parse_args([
        "--data", str(data), "--out", str(root / "run"), "--tiny", "--vae-steps", "2", "--stage1-steps", "2",
        "--stage2-steps", "2", "--checkpoint-every", "2", "--batch-size", "4", "--device", "cpu",
        "--val-fraction", "0.2", "--val-steps", "2"])
    validator = TrainingValidator("tiny", root / "study.db", registry=REGISTRY)
    assert train.main(args, validator) == 0
    return root


def test_each_checkpoint_records_its_validation_and_trains_without_the_held_out_images(validated_run):
    for step in (2, 4):
        meta = json.loads((validated_run / "run" / f"checkpoint-{step}" / "polypturing.json").read_text())
        assert meta["training_data"]["per_label"] == {"AD": 8, "NonAD": 8}
        assert meta["held_out"]["per_label"] == {"AD": 2, "NonAD": 2}
        validation = meta["validation"]
        assert (validation["extractor"], validation["n_real"], validation["n_fake"]) == ("tiny", 4, 4)
        for metric in ("fid", "kid", "label_fidelity", "fid_AD", "label_fidelity_NonAD"):
            assert isinstance(validation["summary"][metric], float), metric
        assert 0 <= validation["summary"]["label_fidelity"] <= 1


def test_validation_results_are_metric_results_of_the_discovered_checkpoint_over_steps(validated_run):
    with connect(validated_run / "study.db") as db:
        rows = list_results(db, "tiny")
        checkpoints = {row["path"]: row for row in db.query("SELECT * FROM checkpoints")}
    assert {row["checkpoint_step"] for row in rows} == {2, 4}
    pooled_fid = sorted((row["checkpoint_step"], row["value"]) for row in rows if (row["metric"], row["scope"]) == ("fid", "pooled"))
    assert [step for step, _ in pooled_fid] == [2, 4] and all(value >= 0 for _, value in pooled_fid)
    assert {(row["metric"], row["scope"]) for row in rows} == {
        (metric, scope) for metric in ("fid", "kid", "label_fidelity") for scope in ("AD", "NonAD", "pooled")}
    assert all(row["details"]["reference"].startswith("held-out split") for row in rows)
    for step in (2, 4):
        info = inspect_checkpoint(validated_run / "run" / f"checkpoint-{step}")
        row = checkpoints[str(info.path.resolve())]
        assert row["fingerprint"] == info.fingerprint, "the training state must not change the fingerprint"
        assert row["name"] == f"run/checkpoint-{step}"


def test_an_unknown_extractor_is_refused_before_training(tmp_path, capsys):
    data = write_labelled_folder(tmp_path / "data", per_label=2)
    code = train.cli(["--data", str(data), "--out", str(tmp_path / "out"), "--tiny", "--val-extractor", "nope",
                      "--db", str(tmp_path / "db")])
    assert code == 2
    assert "--val-extractor: 'nope' is not a known extractor" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
