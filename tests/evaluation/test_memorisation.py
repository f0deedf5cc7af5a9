"""Memorisation: copies are caught, fresh samples give about q, distances match scipy, bad input is named."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from evaluation.memorisation import memorisation_report, nearest_training
from evaluation.utility import InvalidFeatures, TooFewSamples

DIM = 16


def draw(n: int, seed: int) -> np.ndarray:
    """Gaussian features around a common offset, like pooled CNN activations (all positive-ish)."""
    return np.random.default_rng(seed).normal(2.0, 1.0, (n, DIM))


@pytest.fixture(scope="module")
def train() -> np.ndarray:
    return draw(300, seed=0)


@pytest.fixture(scope="module")
def heldout() -> np.ndarray:
    return draw(200, seed=1)


def test_distances_match_scipy_cosine(train):
    query = draw(25, seed=2)
    index, distance = nearest_training(train, query)
    reference = cdist(query, train, metric="cosine")
    assert np.array_equal(index, reference.argmin(axis=1))
    assert np.allclose(distance, reference.min(axis=1), atol=1e-10)


def test_copies_of_training_rows_are_caught(train, heldout):
    rows = np.arange(0, 300, 3)
    fake = train[rows] + np.random.default_rng(3).normal(0.0, 1e-3, (len(rows), DIM))
    report = memorisation_report(train, fake, heldout)
    assert report["share_closer"] == 1.0 and report["n_closer"] == len(rows)
    assert report["median_ratio"] < 0.01
    assert np.array_equal(report["fake_nn_index"], rows)
    assert report["share_ci"][0] > 0.9


def test_fresh_samples_give_about_q(train):
    # Large sets: the held-out quantile itself is noisy (about +-0.1 at q=0.2 with 200 held-out rows).
    heldout, fake = draw(1000, seed=11), draw(1000, seed=12)
    for q in (0.05, 0.2):
        report = memorisation_report(train, fake, heldout, q=q)
        assert report["share_closer"] == pytest.approx(q, abs=0.04)
        assert report["median_ratio"] == pytest.approx(1.0, abs=0.05)
        assert report["threshold"] == pytest.approx(np.quantile(report["heldout_nn_distance"], q))


def test_nearest_pairs_are_sorted_closest_first(train, heldout):
    fake = np.vstack([draw(5, seed=5), train[[7, 11]]])
    report = memorisation_report(train, fake, heldout, top_k=3)
    nearest = report["nearest"]
    assert len(nearest) == 3
    assert {(i, j) for i, j, _ in nearest[:2]} == {(5, 7), (6, 11)}
    assert [d for _, _, d in nearest] == sorted(d for _, _, d in nearest)
    assert all(isinstance(i, int) and isinstance(j, int) and isinstance(d, float) for i, j, d in nearest)
    assert len(memorisation_report(train, fake, heldout)["nearest"]) == 7


def test_report_records_sizes_and_method(train, heldout):
    report = memorisation_report(train, draw(10, seed=6), heldout)
    assert (report["n_train"], report["n_fake"], report["n_heldout"]) == (300, 10, 200)
    assert report["distance"] == "cosine" and report["q"] == 0.05
    assert report["fake_nn_distance"].shape == (10,) and report["heldout_nn_distance"].shape == (200,)
    assert "Wilson" in report["ci_method"]


def test_deterministic(train, heldout):
    fake = draw(50, seed=7)
    first, again = memorisation_report(train, fake, heldout), memorisation_report(train, fake, heldout)
    assert first["nearest"] == again["nearest"] and first["share_closer"] == again["share_closer"]


def test_warns_about_leaked_and_scarce_held_out_images(train, caplog):
    with caplog.at_level(logging.WARNING, logger="evaluation.memorisation"):
        memorisation_report(train, draw(5, seed=8), np.vstack([train[:1], draw(4, seed=9)]))
    assert "duplicate a training image" in caplog.text
    assert "coarse 5% quantile" in caplog.text


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((np.ones((5, DIM)), np.ones((3, DIM + 1)), np.ones((4, DIM))), InvalidFeatures,
         f"fake_features has feature dimension {DIM + 1}; expected {DIM}"),
        ((np.ones(DIM), np.ones((3, DIM)), np.ones((4, DIM))), InvalidFeatures, r"train_features has shape \(16,\)"),
        ((np.ones((5, DIM)), np.full((3, DIM), np.nan), np.ones((4, DIM))), InvalidFeatures, "NaN"),
        ((np.ones((5, DIM)), np.zeros((3, DIM)), np.ones((4, DIM))), InvalidFeatures, "all-zero rows"),
        ((np.ones((5, DIM)), np.ones((3, DIM)), np.ones((1, DIM))), TooFewSamples, "heldout_features has 1 row"),
        ((np.ones((5, DIM)), np.ones((3, DIM)), np.ones((0, DIM))), InvalidFeatures, "heldout_features has shape"),
    ],
)
def test_bad_input_is_named(args, error, match):
    with pytest.raises(error, match=match):
        memorisation_report(*args)


@pytest.mark.parametrize(("kwargs", "match"), [({"q": 0.0}, "q=0.0"), ({"q": 1.2}, "q=1.2"),
                                               ({"top_k": 0}, "top_k=0"), ({"confidence": 0}, "confidence=0")])
def test_bad_settings_are_named(train, heldout, kwargs, match):
    with pytest.raises(ValueError, match=match):
        memorisation_report(train, draw(3, seed=10), heldout, **kwargs)
