"""Agreement statistics against published worked examples and the irrCAC reference implementation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from evaluation.study.agreement import (
    AgreementError,
    UndefinedAgreement,
    agreement_summary,
    fleiss_kappa,
    gwet_ac1,
    krippendorff_alpha,
    percent_agreement,
)
from evaluation.study.consistency import attention_pass_rates, intra_rater

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5 categories.
FLEISS_TABLE = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
CATS5 = [1, 2, 3, 4, 5]

# Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", p. 8: observers A-D x 12 units.
KRIPP_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}

# Gwet (2014) handbook data set (irrCAC.datasets.raw_4raters): 12 units, 4 raters, missing ratings,
# unit 12 has a single rating.
GWET_4RATERS = {
    "Rater1": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "Rater2": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, None],
    "Rater3": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, 3],
    "Rater4": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}
# Paradox: 3 raters x 20 items, "real" holds 93 % of ratings.
PARADOX = {
    "r1": ["synthetic", "real", "real", "synthetic"] + ["real"] * 16,
    "r2": ["real", "synthetic", "real", "real"] + ["real"] * 16,
    "r3": ["real", "real", "synthetic", "synthetic"] + ["real"] * 16,
}
# Strings, 3 raters, varying raters per item, one category never used.
STRINGS = {
    "r1": ["real", "fake", "fake", "real", None, "unsure", "real", "fake"],
    "r2": ["real", "fake", "real", None, "fake", "unsure", "real", None],
    "r3": [None, "fake", "unsure", "real", "fake", "real", "real", "fake"],
}
STRING_CATS = ["real", "fake", "unsure", "unused"]


def wide_to_long(wide: dict[str, list]) -> pd.DataFrame:
    """Rater -> per-item ratings (None = missing) to long form."""
    rows = [{"item": i, "rater": rater, "value": v}
            for rater, values in wide.items() for i, v in enumerate(values) if v is not None]
    return pd.DataFrame(rows)


def table_to_long(table: list[list[int]], categories: list) -> pd.DataFrame:
    """Subject x category counts to long form (rater names are arbitrary per subject)."""
    rows = []
    for i, counts in enumerate(table):
        values = [c for c, n in zip(categories, counts) for _ in range(n)]
        rows += [{"item": f"s{i}", "rater": f"r{j}", "value": v} for j, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_fleiss_matches_the_fleiss_1971_worked_example():
    result = fleiss_kappa(table_to_long(FLEISS_TABLE, CATS5), CATS5)
    assert result.value == pytest.approx(0.210, abs=5e-4)
    assert (result.n_items, result.n_dropped, result.ratings_per_item) == (10, 0, 14)
    assert percent_agreement(table_to_long(FLEISS_TABLE, CATS5), CATS5) == pytest.approx(0.378, abs=5e-4)


def test_fleiss_uses_items_with_the_most_common_count_and_reports_the_dropped():
    long = table_to_long(FLEISS_TABLE, CATS5)
    extra = pd.DataFrame({"item": "odd", "rater": ["r0", "r1", "r2"], "value": [1, 1, 2]})
    result = fleiss_kappa(pd.concat([long, extra]), CATS5)
    assert (result.n_items, result.n_dropped) == (10, 1)
    assert result.value == pytest.approx(0.20993, abs=1e-5)


@pytest.mark.parametrize("level, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_matches_the_2011_worked_example(level, expected):
    long = wide_to_long(KRIPP_2011)
    assert krippendorff_alpha(long, level) == pytest.approx(expected, abs=5e-4)
    assert krippendorff_alpha(long, level, CATS5) == pytest.approx(expected, abs=5e-4)


def test_krippendorff_codes_ordered_string_categories_by_position():
    names = ["very low", "low", "mid", "high", "very high"]
    wide = {r: [None if v is None else names[v - 1] for v in vals] for r, vals in KRIPP_2011.items()}
    long = wide_to_long(wide)
    assert krippendorff_alpha(long, "ordinal", names) == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(long, "nominal") == pytest.approx(0.743, abs=5e-4)
    with pytest.raises(AgreementError, match="needs categories in order"):
        krippendorff_alpha(long, "ordinal")


# Reference values computed with irrCAC 0.4.4 (CAC(ratings, categories=...).gwet(), 10 digits) in a
# throwaway venv outside the project; irrCAC itself pins scipy==1.12 and is never imported here.
@pytest.mark.parametrize("wide, categories, expected", [
    (GWET_4RATERS, CATS5, 0.7754440681),
    (PARADOX, ["real", "synthetic"], 0.8426229508),
    (STRINGS, STRING_CATS, 0.7395079595),
])
def test_gwet_ac1_matches_irrcac(wide, categories, expected):
    assert gwet_ac1(wide_to_long(wide), categories) == pytest.approx(expected, abs=1e-9)


def test_paradox_kappa_low_ac1_high_and_the_summary_says_so():
    long = wide_to_long(PARADOX)
    kappa = fleiss_kappa(long, ["real", "synthetic"]).value
    assert kappa == pytest.approx(0.1272727273, abs=1e-9)  # irrCAC 0.4.4 CAC(...).fleiss()
    assert gwet_ac1(long, ["real", "synthetic"]) > 0.8 > 0.2 > kappa
    rows = {r["statistic"]: r for r in agreement_summary(long, ["real", "synthetic"], n_boot=50)}
    assert "kappa paradox" in rows["fleiss_kappa"]["note"]
    assert "kappa paradox" in rows["krippendorff_alpha_nominal"]["note"]
    assert "kappa paradox" not in rows["gwet_ac1"]["note"]


def test_summary_rows_cis_and_seed():
    long = table_to_long(FLEISS_TABLE, CATS5)
    rows = agreement_summary(long, CATS5, ordinal=True, n_boot=200, seed=3)
    assert [r["statistic"] for r in rows] == ["fleiss_kappa", "krippendorff_alpha_nominal",
                                              "krippendorff_alpha_ordinal", "gwet_ac1", "percent_agreement"]
    for r in rows:
        assert set(r) == {"statistic", "value", "ci_low", "ci_high", "n_items", "n_raters", "n_ratings", "note",
                          "gwet_ac1_all_items", "n_items_all_rated"}
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert (r["n_items"], r["n_raters"], r["n_ratings"]) == (10, 14, 140)
    assert rows[0]["value"] == pytest.approx(0.210, abs=5e-4)
    assert agreement_summary(long, CATS5, ordinal=True, n_boot=200, seed=3) == rows
    assert agreement_summary(long, CATS5, n_boot=200, seed=4)[0]["ci_low"] != rows[0]["ci_low"]


def test_summary_small_n_and_missing_ratings_note():
    long = wide_to_long(GWET_4RATERS)
    rows = {r["statistic"]: r for r in agreement_summary(long, CATS5, n_boot=50)}
    # Units 2-9 have all 4 ratings; units 1 and 10 have 3, unit 11 has 2, unit 12 has 1.
    # Common basis: the 11 units with >= 2 ratings, i.e. Gwet's AC1 of the table without unit 12.
    assert rows["gwet_ac1"]["value"] == pytest.approx(gwet_ac1(long[long["item"] != 11], CATS5), abs=1e-12)
    assert rows["gwet_ac1"]["value"] != pytest.approx(0.7754440681, abs=1e-6)
    # Gwet's own basis (every rated unit, the irrCAC value) is the extra column.
    assert rows["gwet_ac1"]["gwet_ac1_all_items"] == pytest.approx(0.7754440681, abs=1e-9)
    assert rows["gwet_ac1"]["n_items_all_rated"] == 12
    assert rows["gwet_ac1"]["note"] == "rests on 11 items with >= 2 ratings, 40 ratings by 4 raters"
    assert "used the 8 of 12 items with 4 ratings" in rows["fleiss_kappa"]["note"]
    assert "n too small to conclude (8 items)" in rows["fleiss_kappa"]["note"]
    assert [rows[k]["n_items"] for k in ("fleiss_kappa", "krippendorff_alpha_nominal", "gwet_ac1",
                                         "percent_agreement")] == [8, 11, 11, 11]
    assert rows["percent_agreement"]["gwet_ac1_all_items"] is None


def test_summary_degenerate_cases_return_none_with_a_reason():
    one_category = pd.DataFrame({"item": [0, 0, 1, 1], "rater": ["a", "b", "a", "b"], "value": ["real"] * 4})
    rows = {r["statistic"]: r for r in agreement_summary(one_category, ["real", "synthetic"], n_boot=20)}
    assert rows["fleiss_kappa"]["value"] is None and "chance agreement is 1" in rows["fleiss_kappa"]["note"]
    assert rows["krippendorff_alpha_nominal"]["value"] is None
    assert rows["gwet_ac1"]["value"] == 1.0 and rows["percent_agreement"]["value"] == 1.0
    single = pd.DataFrame({"item": [0, 1], "rater": ["a", "a"], "value": ["real", "synthetic"]})
    for r in agreement_summary(single, ["real", "synthetic"], n_boot=20):
        assert r["value"] is None and r["ci_low"] is None and "cannot compute" in r["note"]
    with pytest.raises(UndefinedAgreement, match="no item has 2 or more ratings"):
        gwet_ac1(single, ["real", "synthetic"])
    no_nan = [v for r in rows.values() for v in r.values() if isinstance(v, float)]
    assert all(math.isfinite(v) for v in no_nan)


@pytest.mark.parametrize("long, match", [
    (pd.DataFrame({"item": [1], "rater": ["a"]}), r"missing column\(s\) \['value'\]"),
    (pd.DataFrame({"item": [], "rater": [], "value": []}), "no rows"),
    (pd.DataFrame({"item": [1, 1], "rater": ["a", "b"], "value": ["real", "maybe"]}),
     r"'value' holds \['maybe'\].*not in categories \['real', 'synthetic'\]"),
    (pd.DataFrame({"item": [1, 1], "rater": ["a", "a"], "value": ["real", "real"]}), "repeated .* intra_rater"),
    (pd.DataFrame({"item": [1, 1], "rater": ["a", "b"], "value": ["real", None]}), "missing value"),
])
def test_bad_input_messages(long, match):
    with pytest.raises(AgreementError, match=match):
        agreement_summary(long, ["real", "synthetic"])


def test_bad_level_and_categories_messages():
    long = wide_to_long(KRIPP_2011)
    with pytest.raises(AgreementError, match=r"level='ratio' is not allowed; use one of \['nominal'"):
        krippendorff_alpha(long, "ratio")
    with pytest.raises(AgreementError, match="categories is empty"):
        gwet_ac1(long, [])


def test_intra_rater_perfect_repeats():
    pairs = pd.DataFrame({"rater": ["a"] * 4, "first": ["real", "fake", "real", "fake"],
                          "second": ["real", "fake", "real", "fake"]})
    rows = intra_rater(pairs)
    assert [r["rater"] for r in rows] == ["a", "all"]
    assert rows[0]["percent_agreement"] == 1.0 and rows[0]["cohen_kappa"] == pytest.approx(1.0)
    assert "n too small" in rows[0]["note"]


def test_intra_rater_hand_computed_2x2():
    # 2x2 table: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> po = 0.7,
    # pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4.
    cells = [("yes", "yes", 20), ("yes", "no", 5), ("no", "yes", 10), ("no", "no", 15)]
    first = [f for f, _, n in cells for _ in range(n)]
    second = [s for _, s, n in cells for _ in range(n)]
    pairs = pd.DataFrame({"rater": "b", "first": first, "second": second})
    perfect = pd.DataFrame({"rater": "a", "first": ["yes", "no"] * 5, "second": ["yes", "no"] * 5})
    rows = {r["rater"]: r for r in intra_rater(pd.concat([pairs, perfect]))}
    assert rows["b"]["n_pairs"] == 50 and rows["b"]["percent_agreement"] == pytest.approx(0.7)
    assert rows["b"]["cohen_kappa"] == pytest.approx(0.4)
    assert rows["all"]["n_pairs"] == 60 and rows["all"]["percent_agreement"] == pytest.approx(0.75)


def test_intra_rater_undefined_and_ordinal():
    one = pd.DataFrame({"rater": "a", "first": ["real"] * 3, "second": ["real"] * 3})
    row = intra_rater(one)[0]
    assert row["cohen_kappa"] is None and "only one category" in row["note"]
    assert row["percent_agreement"] == 1.0
    # Quadratic weights on 1-3: w = (i - j)^2 / 4. Observed: pairs (1,1), (2,3), (3,3), (1,2):
    # sum w*o = (0 + 1/4 + 0 + 1/4) / 4 = 0.125; margins first (2,1,1)/4, second (1,1,2)/4:
    # sum w*e = (2*(0 + 1/4 + 2*1) + 1*(1/4 + 0 + 2/4) + 1*(1 + 1/4 + 0)) / 16 = 6.5 / 16
    # -> kappa = 1 - 0.125 / 0.40625 = 0.6923.
    ordinal = pd.DataFrame({"rater": "a", "first": [1, 2, 3, 1], "second": [1, 3, 3, 2]})
    w = np.array([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)])
    expected_w = w * np.outer([2, 1, 1], [1, 1, 2]) / 16
    assert expected_w.sum() == pytest.approx(0.40625)
    assert intra_rater(ordinal, ordinal=True)[0]["cohen_kappa"] == pytest.approx(1 - 0.125 / 0.40625)
    with pytest.raises(AgreementError, match="needs categories in order"):
        intra_rater(pd.DataFrame({"rater": "a", "first": ["low"], "second": ["high"]}), ordinal=True)
    with pytest.raises(AgreementError, match=r"'second' holds \['maybe'\]"):
        intra_rater(pd.DataFrame({"rater": "a", "first": ["real"], "second": ["maybe"]}), categories=["real"])


def test_attention_wilson_intervals():
    df = pd.DataFrame({"rater": ["a"] * 10 + ["b"] * 5, "passed": [True] * 8 + [False] * 2 + [True] * 5})
    rows = {r["rater"]: r for r in attention_pass_rates(df)}
    a = rows["a"]
    assert (a["n"], a["passed"], a["rate"]) == (10, 8, 0.8)
    assert (a["ci_low"], a["ci_high"]) == pytest.approx((0.490, 0.943), abs=5e-4)
    assert rows["b"]["rate"] == 1.0 and rows["b"]["ci_high"] == pytest.approx(1.0)
    assert (rows["all"]["n"], rows["all"]["passed"]) == (15, 13)
    with pytest.raises(AgreementError, match=r"'passed' holds \['yes'\]; allowed values are True and False"):
        attention_pass_rates(pd.DataFrame({"rater": ["a"], "passed": ["yes"]}))
    with pytest.raises(AgreementError, match=r"missing column\(s\) \['passed'\]"):
        attention_pass_rates(pd.DataFrame({"rater": ["a"]}))


def test_no_pairable_item_says_so_not_fewer_than_2_items_with_0_ratings():
    # Every item rated once: Fleiss has no modal count; the note must not read "items have 0 ratings".
    once = pd.DataFrame({"item": [0, 1, 2], "rater": ["a", "b", "c"], "value": ["real", "synthetic", "real"]})
    rows = {r["statistic"]: r for r in agreement_summary(once, ["real", "synthetic"], n_boot=10)}
    assert "cannot compute: no item has 2 or more ratings" in rows["fleiss_kappa"]["note"]
    assert "have 0 ratings" not in rows["fleiss_kappa"]["note"]
    assert rows["gwet_ac1"]["value"] is None and rows["gwet_ac1"]["n_items_all_rated"] == 3


# 24 repeats: 19 real/real, 1 real/synthetic, 4 synthetic/real, 0 synthetic/synthetic.
# po = 19/24 = 0.7917; first real 20/24, second real 23/24: pe = (20*23 + 4*1)/576 = 0.8056;
# kappa = (0.7917 - 0.8056) / (1 - 0.8056) = -0.0714. "real" holds 43/48 = 89.6 % of answers, under
# the 90 % share rule, yet this is the paradox: the agreement rule (>= 70 %, kappa < 0.4) catches it.
PARADOX_REPEATS = [("real", "real")] * 19 + [("real", "synthetic")] + [("synthetic", "real")] * 4


def test_kappa_paradox_at_79_percent_agreement_and_kappa_minus_0_07():
    pairs = pd.DataFrame({"rater": "a", "first": [f for f, _ in PARADOX_REPEATS],
                          "second": [s for _, s in PARADOX_REPEATS]})
    row = intra_rater(pairs)[0]
    assert row["percent_agreement"] == pytest.approx(19 / 24)
    assert row["cohen_kappa"] == pytest.approx(-0.0714, abs=5e-5)
    assert "kappa paradox: 79% raw agreement but kappa -0.07" in row["note"]
    # The balanced 2x2 of test_intra_rater_hand_computed_2x2 (po 0.7, kappa 0.4) is no paradox.
    cells = [("yes", "yes", 20), ("yes", "no", 5), ("no", "yes", 10), ("no", "no", 15)]
    balanced = pd.DataFrame({"rater": "b", "first": [f for f, _, n in cells for _ in range(n)],
                             "second": [s for _, s, n in cells for _ in range(n)]})
    assert "paradox" not in intra_rater(balanced)[0]["note"]
