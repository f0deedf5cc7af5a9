"""Expert outcomes from tidy ratings: known intervals and tests, strata, repeats, bad input."""

from __future__ import annotations

import pytest
from scipy import stats

from evaluation.study.outcomes import (
    AnalysisError,
    attention_frame,
    clinical_gap,
    item_ratings,
    outcome_table,
    ratings_frame,
    repeat_pairs,
)
from tests.evaluation.study.analysis_rows import image, pair, single

REAL = [image(f"r{i}", "real", "AD" if i % 2 else "NonAD") for i in range(10)]
SYN_A = [image(f"a{i}", "synthetic", "AD" if i % 2 else "NonAD", "ckpt-a", 100) for i in range(10)]
SYN_B = [image(f"b{i}", "synthetic", "AD" if i % 2 else "NonAD", "ckpt-b", 200) for i in range(10)]


def _row(rows, group, scope="pooled", stratum="all"):
    return next(r for r in rows if r["group"] == group and r["scope"] == scope and r["stratum"] == stratum)


def test_single_mode_fooling_rate_has_the_wilson_interval():
    rows = [single("r1", shown, "real" if i < 3 else "synthetic") for i, shown in enumerate(SYN_A)]
    rows += [single("r1", shown, "real" if i < 8 else "synthetic") for i, shown in enumerate(REAL)]
    table = outcome_table(ratings_frame(rows))
    synthetic, real = _row(table, "ckpt-a"), _row(table, "real")
    assert synthetic["judged_real"] == pytest.approx(0.3)
    # Wilson 95 % for 3 of 10: (0.1078, 0.6032); for 8 of 10: (0.4902, 0.9433).
    assert (synthetic["judged_real_low"], synthetic["judged_real_high"]) == pytest.approx((0.1078, 0.6032), abs=1e-4)
    assert (real["judged_real_low"], real["judged_real_high"]) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert synthetic["n_ratings"] == 10 and synthetic["n_images"] == 10 and synthetic["n_raters"] == 1
    assert synthetic["accuracy_2afc"] is None
    assert [r["group"] for r in table if r["scope"] == "pooled"] == ["real", "ckpt-a"]


def test_pair_mode_accuracy_has_the_exact_interval_and_binomial_test():
    rows = []
    for i in range(20):
        side = "left" if i % 2 else "right"
        found = i < 15
        picked = side if found else ("right" if side == "left" else "left")
        rows += pair("r1", REAL[i % 10], SYN_B[i % 10], picked, synthetic_side=side)
    table = outcome_table(ratings_frame(rows))
    row = _row(table, "ckpt-b")
    reference = stats.binomtest(15, 20, 0.5)
    interval = reference.proportion_ci(method="exact")
    assert row["accuracy_2afc"] == pytest.approx(0.75)
    assert (row["accuracy_low"], row["accuracy_high"]) == pytest.approx((interval.low, interval.high))
    assert row["p_vs_chance"] == pytest.approx(0.04139, abs=1e-4)  # two-sided exact binomial, 15 of 20
    assert (row["accuracy_low"], row["accuracy_high"]) == pytest.approx((0.5090, 0.9134), abs=1e-4)  # Clopper-Pearson
    assert row["n_ratings"] == 20
    # The real images of the pairs get no 2AFC accuracy of their own.
    assert _row(table, "real")["accuracy_2afc"] is None


def test_confidence_based_pathology_auc_and_cannot_tell():
    rows = [single("r1", shown, "synthetic", pathology=shown["image_label"], confidence=1 + i % 5)
            for i, shown in enumerate(SYN_A)]
    rows.append(single("r2", SYN_A[0], "synthetic", pathology="cannot tell"))
    row = _row(outcome_table(ratings_frame(rows)), "ckpt-a")
    # The "cannot tell" (on NonAD image a0) scores 0: above every NonAD call, below every AD call.
    assert row["pathology_auc"] == pytest.approx(1.0) and row["pathology_auc_called_only"] == pytest.approx(1.0)
    # The rule counts it as not correct (10 of 11); the other reading leaves it out (10 of 10).
    assert row["pathology_accuracy"] == pytest.approx(10 / 11) and row["pathology_accuracy_called_only"] == 1.0
    assert row["pathology_called"] == 10 and row["pathology_cannot_tell"] == 1
    assert "1 'cannot tell' counted as not correct; left out, the accuracy is 1.000" in row["note"]


def _called(shown: dict, right: bool) -> str:
    return shown["image_label"] if right else ("NonAD" if shown["image_label"] == "AD" else "AD")


