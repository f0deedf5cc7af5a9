"""The command line: JSON end to end in a subprocess, the table in-process, and user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from evaluation.metrics import main
from tests.evaluation.conftest import write_image_set

REPO = Path(__file__).resolve().parents[2]
KEYS = {"fid", "fid_ci_low", "fid_ci_high", "kid_mean", "kid_std", "kid_subset_size", "precision", "recall",
        "density", "coverage", "k", "n_real", "n_fake", "extractor", "preprocessing", "warnings", "problems"}


def _run(*args):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "evaluation.metrics", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_json_end_to_end_with_cache(tmp_path):
    real = write_image_set(tmp_path / "real", 7, size=(32, 32), seed=1)
    fake = write_image_set(tmp_path / "fake", 6, size=(32, 32), seed=2, high=150)
    (fake / "broken.png").write_bytes(b"junk")
    args = ["--real", str(real), "--fake", str(fake), "--extractor", "efficientnet", "--json", "--device", "cpu",
            "--bootstrap", "20", "--k", "3", "--cache", str(tmp_path / "cache")]
    done = _run(*args)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert KEYS <= set(report)
    assert (report["n_real"], report["n_fake"], report["k"], report["extractor"]) == (7, 6, 3, "efficientnet")
    assert report["fid_ci_low"] <= report["fid_ci_high"] and report["kid_subset_size"] == 6
    assert 0 <= report["precision"] <= 1 and report["features_computed"] == 13
    assert any("clamped from 1000 to 6" in w for w in report["warnings"])
    assert "clamped from 1000 to 6" in done.stderr
    assert any("broken.png" in p for p in report["problems"])
    assert "EfficientNet-Lite0" in report["preprocessing"]


def test_cli_table_uses_the_cache_on_a_second_run(tmp_path, capsys):
    real = write_image_set(tmp_path / "real", 4, size=(32, 32), seed=3)
    fake = write_image_set(tmp_path / "fake", 4, size=(32, 32), seed=4)
    args = ["--real", str(real), "--fake", str(fake), "--extractor", "efficientnet", "--device", "cpu",
            "--bootstrap", "5", "--cache", str(tmp_path / "cache")]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "0 computed, 8 from cache" in second
    assert first.split("features")[0] == second.split("features")[0]
    for label in ("FID", "KID", "PRDC (k=5)", "skipped:", "prdc: PRDC: real has 4 sample(s)", "warnings:"):
        assert label in second


def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys):
    fake = write_image_set(tmp_path / "fake", 2)
    assert main(["--real", str(tmp_path / "missing"), "--fake", str(fake)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --real: ") and "does not exist" in err and "Traceback" not in err
    assert main(["--real", str(fake), "--fake", str(fake), "--k", "0"]) == 2
    assert "k: got 0" in capsys.readouterr().err
    done = _run("--real", str(fake), "--fake", str(fake), "--device", "tpu")
    assert done.returncode == 2 and "device: 'tpu'" in done.stderr and "Traceback" not in done.stderr
