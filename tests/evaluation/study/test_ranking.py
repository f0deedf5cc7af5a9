"""Bradley-Terry ranking: choix against an independent scipy fit, recovery of known strengths, ties."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize

from evaluation.study.ranking import DEFAULT_ALPHA, RankingError, bradley_terry, prior_note, rank_checkpoints

# 4 players; player 3 never loses, so plain maximum likelihood would send it to infinity.
WINS = [(0, 1), (1, 0), (1, 0), (0, 2), (2, 0), (2, 1), (1, 2), (1, 2), (3, 0), (3, 1), (3, 2), (0, 1), (2, 1)]


def scipy_fit(wins, n_players, alpha):
    """Independent MAP fit of the objective that bradley_terry documents."""
    w = np.array([p[0] for p in wins])
    lo = np.array([p[1] for p in wins])

    def neg_log_posterior(theta):
        fit = np.logaddexp(0.0, theta[lo] - theta[w]).sum()
        prior = alpha * n_players * (np.exp(theta) - theta).sum()
        return fit + prior

    return minimize(neg_log_posterior, np.zeros(n_players), method="BFGS", options={"gtol": 1e-10}).x


def simulate(truth: dict[str, float], n_raters: int, trials: int, seed: int) -> pd.DataFrame:
    """Pair trials where checkpoint c fools a rater with probability 1 / (1 + exp(-truth[c]))."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(n_raters):
        for name, s in truth.items():
            fooled = rng.random(trials) < 1 / (1 + math.exp(-s))
            rows += [{"rater": f"reader-{r}", "checkpoint": name, "fooled": bool(f)} for f in fooled]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("alpha", [DEFAULT_ALPHA, 0.5])
def test_choix_equals_an_independent_scipy_fit(alpha):
    ours = bradley_terry(WINS, 4, alpha=alpha)
    ref = scipy_fit(WINS, 4, alpha)
    # Only differences are identified by the likelihood; compare strengths relative to player 0.
    np.testing.assert_allclose(ours - ours[0], ref - ref[0], atol=1e-5)
    assert ours.mean() == pytest.approx(0.0, abs=1e-9)
    assert np.isfinite(ours).all() and ours.argmax() == 3


def test_recovers_known_strengths_and_cis_cover_them():
    truth = {"ddpm-10k": -1.0, "ddpm-50k": 0.0, "sd-lora": 1.0}
    rows = rank_checkpoints(simulate(truth, n_raters=15, trials=30, seed=0), n_boot=200, seed=0)
    assert [r["checkpoint"] for r in rows] == ["sd-lora", "ddpm-50k", "ddpm-10k"]
    assert [r["rank_label"] for r in rows] == ["1", "2", "3"]
    for r in rows:
        assert r["n_trials"] == 450
        assert r["ci_low"] <= truth[r["checkpoint"]] <= r["ci_high"]
        assert r["ci_low"] <= r["strength"] <= r["ci_high"]
        assert r["p_fool"] == pytest.approx(1 / (1 + math.exp(-r["strength"])))
        assert r["p_fool"] == pytest.approx(r["fooled"] / r["n_trials"], abs=0.01)
        assert r["note"] == ""


def test_ci_coverage_over_repeated_studies_is_near_nominal():
    # The rater-cluster percentile bootstrap with 15 raters covers ~93 % (measured over 200 studies);
    # 30 seeded studies here keep the test fast.
    truth = {"a": -1.0, "b": 0.0, "c": 1.0}
    studies = [rank_checkpoints(simulate(truth, 15, 30, seed=100 + s), n_boot=100, seed=s) for s in range(30)]
    hits = [r["ci_low"] <= truth[r["checkpoint"]] <= r["ci_high"] for rows in studies for r in rows]
    assert np.mean(hits) >= 0.85


def test_equal_checkpoints_overlap_and_share_a_rank_label():
    truth = {"a": 0.5, "b": 0.5, "c": -2.0}
    rows = {r["checkpoint"]: r for r in rank_checkpoints(simulate(truth, 10, 30, seed=1), n_boot=200, seed=0)}
    a, b = rows["a"], rows["b"]
    assert a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]
    assert a["rank_label"] == b["rank_label"] == "1-2"
    assert {a["rank"], b["rank"]} == {1, 2}
    assert rows["c"]["rank_label"] == "3"


def test_reproducible_with_the_same_seed():
    df = simulate({"a": 0.2, "b": -0.3}, 6, 20, seed=2)
    assert rank_checkpoints(df, n_boot=100, seed=5) == rank_checkpoints(df, n_boot=100, seed=5)
    other = rank_checkpoints(df, n_boot=100, seed=6)
    assert other[0]["ci_low"] != rank_checkpoints(df, n_boot=100, seed=5)[0]["ci_low"]


def test_one_rater_falls_back_to_trial_resampling_and_notes_it():
    df = simulate({"a": 0.0, "b": 1.0}, 1, 40, seed=3)
    rows = rank_checkpoints(df, n_boot=100)
    for r in rows:
        assert "one rater: CI resamples trials" in r["note"]
        assert r["ci_low"] < r["strength"] < r["ci_high"]


