"""What a number rests on: the one small-n rule, the one "cannot tell" rule and the kappa-paradox rule.

Every exported table has a ``note`` column and every figure a caption built from these functions,
so one rule decides everywhere when a sample is too small to conclude:

- a row rests on fewer than ``SMALL_RATINGS`` ratings or fewer than ``SMALL_RATERS`` raters, or
- its 95 % interval is wider than ``WIDE_INTERVAL`` (on a 0-1 share: it hardly excludes anything).

"Cannot tell" (``CANNOT_TELL_RULE``): a pathology answer of "cannot tell" on a labelled image counts
as *not correct* in pathology accuracy and the clinical gap, and as the lowest-confidence middle
(score 0, between every NonAD and every AD call) in the pathology AUC; in agreement and intra-rater
kappa it is a category of its own. The other reading (the answer left out) is reported beside it
in ``*_called_only`` columns.

The kappa paradox (Feinstein and Cicchetti 1990): kappa-type statistics are low while raw agreement
is high when one answer dominates. ``kappa_paradox`` flags it when raw agreement is at least
``PARADOX_AGREEMENT`` but kappa is below ``PARADOX_KAPPA`` (which, at that agreement, needs chance
agreement above 0.5, i.e. an unbalanced answer), or when one answer holds over ``PARADOX_SHARE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SMALL_RATINGS = 10
"""Below this many ratings (or items, pairs, trials) a row is too small to conclude."""
SMALL_RATERS = 3
"""Below this many raters a row is too small to conclude (one rater's habits decide it)."""
WIDE_INTERVAL = 0.5
"""A 95 % interval of a share wider than this is flagged as uninformative."""
PARADOX_AGREEMENT = 0.7
PARADOX_KAPPA = 0.4
PARADOX_SHARE = 0.9
CANNOT_TELL = "cannot tell"
CANNOT_TELL_RULE = ("'cannot tell' counts as not correct in pathology accuracy and gap, as the lowest-confidence "
                    "middle (score 0) in the AUC, and as its own category in agreement; *_called_only leaves it out")


@dataclass(frozen=True)
class StudyContext:
    """What a whole study's numbers rest on: its status and how much of its plan has been rated.

    Attributes:
        status: The study's status (``draft``, ``open``, ``closed``).
        n_planned: Trials planned for every rater of the study (0 when unknown).
        n_rated: Of those, trials rated so far.
        n_raters: Raters with at least one rating.
        n_ratings: Ratings (trials) in the export, every kind included.
    """

    status: str
    n_planned: int
    n_rated: int
    n_raters: int
    n_ratings: int

    @property
    def share_rated(self) -> float | None:
        return self.n_rated / self.n_planned if self.n_planned else None

    def describe(self) -> str:
        """e.g. ``study open (ratings may still change), 64 % of 200 planned trials rated; 2 raters, 128 ratings``."""
        status = "study open (ratings may still change)" if self.status == "open" else f"study {self.status}"
        share = (f", {self.share_rated:.0%} of {self.n_planned} planned trials rated"
                 if self.share_rated is not None else "")
        return f"{status}{share}; {self.n_raters} raters, {self.n_ratings} ratings"

    def too_small(self) -> bool:
        return is_small(self.n_ratings, self.n_raters)


def is_small(n_ratings: int, n_raters: int | None = None) -> bool:
    """The one small-n rule: fewer than ``SMALL_RATINGS`` ratings or ``SMALL_RATERS`` raters."""
    return n_ratings < SMALL_RATINGS or (n_raters is not None and n_raters < SMALL_RATERS)


def basis_note(n_ratings: int, n_raters: int | None, n_items: int | None = None, unit: str = "ratings",
               items: str = "images", interval: tuple | None = None) -> str:
    """``rests on 6 ratings by 2 raters of 3 images; n too small to conclude (...)``, plus a wide-interval flag."""
    parts = [f"{n_ratings} {unit}"]
    if n_raters is not None:
        parts.append(f"by {n_raters} rater{'' if n_raters == 1 else 's'}")
    if n_items is not None:
        parts.append(f"of {n_items} {items}")
    notes = ["rests on " + " ".join(parts)]
    if is_small(n_ratings, n_raters):
        notes.append(f"n too small to conclude (fewer than {SMALL_RATINGS} {unit}"
                     + (f" or {SMALL_RATERS} raters)" if n_raters is not None else ")"))
    width = interval_width(interval)
    if width is not None and width > WIDE_INTERVAL:
        notes.append(f"95 % interval [{interval[0]:.2f}, {interval[1]:.2f}] too wide to conclude")
    return "; ".join(notes)


def interval_width(interval: tuple | None) -> float | None:
    if interval is None or any(v is None or (isinstance(v, float) and math.isnan(v)) for v in interval):
        return None
    return float(interval[1]) - float(interval[0])


def kappa_paradox(kappa: float | None, agreement: float | None, top_share: float | None = None) -> str:
    """The paradox note for a kappa-type value (empty when the rule does not fire)."""
    if kappa is None:
        return ""
    if agreement is not None and agreement >= PARADOX_AGREEMENT and kappa < PARADOX_KAPPA:
        return (f"kappa paradox: {agreement:.0%} raw agreement but kappa {kappa:.2f} (unbalanced answers make "
                "chance agreement high); read percent agreement and AC1")
    if top_share is not None and top_share > PARADOX_SHARE:
        return f"kappa paradox: one category holds {top_share:.0%} of ratings; read AC1"
    return ""


def cannot_tell_note(value, other, n_cannot_tell: int, what: str) -> str:
    """Says how many "cannot tell" answers the rule counted and what the other reading gives."""
    if not n_cannot_tell:
        return ""
    other_text = "undefined" if other is None else f"{other:.3f}"
    return (f"{n_cannot_tell} 'cannot tell' counted as not correct; left out, the {what} is {other_text}"
            + ("" if value is None or other is None or abs(value - other) < 1e-12 else f" (here {value:.3f})"))


def join(*notes: str) -> str:
    """Non-empty notes joined by ``; ``."""
    return "; ".join(n for n in notes if n)
