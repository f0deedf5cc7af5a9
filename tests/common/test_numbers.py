"""Numbers as people read them: one precision per kind, an em dash for missing, never an exponent or -0."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from common.numbers import (
    KINDS,
    MISSING,
    UnknownKind,
    column_kind,
    d3_format,
    kinds_of,
    metric_kind,
    show,
    shown_frame,
    styled,
)


@pytest.mark.parametrize("value, kind, text", [
    (0.9805999994277954, "percent", "98.1%"), (0.0, "percent", "0.0%"), (1, "percent", "100.0%"),
    (0.3889, "points", "+38.9 pp"), (-0.0916, "points", "-9.2 pp"), (2.776e-17, "points", "0.0 pp"),
    (2.776e-17, "p", "<0.001"), (0.000999, "p", "<0.001"), (0.001, "p", "0.0010"), (0.0123, "p", "0.012"),
    (0.5, "p", "0.50"), (0.6667, "p", "0.67"), (1.0, "p", "1.0"),
    (152.349, "fid", "152.3"), (0.0, "fid", "0.0"),
    (0.00123456, "kid", "0.001235"), (-0.0016159, "kid", "-0.001616"), (0.0390512, "kid", "0.03905"),
    (2.776e-17, "kid", "0"), (-2.776e-17, "statistic", "0.00"), (0.6912, "statistic", "0.69"),
    (0.81234, "score", "0.812"), (18.0, "count", "18"), (np.int64(3), "count", "3"), (4816.4, "ms", "4816"),
    (12.3456, "number", "12.3"), (0.000123456, "number", "0.0001"), (2.776e-17, "number", "0"),
    (123456.7, "number", "123457"),
])
def test_each_kind_has_its_precision(value, kind, text):
    assert show(value, kind) == text


@pytest.mark.parametrize("kind", KINDS)
def test_missing_values_are_an_em_dash_and_no_number_has_an_exponent(kind):
    for missing in (None, float("nan"), np.nan, pd.NA, pd.NaT):
        assert show(missing, kind) == MISSING == "—"
    for value in (2.776e-17, -3e-12, 1e-7, 0.9805999994277954, 123456789.123, -0.0):
        text = show(value, kind)
        assert "e" not in text.lower() and not re.search(r"^-0(\.0+)?( pp|%)?$", text), text
    assert show(math.inf, kind) == "∞" and show(-math.inf, kind) == "-∞"


def test_text_bools_and_containers_are_shown_as_they_are():
    assert show("checkpoint-100", "percent") == "checkpoint-100"
    assert show(True, "count") == "yes" and show(np.bool_(False), "count") == "no"
    assert show([1, 2], "number") == "[1, 2]"


def test_an_unknown_kind_names_the_allowed_ones():
    for call in (lambda: show(1, "percentage"), lambda: d3_format("percentage")):
        with pytest.raises(UnknownKind, match="must be one of count, percent, points, p, fid, kid"):
            call()


@pytest.mark.parametrize("name, kind", [
    ("judged_real", "percent"), ("judged_real_boot_low", "percent"), ("accuracy_high", "percent"),
    ("pathology_low", "percent"), ("p_fool", "percent"), ("rate", "percent"), ("gap_called_only_high", "points"),
    ("n_raters", "count"), ("n", "count"), ("realism_3", "count"), ("pathology_cannot_tell", "count"),
    ("p_vs_chance", "p"), ("spearman_p_holm", "p"), ("kendall_p", "p"), ("spearman_low", "statistic"),
    ("auc_high", "statistic"), ("realism_mean", "statistic"), ("response_ms_q3", "ms"), ("metric_fid", "fid"),
    ("metric_label_fidelity", "percent"), ("nearest_real_distance", "score"), ("note", "number"),
])
def test_a_column_name_gives_its_kind(name, kind):
    assert column_kind(name) == kind


def test_a_bare_interval_is_shown_like_the_estimate_before_it():
    assert kinds_of(["question", "value", "ci_low", "ci_high", "n_items"]) == {
        "question": "number", "value": "statistic", "ci_low": "statistic", "ci_high": "statistic", "n_items": "count"}
    assert kinds_of(["rater", "n", "passed", "rate", "ci_low", "ci_high"])["ci_high"] == "percent"


@pytest.mark.parametrize("metric, kind", [
    ("fid", "fid"), ("kid", "kid"), ("precision", "statistic"), ("density", "statistic"),
    ("label_fidelity", "percent"), ("memorisation", "percent"), ("augmentation_utility", "points"),
    ("diversity_ms_ssim", "score"), ("seg_dice_synthetic_only", "score"), ("seg_dice_gain_n16", "score"),
    ("something_new", "number"),
])
def test_a_metric_gives_its_kind(metric, kind):
    assert metric_kind(metric) == kind


def test_a_table_is_shown_as_text_or_styled_keeping_its_numbers():
    frame = pd.DataFrame({"group": ["real", "checkpoint-100"], "n_ratings": [36, 12],
                          "judged_real": [0.9805999994277954, None], "p_vs_chance": [2.776e-17, 0.5]})
    assert shown_frame(frame).values.tolist() == [["real", "36", "98.1%", "<0.001"],
                                                  ["checkpoint-100", "12", "—", "0.50"]]
    html = styled(frame).to_html()
    assert "98.1%" in html and "<0.001" in html and "0.9805999994277954" not in html
    assert styled(frame).data["judged_real"].iloc[0] == 0.9805999994277954  # the data keeps every digit
