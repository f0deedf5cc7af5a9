"""Inter-rater agreement for the reader study, with item-bootstrap confidence intervals.

Inter-rater input is long form: a DataFrame with columns ``item``, ``rater`` and ``value``, one row
per rating; a missing rating is an absent row. Values are category labels (strings) or ordinal
ints and must appear in ``categories``. Every statistic is computed from one items x categories
count table, so the bootstrap resamples rows of that table (items, with replacement).

Statistics:

- Fleiss' kappa (statsmodels) needs the same number of ratings on every item, so it uses the items
  with the most common count among items with >= 2 ratings (ties: the larger count) and reports
  how many it dropped.
- Krippendorff's alpha (the ``krippendorff`` package) accepts missing ratings; string categories
  are coded by their position in ``categories`` (so "interval" on strings means equally spaced).
- Gwet's AC1 (Gwet 2008, Br J Math Stat Psychol 61:29-48; formula with r_i raters per item from
  Gwet's Handbook of Inter-Rater Reliability) is written here because irrCAC pins old scipy and
  pandas. Chance agreement uses every rated item; observed agreement uses items with >= 2 ratings.
- Percent agreement is the mean, over items with >= 2 ratings, of the share of agreeing rater pairs.

Item basis of ``agreement_summary``: every statistic is computed on the items with >= 2 ratings
(the only items on which raters can agree or not); Fleiss' kappa on the subset with the modal count.
Gwet's own basis for AC1's chance term (every rated item, single-rated ones included) is kept as
an extra column, ``gwet_ac1_all_items``, of the ``gwet_ac1`` row.

When one category holds most ratings, kappa and alpha can be low despite high raw agreement (the
"kappa paradox", Feinstein and Cicchetti 1990); AC1 is robust to it, so the summary says so by the
rule of ``evaluation.study.notes.kappa_paradox``.
Each rater's own consistency (planned repeats, attention checks) is ``evaluation.study.consistency``.
(About 400 lines: the statistics share one validated count table and one bootstrap.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import krippendorff
import numpy as np
import pandas as pd
from statsmodels.stats import inter_rater

from evaluation.study.notes import SMALL_RATERS, SMALL_RATINGS, join, kappa_paradox

logger = logging.getLogger(__name__)

LONG_COLUMNS = ("item", "rater", "value")
LEVELS = ("nominal", "ordinal", "interval")
SMALL_N = SMALL_RATINGS
"""Below this many items (or pairs) a row's note says the sample is too small to conclude."""
CONFIDENCE = 0.95


class AgreementError(ValueError):
    """The ratings are malformed: a missing column, no rows, or a value outside the categories."""


class UndefinedAgreement(AgreementError):
    """The ratings are valid but the statistic is undefined for them (e.g. one category only)."""


@dataclass(frozen=True)
class FleissResult:
    """Fleiss' kappa and the items it used.

    Attributes:
        value: Fleiss' kappa.
        n_items: Items used (those with ``ratings_per_item`` ratings).
        n_dropped: Items left out because they had another number of ratings.
        ratings_per_item: The common number of ratings of the used items.
    """

    value: float
    n_items: int
    n_dropped: int
    ratings_per_item: int


# ---------------------------------------------------------------------------------------------
# Validation and the count table


