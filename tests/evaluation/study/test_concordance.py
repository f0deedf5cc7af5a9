"""Expert vs metric: per-checkpoint outcomes, exact small-n p-values, bootstrap intervals, image links."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from evaluation.study.concordance import (
    OutcomeData,
    _spearman,
    adjust_for_multiplicity,
    checkpoint_outcomes,
    correlate,
    image_links,
    image_scores,
)
from evaluation.study.outcomes import ratings_frame
from tests.evaluation.study.analysis_rows import image, single


def _study(fooling: list[float], raters: int = 4, per_checkpoint: int = 10) -> pd.DataFrame:
    """Checkpoint k fools raters on a share fooling[k] of its images; real images are judged real."""
    rows = []
    for k, share in enumerate(fooling):
        for i in range(per_checkpoint):
            shown = image(f"c{k}-{i}", "synthetic", "AD" if i % 2 else "NonAD", f"ckpt-{k}", 100 * (k + 1))
            for r in range(raters):
                rows.append(single(f"r{r}", shown, "real" if i < share * per_checkpoint else "synthetic",
                                   realism=1 + k, pathology=shown["image_label"] if i % 3 else "AD"))
    for i in range(per_checkpoint):
        shown = image(f"real-{i}", "real", "AD" if i % 2 else "NonAD")
        rows += [single(f"r{r}", shown, "real", pathology=shown["image_label"]) for r in range(raters)]
    return ratings_frame(rows)


def test_checkpoint_outcomes_are_the_plain_shares():
    frame = _study([0.1, 0.4, 0.7])
    assert checkpoint_outcomes(frame, "fooling_rate") == pytest.approx({"ckpt-0": 0.1, "ckpt-1": 0.4, "ckpt-2": 0.7})
    assert checkpoint_outcomes(frame, "realism_mean") == pytest.approx({"ckpt-0": 1, "ckpt-1": 2, "ckpt-2": 3})
    gap = checkpoint_outcomes(frame, "clinical_gap")
    accuracy = checkpoint_outcomes(frame, "pathology_accuracy")
    assert gap["ckpt-0"] == pytest.approx(1.0 - accuracy["ckpt-0"])
    with pytest.raises(ValueError, match="outcome must be one of fooling_rate"):
        checkpoint_outcomes(frame, "speed")


def test_bootstrap_weights_resample_raters_and_images():
    data = OutcomeData(_study([0.1, 0.4, 0.7]), "fooling_rate")
    # Counting one image of ckpt-0 (judged real) three times and dropping the rest of that checkpoint.
    weights = np.zeros(len(data.images))
    weights[list(data.images).index("c0-0")] = 3
    assert data.per_checkpoint(image_weight=weights) == {"ckpt-0": 1.0}
    draws = data.bootstrap(50, seed=1)
    assert draws.shape == (50, 3) and draws.equals(data.bootstrap(50, seed=1))


def test_exact_spearman_p_matches_a_plain_permutation_count():
    x = np.array([3.0, 1.0, 4.0, 1.5, 5.0, 9.0])
    y = np.array([2.0, 7.0, 1.0, 8.0, 2.5, 2.0])  # with a tie
    observed = stats.spearmanr(x, y).statistic
    every = [stats.spearmanr(x, y[list(order)]).statistic for order in itertools.permutations(range(6))]
    reference = np.mean(np.abs(every) >= abs(observed) - 1e-9)
    rho, p = _spearman(x, y)
    assert rho == pytest.approx(observed) and p == pytest.approx(reference)


def test_five_checkpoints_in_perfect_order_are_conclusive_four_are_not():
    frame = _study([0.1, 0.3, 0.5, 0.7, 0.9])
    data = OutcomeData(frame, "fooling_rate")
    fid = {f"ckpt-{k}": 100.0 - 10 * k for k in range(5)}
    result = correlate(fid, data, data.bootstrap(100, seed=0))
    assert result["spearman"] == pytest.approx(-1.0) and result["kendall"] == pytest.approx(-1.0)
    assert result["spearman_p"] == pytest.approx(2 / 120)  # exact: 2 of 5! orderings are this extreme
    assert result["conclusive"] and result["spearman_low"] <= -0.5
    assert result["spearman_low"] <= result["spearman"] <= result["spearman_high"]

    four = {name: value for name, value in fid.items() if name != "ckpt-4"}
    small = correlate(four, data, data.bootstrap(100, seed=0))
    assert small["spearman"] == pytest.approx(-1.0) and not small["conclusive"]
    assert "too few to conclude anything" in small["note"] and "0.083" in small["note"]


def test_too_few_or_constant_checkpoints_give_a_note_not_a_number():
    data = OutcomeData(_study([0.2, 0.6]), "fooling_rate")
    result = correlate({"ckpt-0": 1.0, "ckpt-1": 2.0}, data)
    assert result["spearman"] is None and "at least 3 are needed" in result["note"]
    flat = correlate({"ckpt-0": 1.0, "ckpt-1": 1.0, "ckpt-2": 1.0}, OutcomeData(_study([0.2, 0.4, 0.6]), "fooling_rate"))
    assert flat["spearman"] is None and "same for every checkpoint" in flat["note"]


def test_image_scores_nearest_real_and_label_fidelity():
    rng = np.random.default_rng(0)
    ad, non = rng.normal(3, 1, (20, 8)), rng.normal(-3, 1, (20, 8))
    real = np.vstack([ad, non])
    labels = ["AD"] * 20 + ["NonAD"] * 20
    fake = np.vstack([ad[:1], rng.normal(3, 1, (1, 8))])
    scores = image_scores(real, labels, fake, ["AD", "NonAD"])
    assert scores["nearest_real_distance"][0] == pytest.approx(0.0, abs=1e-9)
    assert scores["label_fidelity_score"][0] > 0.9 and scores["label_fidelity_score"][1] < 0.1


def test_image_links_need_enough_rated_images():
    frame = _study([0.2, 0.5, 0.8], raters=3, per_checkpoint=6)
    shas = frame.loc[frame["image_source"] == "synthetic", "image_sha256"].unique()
    # Distance grows with the image's index, as the judged-real share falls with it.
    scores = pd.DataFrame({"nearest_real_distance": [int(s.split("-")[1]) for s in shas]}, index=shas)
    per_image, links = image_links(frame, scores, min_ratings=3)
    assert len(per_image) == 18 and set(per_image["n_ratings"]) == {3}
    assert links[0]["spearman"] < -0.5 and links[0]["low"] <= links[0]["spearman"] <= links[0]["high"]
    _, too_few = image_links(frame, scores, min_ratings=4)
    assert too_few[0]["spearman"] is None and "too few" in too_few[0]["note"]


def _tested(metric, outcome, p, outcome_values):
    points = [(f"c{i}", float(i), v) for i, v in enumerate(outcome_values)]
    return {"metric": metric, "outcome": outcome, "spearman_p": p, "conclusive": True, "note": "", "points": points}


def test_holm_counts_mirrored_outcomes_once():
    # pathology_accuracy 0.9, 0.8, 0.7, 0.6, 0.5 and clinical_gap = 0.95 - accuracy (shared real accuracy):
    # reversed ranks, the same |rho| and p: one test. With kid vs fooling_rate that makes 2 distinct tests.
    # Holm over p = (0.01, 0.02): 0.01 * 2 = 0.02, max(0.02, 0.02 * 1) = 0.02 -> both 0.02.
    # (Counting the mirror again, 3 tests: 0.01 * 3 = 0.03, max(0.03, 0.01 * 2), max(0.03, 0.02) -> 0.03.)
    accuracy = [0.9, 0.8, 0.7, 0.6, 0.5]
    rows = adjust_for_multiplicity([
        _tested("fid", "pathology_accuracy", 0.01, accuracy),
        _tested("fid", "clinical_gap", 0.01, [0.95 - a for a in accuracy]),
        _tested("kid", "fooling_rate", 0.02, [0.1, 0.3, 0.2, 0.5, 0.4])])
    assert [r["spearman_p_holm"] for r in rows] == pytest.approx([0.02, 0.02, 0.02])
    assert "same test as pathology_accuracy" in rows[1]["note"] and "same test" not in rows[0]["note"]
    # Not mirrored (another ordering): a test of its own, and Holm counts 3.
    rows = adjust_for_multiplicity([
        _tested("fid", "pathology_accuracy", 0.01, accuracy),
        _tested("fid", "clinical_gap", 0.01, [0.1, 0.3, 0.2, 0.5, 0.4]),
        _tested("kid", "fooling_rate", 0.02, [0.1, 0.3, 0.2, 0.5, 0.4])])
    assert [r["spearman_p_holm"] for r in rows] == pytest.approx([0.03, 0.03, 0.03])
    # Outcomes that only happen to rank alike (fooling rate, realism) are separate tests: 3 again.
    rows = adjust_for_multiplicity([
        _tested("fid", "fooling_rate", 0.01, accuracy), _tested("fid", "realism_mean", 0.01, accuracy),
        _tested("kid", "fooling_rate", 0.02, [0.1, 0.3, 0.2, 0.5, 0.4])])
    assert [r["spearman_p_holm"] for r in rows] == pytest.approx([0.03, 0.03, 0.03])