def test_clinical_gap_uses_newcombes_hybrid_score_interval():
    # Newcombe (1998), Stat Med 17:873-890, Table II example (a): 56/70 vs 48/80, difference 0.1833,
    # method 10 (hybrid score) interval 0.0524 to 0.3339.
    rows = [single("r1", REAL[i % 10], "real", pathology=_called(REAL[i % 10], i < 56)) for i in range(70)]
    rows += [single("r1", SYN_A[i % 10], "real", pathology=_called(SYN_A[i % 10], i < 48)) for i in range(80)]
    gap = clinical_gap(ratings_frame(rows))[0]
    assert gap["gap"] == pytest.approx(56 / 70 - 48 / 80)
    assert (gap["gap_low"], gap["gap_high"]) == pytest.approx((0.0524, 0.3339), abs=1e-4)


def test_strata_split_by_rater_profile_and_unknown_stratum_is_refused():
    rows = [single("senior", shown, "synthetic", rater_years_practice=20) for shown in SYN_A]
    rows += [single("novice", shown, "real", rater_years_practice=1, rater_specialty="endoscopy nurse") for shown in SYN_A]
    frame = ratings_frame(rows)
    by_experience = outcome_table(frame, "experience")
    assert _row(by_experience, "ckpt-a", stratum=">=15 years")["judged_real"] == 0.0
    assert _row(by_experience, "ckpt-a", stratum="<5 years")["judged_real"] == 1.0
    assert {r["stratum"] for r in outcome_table(frame, "specialty")} == {"gastroenterology", "endoscopy nurse"}
    with pytest.raises(AnalysisError, match="stratify must be one of none, specialty"):
        outcome_table(frame, "age")


def test_repeats_and_attention_are_kept_out_of_outcomes_and_paired_up():
    rows = [single("r1", SYN_A[0], "real", position=0), single("r1", SYN_A[0], "synthetic", kind="repeat", position=7, repeat_of=0),
            single("r1", image("att", "attention", None), "synthetic", kind="attention", position=3),
            single("r2", image("att", "attention", None), "real", kind="attention", position=3)]
    frame = ratings_frame(rows)
    assert _row(outcome_table(frame), "ckpt-a")["n_ratings"] == 1
    pairs = repeat_pairs(frame, "real_or_synthetic")
    assert pairs.to_dict("records") == [{"rater": "r1", "first": "real", "second": "synthetic"}]
    assert attention_frame(frame).to_dict("records") == [{"rater": "r1", "passed": True}, {"rater": "r2", "passed": False}]


def test_pair_repeats_compare_the_same_image_although_sides_swap():
    rows = pair("r1", REAL[0], SYN_A[0], "left", synthetic_side="left", position=0)
    rows += pair("r1", REAL[0], SYN_A[0], "right", synthetic_side="right", kind="repeat", position=6, repeat_of=0)
    pairs = repeat_pairs(ratings_frame(rows), "judged_real")
    # One comparison per repeated pair (its two rows mirror the same choice), of the same image.
    assert len(pairs) == 1 and (pairs["first"] == pairs["second"]).all()


def test_item_ratings_for_pairs_are_found_or_missed_per_pair():
    rows = pair("r1", REAL[0], SYN_A[0], "left") + pair("r2", REAL[0], SYN_A[0], "right")
    long = item_ratings(ratings_frame(rows), "correct_source")
    assert sorted(long["value"]) == ["found", "missed"] and set(long["item"]) == {"a0|r0"}
    # The same synthetic image against another real partner is another comparison: another item.
    rows += pair("r3", REAL[1], SYN_A[0], "left")
    assert set(item_ratings(ratings_frame(rows), "correct_source")["item"]) == {"a0|r0", "a0|r1"}


def test_bad_exports_are_refused_with_the_reason():
    with pytest.raises(AnalysisError, match="no ratings yet"):
        ratings_frame([])
    with pytest.raises(AnalysisError, match="lacks columns"):
        ratings_frame([{"mode": "single"}])
    mixed = [single("r1", SYN_A[0], "real")] + pair("r1", REAL[0], SYN_A[0], "left")
    with pytest.raises(AnalysisError, match="one study at a time"):
        ratings_frame(mixed)


def test_mask_fit_answers_are_summarised_when_the_study_asked_them():
    rows = [single("r1", shown, "real", mask_fit="fits" if i < 8 else "partly") for i, shown in enumerate(SYN_A)]
    row = _row(outcome_table(ratings_frame(rows)), "ckpt-a")
    assert row["mask_fits"] == pytest.approx(0.8) and row["mask_partly"] == pytest.approx(0.2)
    assert (row["mask_fits_low"], row["mask_fits_high"]) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    plain = _row(outcome_table(ratings_frame([single("r1", SYN_A[0], "real")])), "ckpt-a")
    assert plain["mask_fits"] is None


def test_cluster_bootstrap_interval_widens_when_raters_disagree_systematically():
    # Two raters who always call synthetic images real, two who never do: 40 ratings, fooling rate 0.5.
    rows = [single(rater, shown, "real" if rater in ("a", "b") else "synthetic")
            for rater in ("a", "b", "c", "d") for shown in SYN_A]
    row = _row(outcome_table(ratings_frame(rows), n_boot=300), "ckpt-a")
    wilson = row["judged_real_high"] - row["judged_real_low"]
    cluster = row["judged_real_boot_high"] - row["judged_real_boot_low"]
    assert row["judged_real"] == 0.5 and cluster > 1.5 * wilson
    assert row["judged_real_boot_low"] <= 0.5 <= row["judged_real_boot_high"]