def require_columns(df: pd.DataFrame, required: Sequence[str], name: str) -> None:
    """Raise ``AgreementError`` unless ``df`` is a DataFrame with rows and the ``required`` columns, none missing."""
    if not isinstance(df, pd.DataFrame):
        raise AgreementError(
            f"{name} must be a pandas DataFrame with columns {list(required)}, got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise AgreementError(f"{name} is missing column(s) {missing}; required columns are {list(required)}")
    if df.empty:
        raise AgreementError(f"{name} has no rows; need at least one row with columns {list(required)}")
    for column in required:
        n_null = int(df[column].isna().sum())
        if n_null:
            raise AgreementError(f"{name} column {column!r} has {n_null} missing value(s); drop those rows")


def check_categories(categories: Sequence) -> list:
    """``categories`` as a list; ``AgreementError`` if it is empty or repeats a value."""
    cats = list(categories)
    if not cats:
        raise AgreementError("categories is empty; give every allowed value, e.g. ['real', 'synthetic']")
    if len(set(cats)) != len(cats):
        raise AgreementError(f"categories has repeated entries: {cats}; each value must appear once")
    return cats


def check_values(values: pd.Series, categories: list, column: str) -> None:
    """Raise ``AgreementError`` naming the values of ``column`` that are not in ``categories``."""
    outside = values[~values.isin(categories)]
    if len(outside):
        bad = list(dict.fromkeys(outside.tolist()))[:5]
        raise AgreementError(f"column {column!r} holds {bad!r} ({len(outside)} row(s)), not in categories {categories}")


def _validate_long(long: pd.DataFrame, categories: Sequence) -> list:
    require_columns(long, LONG_COLUMNS, "long")
    cats = check_categories(categories)
    check_values(long["value"], cats, "value")
    repeated = long.duplicated(["item", "rater"])
    if repeated.any():
        first = tuple(long.loc[repeated, ["item", "rater"]].iloc[0])
        raise AgreementError(
            f"long has {int(repeated.sum())} repeated (item, rater) pair(s), e.g. {first!r}; inter-rater "
            "agreement takes one rating per rater and item: pass planned repeats to intra_rater"
        )
    return cats


def _count_table(long: pd.DataFrame, categories: list) -> tuple[np.ndarray, np.ndarray]:
    """Items x categories rating counts and the item label of each row."""
    item_index, items = pd.factorize(long["item"])
    code_of = {c: i for i, c in enumerate(categories)}
    codes = long["value"].map(code_of).to_numpy(dtype=int)
    counts = np.zeros((len(items), len(categories)))
    np.add.at(counts, (item_index, codes), 1)
    return counts, np.asarray(items)


# ---------------------------------------------------------------------------------------------
# Statistics on a count table (raise UndefinedAgreement when undefined)


def _modal_count(counts: np.ndarray) -> int:
    """The most common number of ratings per item among items with >= 2 (ties: the larger)."""
    totals = counts.sum(axis=1).astype(int)
    values, freq = np.unique(totals[totals >= 2], return_counts=True)
    if len(values) == 0:
        raise UndefinedAgreement("no item has 2 or more ratings")
    return int(values[freq == freq.max()].max())


def _fleiss(counts: np.ndarray, ratings_per_item: int) -> float:
    if ratings_per_item < 2:
        raise UndefinedAgreement("no item has 2 or more ratings")
    table = counts[counts.sum(axis=1) == ratings_per_item]
    if len(table) < 2:
        raise UndefinedAgreement(f"fewer than 2 items have {ratings_per_item} ratings")
    shares = table.sum(axis=0) / table.sum()
    if np.isclose((shares**2).sum(), 1.0):
        raise UndefinedAgreement("all ratings fall in one category: chance agreement is 1")
    return float(inter_rater.fleiss_kappa(table, method="fleiss"))


def _observed_agreement(counts: np.ndarray) -> float:
    totals = counts.sum(axis=1)
    rated = totals >= 2
    if not rated.any():
        raise UndefinedAgreement("no item has 2 or more ratings")
    pairs = (counts[rated] * (counts[rated] - 1)).sum(axis=1) / (totals[rated] * (totals[rated] - 1))
    return float(pairs.mean())


def _ac1(counts: np.ndarray) -> float:
    q = counts.shape[1]
    if q < 2:
        raise UndefinedAgreement("AC1 needs at least 2 categories")
    pa = _observed_agreement(counts)
    pi = (counts / counts.sum(axis=1, keepdims=True)).mean(axis=0)
    pe = float((pi * (1 - pi)).sum() / (q - 1))
    return (pa - pe) / (1 - pe)


def _alpha(counts: np.ndarray, domain: np.ndarray, level: str) -> float:
    pairable = counts[counts.sum(axis=1) >= 2]
    if len(pairable) == 0:
        raise UndefinedAgreement("no item has 2 or more ratings")
    if (pairable.sum(axis=0) > 0).sum() < 2:
        raise UndefinedAgreement("only one value is used: expected disagreement is 0")
    return float(krippendorff.alpha(value_counts=pairable, value_domain=domain, level_of_measurement=level))


def _alpha_domain(categories: list, level: str) -> np.ndarray:
    if level not in LEVELS:
        raise AgreementError(f"level={level!r} is not allowed; use one of {list(LEVELS)}")
    numeric = all(isinstance(c, (int, float, np.integer, np.floating)) and not isinstance(c, bool)
                  for c in categories)
    # Numbers keep their spacing (interval); labels are coded by their position in categories.
    return np.asarray(categories, dtype=float) if numeric else np.arange(len(categories), dtype=float)


# ---------------------------------------------------------------------------------------------
# Public statistics


def fleiss_kappa(long: pd.DataFrame, categories: Sequence) -> FleissResult:
    """Fleiss' kappa over the items that share the most common number (>= 2) of ratings.

    Args:
        long: Ratings with columns ``item``, ``rater``, ``value``.
        categories: Every allowed value.

    Returns:
        The kappa with the number of items used and dropped.

    Raises:
        AgreementError: If the input is malformed.
        UndefinedAgreement: If fewer than 2 items qualify or all ratings share one category.
    """
    counts, _ = _count_table(long, _validate_long(long, categories))
    r = _modal_count(counts)
    used = int((counts.sum(axis=1) == r).sum())
    return FleissResult(_fleiss(counts, r), used, len(counts) - used, r)


def krippendorff_alpha(long: pd.DataFrame, level: str = "nominal", categories: Sequence | None = None) -> float:
    """Krippendorff's alpha; missing ratings are allowed.

    Args:
        long: Ratings with columns ``item``, ``rater``, ``value``.
        level: ``"nominal"``, ``"ordinal"`` or ``"interval"``.
        categories: Allowed values, in order for ordinal or interval levels. Defaults to the sorted
            observed values, which is only allowed for numbers or the nominal level.

    Raises:
        AgreementError: If the input or ``level`` is invalid, or string values lack ordered categories.
        UndefinedAgreement: If no item has 2 ratings or a single value is used.
    """
    if level not in LEVELS:
        raise AgreementError(f"level={level!r} is not allowed; use one of {list(LEVELS)}")
    if categories is None:
        require_columns(long, LONG_COLUMNS, "long")
        observed = long["value"].unique().tolist()
        if level != "nominal" and any(isinstance(v, str) for v in observed):
            raise AgreementError(
                f"level={level!r} with string values needs categories in order, e.g. ['low', 'mid', 'high']")
        try:
            categories = sorted(observed)
        except TypeError as err:
            raise AgreementError(f"column 'value' mixes types ({observed[:5]!r}); pass categories") from err
    cats = _validate_long(long, categories)
    counts, _ = _count_table(long, cats)
    return _alpha(counts, _alpha_domain(cats, level), level)


def gwet_ac1(long: pd.DataFrame, categories: Sequence) -> float:
    """Gwet's AC1 for any number of raters per item (Gwet 2008; Gwet's handbook, r_i raters per item).

    ``pa`` is the mean share of agreeing rater pairs over items with >= 2 ratings; ``pi_k`` is the
    mean over all rated items of the share of item i's ratings in category k;
    ``pe = sum_k pi_k (1 - pi_k) / (q - 1)`` with q = ``len(categories)``; AC1 = (pa - pe) / (1 - pe).

    Raises:
        AgreementError: If the input is malformed.
        UndefinedAgreement: If no item has 2 ratings or there is only one category.
    """
    counts, _ = _count_table(long, _validate_long(long, categories))
    return _ac1(counts)


def percent_agreement(long: pd.DataFrame, categories: Sequence) -> float:
    """Mean share of agreeing rater pairs over items with >= 2 ratings (Fleiss' P-bar).

    Raises:
        AgreementError: If the input is malformed.
        UndefinedAgreement: If no item has 2 ratings.
    """
    counts, _ = _count_table(long, _validate_long(long, categories))
    return _observed_agreement(counts)


# ---------------------------------------------------------------------------------------------
# Summary with bootstrap CIs


def finite_or_none(x: float | None) -> float | None:
    """``x`` as a float, or None when it is None, NaN or infinite."""
    return float(x) if x is not None and math.isfinite(x) else None


def _try(stat: Callable[[np.ndarray], float], counts: np.ndarray) -> float:
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            return stat(counts)
    except UndefinedAgreement:
        return math.nan


def _percentile_ci(samples: np.ndarray) -> tuple[float | None, float | None, int]:
    finite = samples[np.isfinite(samples)]
    if len(finite) < 2:
        return None, None, len(finite)
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi), len(finite)