def test_never_fooled_stays_finite_with_a_note():
    df = pd.DataFrame({"rater": ["x", "y"] * 3, "checkpoint": ["bad"] * 6, "fooled": [False] * 6})
    (row,) = rank_checkpoints(df, n_boot=0)
    assert math.isfinite(row["strength"]) and row["strength"] < 0
    assert row["ci_low"] is None and row["rank_label"] == "1"
    assert "never fooled" in row["note"] and "n too small to conclude (6 trials)" in row["note"]


def test_fooled_half_the_time_is_chance_level():
    df = pd.DataFrame({"rater": [f"r{i}" for i in range(40)], "checkpoint": "c", "fooled": [True, False] * 20})
    (row,) = rank_checkpoints(df, n_boot=0)
    assert row["strength"] == pytest.approx(0.0, abs=1e-6) and row["p_fool"] == pytest.approx(0.5)


@pytest.mark.parametrize("df, match", [
    (pd.DataFrame({"rater": ["a"], "checkpoint": ["c"]}), r"missing column\(s\) \['fooled'\]"),
    (pd.DataFrame({"rater": [], "checkpoint": [], "fooled": []}), "no trials"),
    (pd.DataFrame({"rater": ["a"], "checkpoint": ["c"], "fooled": ["yes"]}),
     r"'fooled' holds \['yes'\]; allowed values are True and False"),
    (pd.DataFrame({"rater": ["a"], "checkpoint": [None], "fooled": [True]}), "'checkpoint' has 1 missing"),
])
def test_bad_trials_messages(df, match):
    with pytest.raises(RankingError, match=match):
        rank_checkpoints(df)


def test_bad_bradley_terry_arguments():
    with pytest.raises(RankingError, match="wins is empty"):
        bradley_terry([], 3)
    with pytest.raises(RankingError, match="player index 5; allowed indices are 0 to 2"):
        bradley_terry([(0, 5)], 3)
    with pytest.raises(RankingError, match="with itself"):
        bradley_terry([(1, 1)], 3)
    with pytest.raises(RankingError, match="alpha=0; use alpha > 0"):
        bradley_terry([(0, 1)], 2, alpha=0)
    with pytest.raises(RankingError, match="n_players=1"):
        bradley_terry([(0, 0)], 1)
    with pytest.raises(RankingError, match="n_boot=-1"):
        rank_checkpoints(pd.DataFrame({"rater": ["a"], "checkpoint": ["c"], "fooled": [True]}), n_boot=-1)


def test_identical_checkpoints_share_their_rank_even_without_interval_width():
    rows = [{"rater": f"r{r}", "checkpoint": name, "fooled": False} for r in range(3) for name in ("a", "b") for _ in range(4)]
    ranked = rank_checkpoints(pd.DataFrame(rows), n_boot=50, seed=0)
    assert {r["rank_label"] for r in ranked} == {"1-2"}


def _records(records: dict[str, list[int]]) -> pd.DataFrame:
    """``{checkpoint: fooled trials per rater}``, each rater giving 2 trials."""
    rows = []
    for name, per_rater in records.items():
        for r, fooled in enumerate(per_rater):
            rows += [{"rater": f"r{r}", "checkpoint": name, "fooled": i < fooled} for i in range(2)]
    return pd.DataFrame(rows)


def test_identical_records_share_a_rank_from_the_data_not_from_noise():
    # a fools 6 of 10; b, c, d fool 0 of 10 each: identical records, so identical strengths and the
    # shared rank 2 (places 2-4), whatever the solver's last digit would say.
    df = _records({"a": [2, 1, 1, 1, 1], "b": [0] * 5, "c": [0] * 5, "d": [0] * 5})
    rows = rank_checkpoints(df, n_boot=100, seed=0)
    assert [r["checkpoint"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["rank"] for r in rows] == [1, 2, 2, 2]
    assert [r["rank_label"] for r in rows] == ["1", "2-4", "2-4", "2-4"]
    assert rows[1]["strength"] == rows[2]["strength"] == rows[3]["strength"]


def test_interval_bounds_set_by_the_prior_are_flagged():
    # b: 0 of 10, every resample never fools -> both bounds are the prior's value.
    # c: 1 fooled trial from one of 5 raters; a resample misses that rater with probability
    #    (4/5)^5 = 0.33 > 2.5 %, so its lower bound is prior-bound; it is never always fooled.
    # a: 6 of 10 spread over raters: bounds backed by data.
    df = _records({"a": [2, 1, 1, 1, 1], "b": [0] * 5, "c": [1, 0, 0, 0, 0]})
    rows = {r["checkpoint"]: r for r in rank_checkpoints(df, n_boot=200, seed=0)}
    assert (rows["b"]["ci_low_prior_bound"], rows["b"]["ci_high_prior_bound"]) == (True, True)
    assert (rows["c"]["ci_low_prior_bound"], rows["c"]["ci_high_prior_bound"]) == (True, False)
    assert (rows["a"]["ci_low_prior_bound"], rows["a"]["ci_high_prior_bound"]) == (False, False)
    assert "lower CI bound prior-bound" in rows["c"]["note"] and "prior-bound" not in rows["a"]["note"]
    note = prior_note(list(rows.values()))
    assert "alpha=0.01" in note and "Gamma(shape = rate = alpha x 4 players)" in note
    assert "1 checkpoint(s) never or always fooled" in note and "move by at most" in note
