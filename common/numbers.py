"""How a number is shown to a person: one precision per kind of number, everywhere.

Tables, figures and the HTML report show numbers through ``show(value, kind)``; CSV exports
and the database keep full precision (they are data, not display). The kinds:

=============  ===========================================================  ===========================
kind           shown as                                                     example
=============  ===========================================================  ===========================
``count``      a whole number                                               ``18``
``percent``    a share (0 to 1) as a percentage, 1 decimal                  ``0.9806`` -> ``98.1%``
``points``     a difference of two shares, signed percentage points         ``-0.0125`` -> ``-1.3 pp``
``p``          a p-value: 2 significant digits, ``<0.001`` below 0.001      ``2.776e-17`` -> ``<0.001``
``fid``        1 decimal (FID is large and, at small n, biased by tens)     ``152.349`` -> ``152.3``
``kid``        4 significant digits, at most 6 decimals (KID is small)     ``0.00123456`` -> ``0.001235``
``statistic``  2 decimals: agreement, correlations, AUCs, 1-5 means,        ``0.6912`` -> ``0.69``
               strengths, precision/recall/density/coverage
``score``      3 decimals: Dice, IoU, MS-SSIM, feature distances            ``0.81234`` -> ``0.812``
``ms``         whole milliseconds                                           ``1234.6`` -> ``1235``
``number``     anything else: 3 significant digits, never an exponent      ``12.3456`` -> ``12.3``
=============  ===========================================================  ===========================

A missing value (None, NaN) is an em dash; a value that rounds to zero never shows a minus sign.
``column_kind(name)`` gives the kind of a table column from its name (the analysis tables'
names: ``judged_real_low`` is a percent, ``n_raters`` a count, ``spearman_p`` a p-value), and
``metric_kind(name)`` that of a stored metric (``fid``, ``kid``, ``seg_dice_synthetic_only``...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from numbers import Real

import numpy as np
import pandas as pd

MISSING = "—"
KINDS: tuple[str, ...] = ("count", "percent", "points", "p", "fid", "kid", "statistic", "score", "ms", "number")
P_FLOOR = 0.001
MAX_DECIMALS = 6  # below this a significant-digit format shows 0: float noise (2.776e-17) is no number to read


class UnknownKind(ValueError):
    """A kind of number that ``show`` does not know."""


def is_missing(value) -> bool:
    """Whether ``value`` is a missing number: None, NaN, ``pd.NA`` or ``NaT``."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or another container: not a missing scalar
        return False


def show(value, kind: str = "number") -> str:
    """``value`` as text at the precision its kind deserves (see the module docstring).

    Args:
        value: A number (int, float, numpy scalar); None or NaN is shown as ``MISSING``, a bool as
            ``yes``/``no``; text and anything else that is not a number as ``str(value)``.
        kind: One of ``KINDS``.

    Raises:
        UnknownKind: For a kind not in ``KINDS``, naming the allowed ones.
    """
    if kind not in _FORMATS:
        raise UnknownKind(f"kind of number must be one of {', '.join(KINDS)}, got {kind!r}")
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if is_missing(value):
        return MISSING
    if not isinstance(value, Real):
        return str(value)
    number = float(value)
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    return _no_negative_zero(_FORMATS[kind](number))


def shower(kind: str) -> Callable[[object], str]:
    """``show`` with its kind fixed: a formatter for one table column (pandas ``Styler.format``)."""
    if kind not in _FORMATS:
        raise UnknownKind(f"kind of number must be one of {', '.join(KINDS)}, got {kind!r}")
    return lambda value: show(value, kind)


def significant(number: float, digits: int, max_decimals: int = MAX_DECIMALS) -> str:
    """``number`` to ``digits`` significant digits in plain notation, at most ``max_decimals`` decimals."""
    if number == 0:
        return "0"
    decimals = digits - 1 - math.floor(math.log10(abs(number)))
    decimals = min(max(decimals, 0), max_decimals)
    if abs(number) < 0.5 * 10 ** -max_decimals:
        return "0"
    return f"{number:.{decimals}f}"


def _p_value(number: float) -> str:
    if number < P_FLOOR:
        return f"<{P_FLOOR:g}"
    return significant(number, 2)


_FORMATS: dict[str, Callable[[float], str]] = {
    "count": lambda x: f"{x:.0f}",
    "percent": lambda x: f"{100 * x:.1f}%",
    "points": lambda x: f"{100 * x:+.1f} pp",
    "p": _p_value,
    "fid": lambda x: f"{x:.1f}",
    "kid": lambda x: significant(x, 4),
    "statistic": lambda x: f"{x:.2f}",
    "score": lambda x: f"{x:.3f}",
    "ms": lambda x: f"{x:.0f}",
    "number": lambda x: significant(x, 3, max_decimals=4),
}


# The same precisions as d3 formats, for plotly's hover labels and axis ticks.
_D3_FORMATS: dict[str, str] = {
    "count": "d", "percent": ".1%", "points": "+.1%", "p": ".2g", "fid": ".1f", "kid": ".4g", "statistic": ".2f",
    "score": ".3f", "ms": ".0f", "number": ".3~g",
}


def d3_format(kind: str) -> str:
    """The d3 format (plotly ``hovertemplate`` ``%{y:FORMAT}``, ``tickformat``) showing a kind at its precision.

    Plotly cannot write ``<0.001`` or ``pp``: a p-value gets 2 significant digits, a difference of
    shares a signed percentage.
    """
    if kind not in _D3_FORMATS:
        raise UnknownKind(f"kind of number must be one of {', '.join(KINDS)}, got {kind!r}")
    return _D3_FORMATS[kind]