def test_cannot_tell_rule_in_accuracy_and_gap_with_the_other_reading_beside_it():
    # Real: r1 AD->AD right, r3 AD->AD right, r0 NonAD->NonAD right, r2 NonAD->cannot tell.
    #   rule (cannot tell = not correct): 3/4 = 0.75; called only: 3/3 = 1.0.
    # ckpt-a: a1 AD->AD right, a3 AD->AD right, a0 NonAD->cannot tell, a2 NonAD->cannot tell.
    #   rule: 2/4 = 0.5; called only: 2/2 = 1.0.
    # Gap: rule 0.75 - 0.5 = 0.25; called only 1.0 - 1.0 = 0.0 (the reading changes the conclusion).
    rows = [single("x", REAL[1], "real", pathology="AD"), single("x", REAL[3], "real", pathology="AD"),
            single("x", REAL[0], "real", pathology="NonAD"), single("x", REAL[2], "real", pathology="cannot tell"),
            single("x", SYN_A[1], "real", pathology="AD"), single("x", SYN_A[3], "real", pathology="AD"),
            single("x", SYN_A[0], "real", pathology="cannot tell"), single("x", SYN_A[2], "real", pathology="cannot tell")]
    frame = ratings_frame(rows)
    assert frame["pathology_correct"].tolist() == [1, 1, 1, 0, 1, 1, 0, 0]
    table = outcome_table(frame)
    assert _row(table, "real")["pathology_accuracy"] == 0.75 and _row(table, "real")["pathology_accuracy_called_only"] == 1.0
    assert _row(table, "ckpt-a")["pathology_accuracy"] == 0.5
    (gap,) = clinical_gap(frame)
    assert gap["gap"] == pytest.approx(0.25) and gap["gap_called_only"] == pytest.approx(0.0)
    assert (gap["n_real"], gap["n_synthetic"], gap["n_real_called_only"], gap["n_synthetic_called_only"]) == (4, 4, 3, 2)
    assert "3 'cannot tell' counted as not correct; left out, the gap is 0.000 (here 0.250)" in gap["note"]
    assert "n too small to conclude" in gap["note"]


def test_cannot_tell_is_the_middle_of_the_auc_and_left_out_in_the_other_reading():
    # AD images: AD call at confidence 2 (score +2), cannot tell (score 0).
    # NonAD images: AD call at confidence 1 (score +1, wrong), NonAD at confidence 3 (score -3).
    # Rule AUC over (positive, negative) pairs: (2,1) yes, (2,-3) yes, (0,1) no, (0,-3) yes -> 3/4.
    # Called only: positives {2} beat both negatives -> 1.0.
    rows = [single("x", SYN_A[1], "real", pathology="AD", confidence=2),
            single("x", SYN_A[3], "real", pathology="cannot tell"),
            single("x", SYN_A[0], "real", pathology="AD", confidence=1),
            single("x", SYN_A[2], "real", pathology="NonAD", confidence=3)]
    row = _row(outcome_table(ratings_frame(rows), n_boot=20), "ckpt-a")
    assert row["pathology_auc"] == pytest.approx(0.75) and row["pathology_auc_called_only"] == pytest.approx(1.0)


def test_correct_source_per_mode_and_trial_kind():
    attention = image("att", "attention", None)
    rows = [single("x", SYN_A[0], "synthetic"),                       # normal, synthetic called synthetic: 1
            single("x", REAL[0], "real"),                             # normal, real called real: 1
            single("x", REAL[1], "synthetic"),                        # normal, real called synthetic: 0
            single("x", attention, "synthetic", kind="attention"),    # attention passed: 1
            single("y", attention, "real", kind="attention"),         # attention failed: 0
            single("x", SYN_A[0], "real", kind="repeat", repeat_of=0)]  # repeat, synthetic called real: 0
    assert ratings_frame(rows)["correct_source"].tolist() == [1, 1, 0, 1, 0, 0]
    pairs = (pair("x", REAL[0], SYN_A[0], "left", synthetic_side="left")             # found: 1, 1
             + pair("x", REAL[1], attention, "right", synthetic_side="right", kind="attention")  # passed: 1, 1
             + pair("x", REAL[0], SYN_A[0], "left", synthetic_side="right", kind="repeat"))  # missed: 0, 0
    frame = ratings_frame(pairs)
    assert frame["correct_source"].tolist() == [1, 1, 1, 1, 0, 0]
    # Rows run left, right: the picked side is the one not judged real (the repeat's left is the real image).
    assert frame["judged_real"].tolist() == [0, 1, 1, 0, 0, 1]
