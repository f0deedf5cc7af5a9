"""Label fidelity and augmentation utility on seeded Gaussian clusters; Wilson and corrected-t intervals."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import stats

from common.labels import UnknownLabel
from evaluation.utility import (
    InvalidFeatures,
    TooFewSamples,
    augmentation_utility,
    corrected_t_interval,
    label_fidelity,
    wilson_interval,
)

DIM = 8


def clusters(per_class: int, seed: int, separation: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """AD around +separation/2 and NonAD around -separation/2 on every axis, unit variance."""
    rng = np.random.default_rng(seed)
    ad = rng.normal(separation / 2 / math.sqrt(DIM), 1.0, (per_class, DIM))
    non_ad = rng.normal(-separation / 2 / math.sqrt(DIM), 1.0, (per_class, DIM))
    return np.vstack([ad, non_ad]), np.array(["AD"] * per_class + ["NonAD"] * per_class)


def swap(labels: np.ndarray) -> np.ndarray:
    return np.where(labels == "AD", "NonAD", "AD")


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [(8, 10, (0.4902, 0.9433)), (5, 10, (0.2366, 0.7634)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)),
     (1, 1, (0.2065, 1.0))],
)
def test_wilson_known_values(successes, n, expected):
    assert wilson_interval(successes, n) == pytest.approx(expected, abs=1e-4)


def test_wilson_narrows_with_lower_confidence_and_rejects_bad_counts():
    low90, high90 = wilson_interval(8, 10, confidence=0.90)
    assert 0.4902 < low90 and high90 < 0.9433
    for args in ((11, 10), (-1, 10), (0, 0)):
        with pytest.raises(ValueError, match=f"successes={args[0]}, n={args[1]}"):
            wilson_interval(*args)


def test_corrected_t_interval_matches_the_formula_and_is_wider_than_naive():
    values = np.array([0.01, -0.02, 0.03, 0.00, 0.02, 0.01])
    mean, (low, high), p_value = corrected_t_interval(values, test_fraction=0.5)
    se = math.sqrt((1 / 6 + 0.5) * values.var(ddof=1))
    t = stats.t.ppf(0.975, df=5)
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx((mean - t * se, mean + t * se))
    assert p_value == pytest.approx(2 * stats.t.sf(abs(mean) / se, df=5))
    naive = stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert high - low > naive.high - naive.low


# --- label fidelity ---------------------------------------------------------------------------

def test_correctly_labelled_synthetic_images_are_recognised():
    real, real_y = clusters(40, seed=0, separation=4.0)
    fake, fake_y = clusters(30, seed=1, separation=4.0)
    result = label_fidelity(real, real_y, fake, fake_y)
    assert result["real_cv"]["balanced_accuracy"] > 0.9 and result["real_cv"]["auc"] > 0.95
    assert result["share"] > 0.9 and result["n"] == 60
    assert set(result["per_label"]) == {"AD", "NonAD"} and result["per_label"]["AD"]["n"] == 30
    assert result["probabilities"].shape == (60,) and (result["probabilities"] > 0.5).mean() == result["share"]
    assert result["ci"] == pytest.approx(wilson_interval(result["n_correct"], 60))
    assert result["n_real"] == {"AD": 40, "NonAD": 40} and result["n_fake"] == {"AD": 30, "NonAD": 30}


def test_swapped_labels_are_caught():
    real, real_y = clusters(40, seed=0, separation=4.0)
    fake, fake_y = clusters(30, seed=1, separation=4.0)
    result = label_fidelity(real, real_y, fake, swap(fake_y))
    assert result["share"] < 0.1 and result["ci"][1] < 0.2


def test_one_label_only_reports_that_label():
    real, real_y = clusters(20, seed=0)
    fake, fake_y = clusters(10, seed=1)
    result = label_fidelity(real, real_y, fake[:10], fake_y[:10])
    assert set(result["per_label"]) == {"AD"}
    assert result["n_fake"] == {"AD": 10, "NonAD": 0}


def test_folds_are_clamped_to_the_smallest_class_with_a_warning(caplog):
    real, real_y = clusters(3, seed=0)
    fake, fake_y = clusters(2, seed=1)
    with caplog.at_level(logging.WARNING, logger="evaluation.utility"):
        result = label_fidelity(real, real_y, fake, fake_y, n_splits=5)
    assert result["real_cv"]["n_splits"] == 3 and len(result["real_cv"]["auc_folds"]) == 3
    assert "clamped from 5 to 3" in caplog.text


def test_untrustworthy_classifier_is_flagged(caplog):
    real, real_y = clusters(30, seed=0, separation=0.0)
    with caplog.at_level(logging.WARNING, logger="evaluation.utility"):
        label_fidelity(real, real_y, *clusters(5, seed=1))
    assert "not trustworthy" in caplog.text


def test_label_fidelity_is_deterministic():
    real, real_y = clusters(15, seed=0, separation=1.5)
    fake, fake_y = clusters(10, seed=1)
    first = label_fidelity(real, real_y, fake, fake_y, seed=3)
    again = label_fidelity(real, real_y, fake, fake_y, seed=3)
    assert first["real_cv"]["auc_folds"] == again["real_cv"]["auc_folds"]
    assert np.array_equal(first["probabilities"], again["probabilities"])


# --- augmentation utility -------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_real():
    """Few, overlapping real images: where extra training data can matter."""
    return clusters(20, seed=10, separation=2.0)


def test_useful_synthetic_images_do_not_hurt(small_real):
    fake, fake_y = clusters(100, seed=11, separation=2.0)
    result = augmentation_utility(*small_real, fake, fake_y, n_repeats=20, seed=0)
    assert result["difference"]["auc"]["mean"] > -0.01
    assert result["difference"]["balanced_accuracy"]["mean"] > -0.01
    assert result["augmented"]["auc"]["mean"] > 0.8


def test_label_swapped_synthetic_images_hurt(small_real):
    fake, fake_y = clusters(100, seed=11, separation=2.0)
    result = augmentation_utility(*small_real, fake, swap(fake_y), n_repeats=20, seed=0)
    difference = result["difference"]
    assert difference["auc"]["mean"] < -0.3 and difference["auc"]["ci"][1] < 0
    assert difference["balanced_accuracy"]["ci"][1] < 0 and difference["auc"]["p_value"] < 0.05
    assert difference["auc"]["ci"][0] >= -1.0  # clipped to the range a difference can take


def test_augmentation_records_design_and_is_deterministic(small_real):
    fake, fake_y = clusters(20, seed=12, separation=2.0)
    first = augmentation_utility(*small_real, fake, fake_y, n_repeats=5, test_size=0.25, seed=7)
    again = augmentation_utility(*small_real, fake, fake_y, n_repeats=5, test_size=0.25, seed=7)
    other = augmentation_utility(*small_real, fake, fake_y, n_repeats=5, test_size=0.25, seed=8)
    assert first["real_only"]["auc"]["per_split"] == again["real_only"]["auc"]["per_split"]
    assert first["real_only"]["auc"]["per_split"] != other["real_only"]["auc"]["per_split"]
    assert len(first["augmented"]["balanced_accuracy"]["per_split"]) == 5
    # Only the 40 real images are split: 10 tested per split, the 40 synthetic ones never.
    assert first["n_test"] == 10 and first["n_real"] == {"AD": 20, "NonAD": 20}
    assert first["n_fake"] == {"AD": 20, "NonAD": 20}
    assert "Nadeau-Bengio" in first["ci_method"]
    paired = np.subtract(first["augmented"]["auc"]["per_split"], first["real_only"]["auc"]["per_split"])
    assert first["difference"]["auc"]["per_split"] == pytest.approx(paired.tolist())


# --- bad input ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good():
    real, real_y = clusters(6, seed=0)
    fake, fake_y = clusters(3, seed=1)
    return real, real_y, fake, fake_y


@pytest.mark.parametrize("measure", [label_fidelity, augmentation_utility])
def test_bad_input_is_named(good, measure):
    real, real_y, fake, fake_y = good
    with pytest.raises(InvalidFeatures, match=f"fake_features has feature dimension {DIM + 1}; expected {DIM}"):
        measure(real, real_y, np.ones((6, DIM + 1)), fake_y)
    with pytest.raises(InvalidFeatures, match="real_labels has 11 labels for 12 feature rows"):
        measure(real, real_y[:-1], fake, fake_y)
    with pytest.raises(InvalidFeatures, match="NaN"):
        measure(np.where(real > 0, np.nan, real), real_y, fake, fake_y)
    with pytest.raises(UnknownLabel, match="'polyp'.*AD, NonAD"):
        measure(real, real_y, fake, np.array(["polyp"] * 6))
    with pytest.raises(TooFewSamples, match=r"\{'AD': 12, 'NonAD': 0\}"):
        measure(real, np.array(["AD"] * 12), fake, fake_y)


def test_augmentation_needs_enough_per_class_for_the_split():
    real, real_y = clusters(6, seed=0)
    fake, fake_y = clusters(3, seed=1)
    with pytest.raises(TooFewSamples, match="test_size=0.1 every class needs at least 10"):
        augmentation_utility(real, real_y, fake, fake_y, test_size=0.1)
    with pytest.raises(ValueError, match="n_repeats=1"):
        augmentation_utility(real, real_y, fake, fake_y, n_repeats=1)
    with pytest.raises(ValueError, match="test_size=1.0"):
        augmentation_utility(real, real_y, fake, fake_y, test_size=1.0)
    with pytest.raises(ValueError, match="confidence=95"):
        augmentation_utility(real, real_y, fake, fake_y, confidence=95)
