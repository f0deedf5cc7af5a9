"""Each rater's own consistency: agreement with their earlier answer on planned repeats, and attention checks."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

from evaluation.study.agreement import (
    CONFIDENCE,
    SMALL_N,
    AgreementError,
    check_categories,
    check_values,
    finite_or_none,
    require_columns,
)
from evaluation.study.notes import basis_note, join, kappa_paradox
from evaluation.utility import wilson_interval

PAIR_COLUMNS = ("rater", "first", "second")
ATTENTION_COLUMNS = ("rater", "passed")


def _kappa_row(rater, first: pd.Series, second: pd.Series, labels: list, weights: str | None) -> dict:
    n = len(first)
    notes = []
    kappa = None
    if len(set(first) | set(second)) < 2:
        notes.append("only one category used: kappa undefined")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kappa = finite_or_none(cohen_kappa_score(first, second, labels=labels, weights=weights))
        if kappa is None:
            notes.append("kappa undefined for these answers")
    if n < SMALL_N:
        notes.append(f"n too small to conclude ({n} pairs)")
    agreement = float((first.to_numpy() == second.to_numpy()).mean())
    notes.append(kappa_paradox(kappa, agreement))
    return {"rater": rater, "n_pairs": n, "percent_agreement": agreement, "cohen_kappa": kappa, "note": join(*notes)}


def intra_rater(pairs: pd.DataFrame, ordinal: bool = False, categories: Sequence | None = None) -> list[dict]:
    """Each rater's agreement with their own earlier answer on planned repeats (Cohen's kappa).

    Args:
        pairs: Columns ``rater``, ``first``, ``second``: one row per repeated item.
        ordinal: Use quadratic weights (answers ordered as ``categories``).
        categories: Allowed answers, in order when ``ordinal``; defaults to the sorted observed answers.

    Returns:
        One dict per rater (sorted) and a pooled row with rater ``"all"``, with keys
        ``rater, n_pairs, percent_agreement, cohen_kappa, note``; kappa is None when undefined.

    Raises:
        AgreementError: If columns are missing, there are no rows, an answer is outside
            ``categories``, or ``ordinal`` string answers come without ``categories``.
    """
    require_columns(pairs, PAIR_COLUMNS, "pairs")
    answers = pd.concat([pairs["first"], pairs["second"]])
    if categories is None:
        if ordinal and any(isinstance(v, str) for v in answers):
            raise AgreementError("ordinal=True with string answers needs categories in order")
        try:
            categories = sorted(answers.unique().tolist())
        except TypeError as err:
            raise AgreementError("answers mix types; pass categories") from err
    cats = check_categories(categories)
    for column in ("first", "second"):
        check_values(pairs[column], cats, column)
    weights = "quadratic" if ordinal else None
    rows = [_kappa_row(r, g["first"], g["second"], cats, weights)
            for r, g in sorted(pairs.groupby("rater"), key=lambda kv: str(kv[0]))]
    rows.append(_kappa_row("all", pairs["first"], pairs["second"], cats, weights))
    return rows


def _rate_row(rater, passed: np.ndarray) -> dict:
    n, k = len(passed), int(passed.sum())
    lo, hi = wilson_interval(k, n, CONFIDENCE)
    note = basis_note(n, None, unit="attention checks", interval=(lo, hi))
    return {"rater": rater, "n": n, "passed": k, "rate": k / n, "ci_low": lo, "ci_high": hi, "note": note}


def attention_pass_rates(df: pd.DataFrame) -> list[dict]:
    """Attention-check pass rate per rater and pooled, with 95 % Wilson intervals.

    Args:
        df: Columns ``rater`` and ``passed`` (bool), one row per attention check.

    Returns:
        One dict per rater (sorted) and a pooled row with rater ``"all"``, with keys
        ``rater, n, passed, rate, ci_low, ci_high, note``.

    Raises:
        AgreementError: If columns are missing, there are no rows, or ``passed`` is not boolean.
    """
    require_columns(df, ATTENTION_COLUMNS, "df")
    bad = df.loc[~df["passed"].isin([True, False]), "passed"]
    if len(bad):
        raise AgreementError(
            f"column 'passed' holds {bad.unique()[:5].tolist()!r}; allowed values are True and False")
    rows = [_rate_row(r, g["passed"].to_numpy(dtype=bool))
            for r, g in sorted(df.groupby("rater"), key=lambda kv: str(kv[0]))]
    rows.append(_rate_row("all", df["passed"].to_numpy(dtype=bool)))
    return rows
