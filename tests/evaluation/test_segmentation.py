"""Downstream segmentation: metrics against hand-computed values, the U-Net, splits, the experiment and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.segmentation import __main__ as seg
from evaluation.segmentation.data import SegmentationSet, real_subsets, split_test
from evaluation.segmentation.experiment import dice_iou, downstream_segmentation, evaluate_unet, mean_ci
from evaluation.segmentation.model import UNet, parameter_count, train_unet
from evaluation.segmentation.settings import SegmentationError, SegmentationSettings
from generation.phantom.frames import LABELS, render_phantom

REPO = Path(__file__).resolve().parents[2]
TINY = SegmentationSettings(size=32, width=8, depth=2, steps=2, batch_size=4, n_boot=50)


def discs(n: int, seed: int, size: int = 32) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bright discs (radius 4-9 px) on dark noise: an easy task with exact masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    pairs = []
    for _ in range(n):
        r = rng.uniform(4, 9)
        cy, cx = rng.uniform(r, size - r, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        image = rng.integers(0, 90, (size, size, 3))
        image[mask] += 120
        pairs.append((image.astype(np.uint8), mask))
    return pairs


def phantoms(n: int, start: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(p.image), p.mask)
            for p in (render_phantom(LABELS[i % 2], start + i, (64, 64)) for i in range(n))]


# --- metrics -------------------------------------------------------------------------------------

def test_dice_iou_hand_computed_and_empty_conventions():
    truth = np.zeros((4, 4), bool)
    truth[0, :4] = True                      # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[0, :2] = pred[1, :2] = True         # 4 pixels, 2 of them on the truth
    empty = np.zeros((4, 4), bool)
    dice, iou = dice_iou(np.stack([pred, truth, empty, empty, truth]), np.stack([truth, truth, empty, truth, empty]))
    # overlap 2: Dice 2*2/(4+4) = 0.5, IoU 2/6; identical 1/1; both empty 1/1; one empty 0/0 either way
    np.testing.assert_allclose(dice, [0.5, 1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(iou, [1 / 3, 1.0, 1.0, 0.0, 0.0])
    single = dice_iou(pred, truth)
    assert single[0].shape == (1,) and single[0][0] == pytest.approx(0.5)


def test_dice_iou_rejects_non_bool_or_mismatched():
    with pytest.raises(SegmentationError, match="bool arrays of the same shape"):
        dice_iou(np.zeros((4, 4)), np.zeros((4, 4), bool))
    with pytest.raises(SegmentationError, match=r"\(4, 4\).*\(4, 5\)"):
        dice_iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_bootstrap_ci_contains_mean_and_is_seeded():
    values = np.random.default_rng(0).uniform(0.4, 0.9, 30)
    mean, low, high = mean_ci(values, n_boot=500, seed=3)
    assert mean == pytest.approx(values.mean()) and low < mean < high
    assert mean_ci(values, n_boot=500, seed=3) == (mean, low, high)
    assert mean_ci(np.full(5, 0.7)) == (0.7, 0.7, 0.7)  # degenerate: no spread, no interval


# --- network and training ------------------------------------------------------------------------

def test_unet_shape_and_parameter_count():
    model = UNet(width=8, depth=2)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 32, 32)
    assert parameter_count(model) == 29_625
    assert parameter_count(UNet()) == 482_737


def test_tiny_unet_learns_discs_on_held_out_images():
    settings = SegmentationSettings(size=32, width=8, depth=2, steps=80, n_boot=200)
    model = train_unet(SegmentationSet.from_pairs(discs(24, seed=0), 32), settings, seed=0)
    result = evaluate_unet(model, SegmentationSet.from_pairs(discs(16, seed=1), 32), settings)
    assert result["dice"] > 0.8, result["dice"]
    assert result["dice_low"] <= result["dice"] <= result["dice_high"]
    assert result["iou"] <= result["dice"] and result["n_test"] == 16


def test_training_is_reproducible_for_a_seed():
    train = SegmentationSet.from_pairs(discs(8, seed=0), 32)
    state = [train_unet(train, TINY, seed=s).state_dict() for s in (5, 5, 6)]
    assert all(torch.equal(state[0][k], state[1][k]) for k in state[0])
    assert not all(torch.equal(state[0][k], state[2][k]) for k in state[0])


# --- splits and subsets --------------------------------------------------------------------------

def test_real_subsets_are_nested_and_skip_large_sizes():
    subsets, notes = real_subsets(40, (16, 32, 64, "all"), seed=1)
    assert list(subsets) == [16, 32, 40]
    assert np.array_equal(subsets[32][:16], subsets[16]) and np.array_equal(subsets[40][:32], subsets[32])
    assert sorted(subsets[40]) == list(range(40))
    assert notes == ["size 64 skipped: only 40 real training pairs"]
    other, _ = real_subsets(40, (16,), seed=1, repeat=1)
    assert not np.array_equal(other[16], subsets[16])  # each repeat draws its own subsets
    _, notes = real_subsets(32, (32, "all"))
    assert "same as an earlier size" in notes[0]
    with pytest.raises(SegmentationError, match="sizes: got 0"):
        real_subsets(10, (0,))


def test_split_test_is_fixed_and_disjoint():
    train, test = split_test(20, 0.25, seed=0)
    assert len(test) == 5 and not set(train) & set(test) and len(train) + len(test) == 20
    assert np.array_equal(split_test(20, 0.25, seed=0)[1], test)
    with pytest.raises(SegmentationError, match="test_fraction: got 1.5"):
        split_test(20, 1.5)
    with pytest.raises(SegmentationError, match="at least 3"):
        split_test(2, 0.25)


# --- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("pair", "message"), [
    ((np.zeros((8, 8, 3)), np.ones((8, 8), bool)), "uint8 array of shape"),
    ((np.zeros((8, 8), np.uint8), np.ones((8, 8), bool)), "uint8 array of shape"),
    ((np.zeros((8, 8, 3), np.uint8), np.ones((8, 8), np.uint8)), "bool array"),
    ((np.zeros((8, 8, 3), np.uint8), np.ones((8, 9), bool)), r"image's \(H, W\)"),
    ((np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool)), "empty mask"),
    ("not a pair", "an \\(image, mask\\) pair"),
])
def test_set_validation_names_the_problem(pair, message):
    with pytest.raises(SegmentationError, match=message):
        SegmentationSet.from_pairs([pair], 8, "real_pairs")


def test_set_validation_empty_list_and_vanishing_mask():
    with pytest.raises(SegmentationError, match="non-empty list"):
        SegmentationSet.from_pairs([], 32)
    mask = np.zeros((64, 64), bool)
    mask[0, 1] = True
    with pytest.raises(SegmentationError, match=r"real_pairs\[0\].*vanishes at the working size 8"):
        SegmentationSet.from_pairs([(np.zeros((64, 64, 3), np.uint8), mask)], 8, "real_pairs")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"size": 30, "depth": 2}, "multiple of 4"), ({"norm": "layer"}, "batch, group"),
    ({"steps": 0}, "steps: got 0"), ({"threshold": 1.0}, "threshold"), ({"epochs": -1}, "epochs"),
])
def test_settings_validation(kwargs, message):
    with pytest.raises(SegmentationError, match=message):
        SegmentationSettings(**kwargs)


def test_experiment_argument_errors():
    real = discs(6, seed=0)
    with pytest.raises(SegmentationError, match="synthetic_pairs: got none"):
        downstream_segmentation(real, (), settings=TINY)
    with pytest.raises(SegmentationError, match="regimes: got"):
        downstream_segmentation(real, discs(2, 1), regimes=("fake",), settings=TINY)
    with pytest.raises(SegmentationError, match="repeats: got 0"):
        downstream_segmentation(real, discs(2, 1), repeats=0, settings=TINY)


# --- the experiment ------------------------------------------------------------------------------

def test_downstream_rows_summary_and_reproducibility():
    real, synthetic, cross = discs(14, 0), discs(4, 1), discs(3, 2)
    kwargs = {"sizes": (2, "all", 64), "repeats": 2, "seed": 1, "settings": TINY, "cross_pairs": cross}
    report = downstream_segmentation(real, synthetic, **kwargs)
    assert (report.n_real_train, report.n_test, report.n_synthetic, report.n_cross) == (10, 4, 4, 3)
    assert report.notes == ["size 64 skipped: only 10 real training pairs"]
    keys = [(r["regime"], r["n_real"], r["n_synthetic"]) for r in report.rows if r["repeat"] == 0]
    assert keys == [("real", 2, 0), ("real", 10, 0), ("synthetic", 0, 4), ("real+synthetic", 2, 4),
                    ("real+synthetic", 10, 4)]
    assert len(report.rows) == 10 and len(report.summary) == 5
    for row in report.rows + report.summary:
        assert row["dice_low"] <= row["dice"] <= row["dice_high"] and row["n_test"] == 4
        assert row["cross_iou_low"] <= row["cross_iou"] <= row["cross_iou_high"]
    first = report.summary[0]
    assert first["repeats"] == 2 and first["dice_sd"] is not None
    assert first["dice"] == pytest.approx(np.mean([r["dice"] for r in report.rows[:: 5]]))
    json.dumps(report.to_dict())
    again = downstream_segmentation(real, synthetic, **kwargs)
    drop = ("seconds", "train_seconds")
    assert [{k: v for k, v in r.items() if k not in drop} for r in again.rows] == \
           [{k: v for k, v in r.items() if k not in drop} for r in report.rows]


def test_explicit_test_set_and_synthetic_cap():
    report = downstream_segmentation(discs(5, 0), discs(6, 1), test_pairs=discs(3, 2), sizes=("all",),
                                     regimes=("real+synthetic",), settings=SegmentationSettings(
                                         size=32, width=8, depth=2, steps=2, n_boot=20, max_synthetic=2))
    assert (report.test_source, report.n_real_train, report.n_test, report.n_synthetic) == ("explicit", 5, 3, 2)
    assert [(r["n_real"], r["n_synthetic"]) for r in report.rows] == [(5, 2)]


# --- the command line ----------------------------------------------------------------------------

def write_pairs(root: Path, pairs: list[tuple[np.ndarray, np.ndarray]]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (image, mask) in enumerate(pairs):
        Image.fromarray(image).save(root / "images" / f"frame-{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"frame-{i:03d}.png")
    return root


def test_cli_json_in_a_subprocess(tmp_path):
    real = write_pairs(tmp_path / "real", phantoms(10, 0))
    synthetic = write_pairs(tmp_path / "synthetic", phantoms(4, 1000))
    command = [sys.executable, "-m", "evaluation.segmentation", "--real", str(real), "--synthetic", str(synthetic),
               "--sizes", "4", "all", "--steps", "3", "--size", "32", "--width", "8", "--depth", "2",
               "--n-boot", "50", "--device", "cpu", "--json"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["n_real_train"], report["n_test"], report["n_synthetic"]) == (7, 3, 4)
    assert [(r["regime"], r["n_real"]) for r in report["summary"]] == [
        ("real", 4), ("real", 7), ("synthetic", 0), ("real+synthetic", 4), ("real+synthetic", 7)]
    assert report["settings"]["size"] == 32 and report["device"] == "cpu"


def test_cli_reports_missing_partner_and_non_binary_masks(tmp_path, capsys):
    real = write_pairs(tmp_path / "real", discs(3, 0))
    (real / "masks" / "frame-001.png").unlink()
    assert seg.main(["--real", str(real), "--regimes", "real", "--device", "cpu"]) == 2
    assert "without a mask of the same stem, e.g. frame-001" in capsys.readouterr().err
    grey = write_pairs(tmp_path / "grey", discs(3, 0))
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(grey / "masks" / "frame-000.png")
    assert seg.main(["--real", str(grey), "--regimes", "real", "--device", "cpu"]) == 2
    assert "binary masks" in capsys.readouterr().err
