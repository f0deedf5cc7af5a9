"""Sampling settings, provenance files and the sampling command line."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from generation import sample
from generation.sampling import PROVENANCE_COLUMNS, SamplingRequest, write_provenance
from tests.conftest import REPO


def _request(**overrides) -> SamplingRequest:
    fields = dict(label="AD", prompt="a polyp", n=2, seed=0, steps=2, guidance=3.0, scheduler="dpm++")
    return SamplingRequest(**{**fields, **overrides})


@pytest.mark.parametrize("field, value, message", [
    ("label", "Polyp", "valid labels: AD, NonAD"),
    ("steps", 0, "steps must be between 1 and 200"),
    ("steps", 201, "steps must be between 1 and 200"),
    ("guidance", -0.5, "guidance must be between 0.0 and 30.0"),
    ("guidance", 31, "guidance must be between 0.0 and 30.0"),
    ("n", 0, "n must be between 1"),
    ("seed", -1, "seed must be between 0"),
    ("scheduler", "plms", "choose one of dpm++"),
    ("prompt", "  ", "prompt is empty"),
])
def test_out_of_range_settings_name_the_field_and_the_allowed_values(field, value, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        _request(**{field: value}).validated()


def _read(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_sample_cli_writes_pngs_and_provenance(tmp_path, tiny_run):
    out = tmp_path / "out"
    code = sample.cli(["--checkpoint", str(tiny_run / "checkpoint-4"), "--label", "NonAD", "--n", "3", "--seed", "5",
                       "--steps", "2", "--guidance", "2.5", "--scheduler", "euler", "--out", str(out)])
    assert code == 0
    rows = _read(out / "provenance.csv")
    assert list(rows[0]) == list(PROVENANCE_COLUMNS)
    assert [int(r["seed"]) for r in rows] == [5, 6, 7]
    for row in rows:
        data = (out / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"], "the stored sha256 must match the file"
        assert (row["label"], row["step"], row["scheduler"], row["steps"], row["guidance"]) == ("NonAD", "4", "euler", "2", "2.5")
        assert row["prompt"].startswith("colonoscopy image of a non-adenomatous")
        assert (row["width"], row["height"]) == ("16", "16")
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["file"] for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["--label", "Serrated"], "valid labels: AD, NonAD"),
    (["--label", "AD", "--steps", "0"], "steps must be between 1 and 200"),
    (["--label", "AD", "--guidance", "99"], "guidance must be between"),
])
def test_sample_cli_refuses_bad_input_and_writes_nothing(tmp_path, tiny_run, capsys, argv, message):
    out = tmp_path / "out"
    code = sample.cli(["--checkpoint", str(tiny_run / "checkpoint-4"), "--out", str(out), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_sample_cli_names_a_missing_checkpoint(tmp_path, capsys):
    assert sample.cli(["--checkpoint", str(tmp_path / "nope"), "--label", "AD", "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_write_provenance_merges_with_an_existing_file(tmp_path):
    row = {c: "x" for c in PROVENANCE_COLUMNS} | {"label": "AD", "seed": "1", "file": "a.png"}
    write_provenance([row], tmp_path / "provenance.csv")
    write_provenance([row | {"file": "b.png", "seed": "2"}, row | {"prompt": "updated"}], tmp_path / "provenance.csv")
    rows = _read(tmp_path / "provenance.csv")
    assert [(r["file"], r["prompt"]) for r in rows] == [("a.png", "updated"), ("b.png", "x")]


@pytest.mark.slow
def test_accelerate_launch_splits_seeds_over_two_cpu_processes(tmp_path, tiny_run):
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    out = tmp_path / "bulk"
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", "-m", "generation.sample", "--checkpoint", str(tiny_run / "checkpoint-4"),
               "--label", "AD", "--n", "5", "--steps", "2", "--batch-size", "2", "--out", str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 2/2" in result.stderr
    rows = _read(out / "provenance.csv")
    assert sorted(int(r["seed"]) for r in rows) == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["file"] for r in rows)
    assert not list(out.glob(".provenance.part-*")), "per-process parts are merged and removed"
    # torchrun gives each process one thread; with the same thread count, one process makes the same bytes.
    single = tmp_path / "single"
    alone = subprocess.run([sys.executable, *command[command.index("-m"):-1], str(single)], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"})
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert {r["sha256"] for r in _read(single / "provenance.csv")} == {r["sha256"] for r in rows}, "same bytes as one process"