def agreement_summary(
    long: pd.DataFrame, categories: Sequence, ordinal: bool = False, n_boot: int = 200, seed: int = 0
) -> list[dict]:
    """Every agreement statistic with a 95 % percentile bootstrap CI over items.

    Items are resampled with replacement (the same ``n_boot`` draws for every statistic, from
    ``numpy.random.default_rng(seed)``). A statistic that cannot be computed gets ``value`` None and
    the reason in ``note``; no NaN is returned.

    Args:
        long: Ratings with columns ``item``, ``rater``, ``value``.
        categories: Every allowed value, in order when ``ordinal``.
        ordinal: Also report Krippendorff's alpha at the ordinal level.
        n_boot: Bootstrap resamples; 0 gives no CI.
        seed: Seed of the resampling.

    Returns:
        One dict per statistic (``fleiss_kappa``, ``krippendorff_alpha_nominal``,
        ``krippendorff_alpha_ordinal`` when ordinal, ``gwet_ac1``, ``percent_agreement``), every one
        on the items with >= 2 ratings (Fleiss: those with the modal count), with keys ``statistic,
        value, ci_low, ci_high, n_items, n_raters, n_ratings, gwet_ac1_all_items,
        n_items_all_rated`` (AC1 on every rated item, Gwet's own basis: ``gwet_ac1`` row only) and
        ``note``.

    Raises:
        AgreementError: If the input is malformed or ``n_boot`` is negative.
    """
    cats = _validate_long(long, categories)
    if n_boot < 0:
        raise AgreementError(f"n_boot={n_boot} is negative; use 0 (no CI) or more")
    counts, items = _count_table(long, cats)
    totals = counts.sum(axis=1)
    share = counts.sum(axis=0).max() / counts.sum()
    try:
        modal = _modal_count(counts)
    except UndefinedAgreement:
        modal = 0
    draws = np.random.default_rng(seed).integers(0, len(counts), size=(n_boot, len(counts)))
    rows = []
    for name, stat, used in _statistics(cats, totals, modal, ordinal):
        value, lo, hi, notes = _estimate(stat, counts, draws)
        used_long = long[long["item"].isin(items[used])]
        rows.append({"statistic": name, "value": value, "ci_low": lo, "ci_high": hi, "n_items": int(used.sum()),
                     "n_raters": int(used_long["rater"].nunique()), "n_ratings": len(used_long), "notes": notes,
                     "gwet_ac1_all_items": None, "n_items_all_rated": None})
    agreement = next(r["value"] for r in rows if r["statistic"] == "percent_agreement")
    for row in rows:
        row["note"] = _summary_note(row, row.pop("notes"), modal, len(counts), agreement, share)
    ac1 = next(r for r in rows if r["statistic"] == "gwet_ac1")
    ac1["gwet_ac1_all_items"] = finite_or_none(_try(_ac1, counts))
    ac1["n_items_all_rated"] = len(counts)
    logger.info("agreement on %d items, %d ratings, %d bootstrap resamples", len(counts), len(long), n_boot)
    return rows