def _no_negative_zero(text: str) -> str:
    """``-0.0`` or ``-0.0 pp`` -> ``0.0`` / ``0.0 pp``: a value that rounds to zero has no sign."""
    if text[:1] in "+-" and not re.search(r"[1-9]", text):
        return text[1:]
    return text


# ---------------------------------------------------------------------------------------------
# Kinds of table columns and metrics, by name

_INTERVAL = re.compile(r"_(boot_)?(low|high)$")
_COLUMN_KINDS: dict[str, str] = {
    # shares of ratings, images or trials
    "judged_real": "percent", "judged_real_rate": "percent", "accuracy_2afc": "percent", "accuracy": "percent",
    "pathology_accuracy": "percent", "pathology_accuracy_called_only": "percent", "pathology": "percent",
    "mask_fits": "percent", "mask_partly": "percent", "real_accuracy": "percent", "synthetic_accuracy": "percent",
    "real_accuracy_called_only": "percent", "synthetic_accuracy_called_only": "percent", "fooling_rate": "percent", "p_fool": "percent",
    "percent_agreement": "percent", "rate": "percent", "pass_rate": "percent", "label_fidelity": "percent",
    "memorisation": "percent",
    # differences of shares
    "gap": "points", "gap_called_only": "points", "clinical_gap": "points", "clinical_gap_called_only": "points",
    "augmentation_utility": "points",
    # statistics on their own scale
    "auc": "statistic", "pathology_auc": "statistic", "pathology_auc_called_only": "statistic",
    "realism_mean": "statistic", "realism": "statistic", "value": "statistic", "spearman": "statistic",
    "kendall": "statistic", "strength": "statistic", "bt_strength": "statistic", "bt": "statistic",
    "cohen_kappa": "statistic", "gwet_ac1_all_items": "statistic", "label_fidelity_score": "statistic",
    "embedding_x": "statistic", "embedding_y": "statistic",
    "nearest_real_distance": "score", "distance": "score",
    "response_ms_median": "ms", "response_ms": "ms", "response_ms_q1": "ms", "response_ms_q3": "ms",
    "checkpoint_step": "count", "step": "count", "rank": "count", "fooled": "count", "pathology_called": "count",
    "pathology_cannot_tell": "count", "passed": "count",
    "study_id": "count", "trial_id": "count", "position": "count",
}


def column_kind(name: str) -> str:
    """The kind of number a table column holds, from its name (``number`` when the name says nothing).

    ``X_low``, ``X_high``, ``X_boot_low`` and ``X_boot_high`` take the kind of ``X`` (an interval is
    shown like its estimate); ``n``, ``n_*``, ``*_n`` and ``realism_1`` ... ``realism_5`` are counts;
    ``p``, ``*_p``, ``*_p_holm`` and ``p_vs_*`` are p-values.
    """
    name = str(name)
    if name in _COLUMN_KINDS:
        return _COLUMN_KINDS[name]
    stem = _INTERVAL.sub("", name)
    if stem != name:
        return column_kind(stem) if stem else "number"
    if name == "n" or name.startswith("n_") or name.endswith("_n") or re.fullmatch(r"realism_[1-5]", name):
        return "count"
    if name == "p" or name.endswith(("_p", "_p_holm", "_p_value")) or name.startswith("p_vs_"):
        return "p"
    if name.startswith("metric_"):
        return metric_kind(name.removeprefix("metric_"))
    return "number"


def metric_kind(metric: str) -> str:
    """The kind of a stored metric's value and CI: ``fid``, ``kid``, and the kinds of the others by name."""
    metric = str(metric)
    if metric in ("fid", "kid"):
        return metric
    if metric in ("precision", "recall", "density", "coverage"):
        return "statistic"
    if metric in ("label_fidelity", "memorisation"):
        return "percent"
    if metric == "augmentation_utility":
        return "points"
    if metric.startswith("seg_dice_gain"):
        return "score"
    if metric.startswith(("seg_", "diversity")):
        return "score"
    return "number"


def kinds_of(columns: Iterable[str]) -> dict[str, str]:
    """``column_kind`` of each column, for formatting a whole table.

    A bare interval (``ci_low``, ``ci_high``, ``low``, ``high``) is shown like the estimate it follows:
    the nearest column before it that is not an interval (``value, ci_low, ci_high``; ``rate, ci_low, ...``).
    """
    kinds: dict[str, str] = {}
    estimate = "number"
    for column in columns:
        bare = _INTERVAL.sub("", str(column)) in ("", "ci")
        kinds[column] = estimate if bare else column_kind(column)
        if not bare and not _INTERVAL.search(str(column)):
            estimate = kinds[column]
    return kinds


def shown_frame(frame: pd.DataFrame, kinds: dict[str, str] | None = None) -> pd.DataFrame:
    """A copy of ``frame`` with every cell as display text (``kinds`` by column, else ``column_kind``)."""
    kinds = {**kinds_of(frame.columns), **(kinds or {})}
    return pd.DataFrame({column: [show(value, kinds[column]) for value in frame[column]] for column in frame.columns},
                        index=frame.index, columns=frame.columns)


def styled(frame: pd.DataFrame, kinds: dict[str, str] | None = None):
    """``frame`` as a pandas ``Styler`` showing each column at its kind's precision, the numbers kept as they are.

    A table widget that takes a ``Styler`` (Gradio's Dataframe) shows the formatted text and still
    sorts by the numbers.
    """
    kinds = {**kinds_of(frame.columns), **(kinds or {})}
    return frame.style.format({column: shower(kinds[column]) for column in frame.columns}).hide(axis="index")