def _summary_note(row: dict, notes: list[str], modal: int, n_all: int, agreement: float | None, share: float) -> str:
    """Basis, small n, dropped items and the kappa paradox, for one summary row."""
    name, n_items = row["statistic"], row["n_items"]
    basis = f"rests on {n_items} items with {modal if name == 'fleiss_kappa' and modal else '>= 2'} ratings"
    notes = [f"{basis}, {row['n_ratings']} ratings by {row['n_raters']} raters", *notes]
    if name == "fleiss_kappa" and modal and n_items < n_all:
        notes.append(f"used the {n_items} of {n_all} items with {modal} ratings")
    if n_items < SMALL_N:
        notes.append(f"n too small to conclude ({n_items} items)")
    elif row["n_raters"] < SMALL_RATERS:
        notes.append(f"n too small to conclude ({row['n_raters']} raters)")
    if name.startswith(("fleiss", "krippendorff")):
        notes.append(kappa_paradox(row["value"], agreement, share))
    return join(*notes)


def _statistics(cats: list, totals: np.ndarray, modal: int, ordinal: bool) -> list[tuple]:
    """(name, statistic of a count table, mask of the items it uses) for the summary."""
    def alpha(level: str) -> Callable[[np.ndarray], float]:
        return lambda c: _alpha(c, _alpha_domain(cats, level), level)

    stats = [("fleiss_kappa", lambda c: _fleiss(c, modal), totals == modal),
             ("krippendorff_alpha_nominal", alpha("nominal"), totals >= 2)]
    if ordinal:
        stats.append(("krippendorff_alpha_ordinal", alpha("ordinal"), totals >= 2))
    pairable = totals >= 2
    return stats + [("gwet_ac1", lambda c: _ac1(c[c.sum(axis=1) >= 2]), pairable),
                    ("percent_agreement", _observed_agreement, pairable)]


def _estimate(stat: Callable[[np.ndarray], float], counts: np.ndarray, draws: np.ndarray) -> tuple:
    """Point value, percentile CI over the item resamples ``draws``, and notes; None when undefined."""
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = finite_or_none(stat(counts))
    except UndefinedAgreement as err:
        return None, None, None, [f"cannot compute: {err}"]
    if value is None or len(draws) == 0:
        return value, None, None, []
    lo, hi, n_ok = _percentile_ci(np.array([_try(stat, counts[d]) for d in draws]))
    notes = [f"CI from {n_ok} of {len(draws)} resamples (the others were undefined)"] if n_ok < len(draws) else []
    return value, lo, hi, notes
