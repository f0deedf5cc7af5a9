"""Bradley-Terry ranking of checkpoints from pair trials, with rater-cluster bootstrap intervals.

In a pair trial a rater sees one real and one synthetic image from checkpoint c and picks the one
they think is synthetic. Each trial is a match between player ``real`` (index 0) and player c:
c wins when the rater picked the real image (the rater was fooled), otherwise ``real`` wins. The
Bradley-Terry model gives P(c beats real) = 1 / (1 + exp(-(theta_c - theta_real))); we report
``strength = theta_c - theta_real``, so ``real`` is 0 and a checkpoint at 0 fools raters half the
time (chance level in a two-image forced choice).

One rater's trials are not independent (each rater has a personal skill), so the confidence
intervals resample raters with replacement, taking all of a drawn rater's trials. With a single
rater they fall back to resampling trials within each checkpoint, and the note says so.

What the numbers rest on: checkpoints with identical records (the same fooled and trial counts)
get the same strength and share a rank (ties come from the data, not from the solver's last
digits); a checkpoint never (or always) fooled has no finite maximum-likelihood strength, so its
strength is the prior's, and an interval bound reached by such resamples is flagged
``ci_low_prior_bound`` / ``ci_high_prior_bound``. ``prior_note`` states the prior and measures its
effect by refitting with a ten times weaker one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import choix
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

COLUMNS = ("rater", "checkpoint", "fooled")
DEFAULT_ALPHA = 0.01
"""choix's regularisation: see :func:`bradley_terry`; weak next to tens of trials per checkpoint."""
MAX_ITER = 1000
REAL = 0
"""Player index of the real images."""
CONFIDENCE = 0.95
SMALL_N = 10
FEW_RATERS = 5


class RankingError(ValueError):
    """Pair-trial data or a ranking setting is invalid."""


def bradley_terry(wins: Sequence[tuple[int, int]], n_players: int, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """Regularised maximum-likelihood Bradley-Terry log-strengths (``choix.ilsr_pairwise_dense``).

    choix's iterative Luce spectral ranking starts every transition rate of its Markov chain at
    ``alpha``. Its fixed point maximises (we check this against scipy in the tests)::

        sum over matches (w, l) of log(1 / (1 + exp(theta_l - theta_w)))
            - alpha * n_players * sum_i (exp(theta_i) - theta_i)

    i.e. an independent Gamma(shape = rate = ``alpha * n_players``) prior on each strength
    ``exp(theta_i)``, centred on 1 (theta = 0). It keeps a player who never loses (or never wins)
    at a large but finite strength instead of infinity, and pulls strengths slightly towards 0; with
    ``alpha = 0.01`` the pull is negligible beside tens of trials. The dense solver works on a
    players x players win-count matrix, so its cost does not grow with the number of matches.

    Args:
        wins: ``(winner, loser)`` player indices, one tuple per match.
        n_players: Number of players; indices run from 0 to ``n_players - 1``.
        alpha: Regularisation, > 0.

    Returns:
        Log-strengths, one per player, with mean 0; only differences are meaningful.

    Raises:
        RankingError: If there are no matches, fewer than 2 players, an index out of range, a
            player matched with itself, or ``alpha <= 0``.
    """
    if n_players < 2:
        raise RankingError(f"n_players={n_players}; need at least 2 players")
    pairs = np.asarray(wins, dtype=int)
    if pairs.size == 0:
        raise RankingError("wins is empty; need at least one (winner, loser) match")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise RankingError(f"wins must be (winner, loser) pairs, got an array of shape {pairs.shape}")
    outside = pairs[(pairs < 0) | (pairs >= n_players)]
    if outside.size:
        raise RankingError(f"wins holds player index {int(outside[0])}; allowed indices are 0 to {n_players - 1}")
    if (pairs[:, 0] == pairs[:, 1]).any():
        raise RankingError("wins holds a match of a player with itself; winner and loser must differ")
    counts = np.zeros((n_players, n_players))
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    return _solve(counts, alpha)


def _solve(counts: np.ndarray, alpha: float) -> np.ndarray:
    """choix on a win-count matrix (``counts[i, j]`` = wins of i over j)."""
    if not alpha > 0:
        raise RankingError(f"alpha={alpha}; use alpha > 0 (without it a player who never loses has no finite strength)")
    try:
        return np.asarray(choix.ilsr_pairwise_dense(counts, alpha=alpha, max_iter=MAX_ITER))
    except RuntimeError as err:  # choix raises RuntimeError when it does not converge
        raise RankingError(f"Bradley-Terry fit did not converge in {MAX_ITER} iterations; try a larger alpha") from err


def _validate(df: pd.DataFrame) -> None:
    if not isinstance(df, pd.DataFrame):
        raise RankingError(f"df must be a pandas DataFrame with columns {list(COLUMNS)}, got {type(df).__name__}")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise RankingError(f"df is missing column(s) {missing}; required columns are {list(COLUMNS)}")
    if df.empty:
        raise RankingError("df has no trials; need at least one pair trial for at least 1 checkpoint")
    for column in COLUMNS:
        n_null = int(df[column].isna().sum())
        if n_null:
            raise RankingError(f"df column {column!r} has {n_null} missing value(s); drop those trials")
    bad = df.loc[~df["fooled"].isin([True, False]), "fooled"]
    if len(bad):
        raise RankingError(f"column 'fooled' holds {bad.unique()[:5].tolist()!r}; allowed values are True and False")


def _fit(fooled: np.ndarray, trials: np.ndarray, alpha: float) -> np.ndarray:
    """Log-strengths relative to real from per-checkpoint counts (NaN for a checkpoint without trials)."""
    counts = np.zeros((len(fooled) + 1, len(fooled) + 1))
    counts[1:, REAL] = fooled
    counts[REAL, 1:] = trials - fooled
    params = _solve(counts, alpha)
    strength = params[1:] - params[REAL]
    strength[trials == 0] = np.nan
    return strength


def _bootstrap(per_rater_fooled: np.ndarray, per_rater_trials: np.ndarray, n_boot: int, seed: int,
               alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """n_boot x checkpoints strengths (raters resampled as clusters, or trials when one rater), and
    per resample and checkpoint -1 / +1 where the resampled record is never / always fooled (0 else)."""
    rng = np.random.default_rng(seed)
    n_raters = len(per_rater_fooled)
    fooled, trials = per_rater_fooled.sum(axis=0), per_rater_trials.sum(axis=0)
    out = np.full((n_boot, len(fooled)), np.nan)
    edge = np.zeros((n_boot, len(fooled)), dtype=int)
    for b in range(n_boot):
        if n_raters > 1:
            weights = np.bincount(rng.integers(0, n_raters, n_raters), minlength=n_raters)
            f, n = weights @ per_rater_fooled, weights @ per_rater_trials
        else:
            n = trials
            share = np.divide(fooled, trials, out=np.zeros(len(trials)), where=trials > 0)
            f = rng.binomial(trials.astype(int), share).astype(float)
        edge[b] = np.where(n > 0, np.where(f == 0, -1, np.where(f == n, 1, 0)), 0)
        try:
            out[b] = _fit(f, n, alpha)
        except RankingError:  # a resample the solver cannot fit counts as undefined, like a missing one
            logger.debug("bootstrap resample %d did not converge", b)
    return out, edge


def _tie_groups(fooled: np.ndarray, trials: np.ndarray) -> np.ndarray:
    """Group index per checkpoint: equal (fooled, trials) records share one (their first index)."""
    records = list(zip(fooled.tolist(), trials.tolist()))
    first = {record: i for i, record in reversed(list(enumerate(records)))}
    return np.array([first[record] for record in records])


def _rank_labels(strength: np.ndarray, tie: np.ndarray, lo: list, hi: list) -> tuple[np.ndarray, list[str]]:
    """Rank 1 = strongest, equal records (``tie``) sharing the best rank of their group (1, 2, 2, 4);
    the label spans the places of every checkpoint tied with it or whose CI overlaps its own."""
    order = np.argsort(-strength, kind="stable")
    place = np.empty(len(strength), dtype=int)
    place[order] = np.arange(1, len(strength) + 1)
    rank = np.array([place[tie == tie[i]].min() for i in range(len(strength))])
    labels = []
    for i in range(len(strength)):
        overlap = [place[j] for j in range(len(strength))
                   if tie[j] == tie[i] or (lo[i] is not None and lo[j] is not None
                                           and lo[j] <= hi[i] + 1e-9 and lo[i] <= hi[j] + 1e-9)]
        a, b = min(overlap), max(overlap)
        labels.append(str(a) if a == b else f"{a}-{b}")
    return rank, labels


def _prior_bounds(boot: np.ndarray, edge: np.ndarray, k: int) -> tuple[bool, bool]:
    """Whether checkpoint ``k``'s lower / upper percentile bound falls among never / always fooled
    resamples, whose strengths only the prior keeps finite."""
    finite = np.isfinite(boot[:, k])
    if not finite.any():
        return False, False
    tail = (1 - CONFIDENCE) / 2
    never, always = float((edge[finite, k] == -1).mean()), float((edge[finite, k] == 1).mean())
    # Never-fooled resamples hold the lowest strengths, always-fooled ones the highest.
    return never >= tail or always > 1 - tail, always >= tail or never > 1 - tail


def _notes(n: int, f: int, n_ok: int, n_boot: int, n_raters: int, alpha: float, bounds: tuple[bool, bool]) -> str:
    notes = []
    if n_boot and n_raters == 1:
        notes.append("one rater: CI resamples trials, so it ignores rater variation")
    elif n_boot and n_raters < FEW_RATERS:
        notes.append(f"only {n_raters} raters: the rater-resampling CI is rough")
    if n_boot and n_ok < n_boot:
        notes.append(f"CI from {n_ok} of {n_boot} resamples (the others drew no trial of this checkpoint)")
    if n < SMALL_N:
        notes.append(f"n too small to conclude ({n} trials)")
    if f in (0, n):
        notes.append(f"{'never' if f == 0 else 'always'} fooled: strength kept finite only by the prior alpha={alpha}")
    sides = [name for name, bound in zip(("lower", "upper"), bounds) if bound]
    if sides:
        notes.append(f"{' and '.join(sides)} CI bound prior-bound: at least 2.5 % of resamples were "
                     f"{'never' if sides == ['lower'] else 'always' if sides == ['upper'] else 'never or always'} "
                     "fooled, where only the prior sets the strength")
    return "; ".join(notes)


def prior_note(rows: list[dict], alpha: float = DEFAULT_ALPHA) -> str:
    """The prior behind ``rank_checkpoints`` and its measured effect on these rows' strengths."""
    fooled = np.array([r["fooled"] for r in rows], float)
    trials = np.array([r["n_trials"] for r in rows], float)
    shift = np.abs(_fit(fooled, trials, alpha) - _fit(fooled, trials, alpha / 10))
    edge = (fooled == 0) | (fooled == trials)
    parts = [f"Prior: choix's ILSR with alpha={alpha}, an independent Gamma(shape = rate = alpha x "
             f"{len(rows) + 1} players) prior on each strength exp(theta), centred on real (theta 0)."]
    if (~edge).any():
        parts.append(f"Refitted with alpha/10, strengths backed by data move by at most {shift[~edge].max():.3f}.")
    if edge.any():
        parts.append(f"{int(edge.sum())} checkpoint(s) never or always fooled have no finite data-based strength: "
                     f"theirs comes from the prior (it moves by {shift[edge].max():.2f} with alpha/10); "
                     "so do interval bounds flagged prior-bound.")
    return " ".join(parts)


def rank_checkpoints(df: pd.DataFrame, n_boot: int = 200, seed: int = 0, alpha: float = DEFAULT_ALPHA) -> list[dict]:
    """Rank checkpoints by how often they fool raters, with a Bradley-Terry model against real images.

    Args:
        df: Pair trials with columns ``rater``, ``checkpoint`` (name) and ``fooled`` (bool: the
            rater picked the real image as the synthetic one).
        n_boot: Bootstrap resamples for the 95 % percentile CIs; 0 gives no CI.
        seed: Seed of the resampling (``numpy.random.default_rng``).
        alpha: Penalty of :func:`bradley_terry`.

    Returns:
        One dict per checkpoint, best first, with keys ``checkpoint, n_trials, fooled, strength``
        (log-strength relative to real = 0), ``ci_low, ci_high, p_fool`` (model probability of
        beating real, ``1 / (1 + exp(-strength))``), ``ci_low_prior_bound, ci_high_prior_bound`` (the bound
        comes from resamples only the prior keeps finite), ``rank`` (1 = most convincing; equal records
        share the best rank of their group), ``rank_label`` ("1", or "1-2" when tied or CIs overlap)
        and ``note``.

    Raises:
        RankingError: If columns are missing, there are no trials, ``fooled`` is not boolean, or
            ``n_boot`` is negative.
    """
    _validate(df)
    if n_boot < 0:
        raise RankingError(f"n_boot={n_boot} is negative; use 0 (no CI) or more")
    trials_df = df.assign(fooled=df["fooled"].astype(bool), trials=1)
    table = trials_df.groupby(["rater", "checkpoint"])[["fooled", "trials"]].sum()
    per_rater_fooled = table["fooled"].unstack(fill_value=0)
    per_rater_trials = table["trials"].unstack(fill_value=0)
    names = [str(c) for c in per_rater_trials.columns]
    rf, rt = per_rater_fooled.to_numpy(dtype=float), per_rater_trials.to_numpy(dtype=float)
    fooled, trials = rf.sum(axis=0), rt.sum(axis=0)
    tie = _tie_groups(fooled, trials)
    strength = _fit(fooled, trials, alpha)[tie]  # equal records get bit-identical strengths
    boot, edge = _bootstrap(rf, rt, n_boot, seed, alpha) if n_boot else (np.empty((0, len(names))),) * 2
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi, n_ok = [], [], []
    for k in range(len(names)):
        finite = boot[np.isfinite(boot[:, k]), k]
        n_ok.append(len(finite))
        ci = np.percentile(finite, [tail, 100 - tail]) if len(finite) >= 2 else (None, None)
        lo.append(None if ci[0] is None else float(ci[0]))
        hi.append(None if ci[1] is None else float(ci[1]))
    rank, labels = _rank_labels(strength, tie, lo, hi)
    bounds = [_prior_bounds(boot, edge, k) if lo[k] is not None else (False, False) for k in range(len(names))]
    rows = [{
        "checkpoint": names[k], "n_trials": int(trials[k]), "fooled": int(fooled[k]), "strength": float(strength[k]),
        "ci_low": lo[k], "ci_high": hi[k], "ci_low_prior_bound": bounds[k][0], "ci_high_prior_bound": bounds[k][1],
        "p_fool": 1 / (1 + math.exp(-strength[k])), "rank": int(rank[k]), "rank_label": labels[k],
        "note": _notes(int(trials[k]), int(fooled[k]), n_ok[k], n_boot, len(rf), alpha, bounds[k]),
    } for k in range(len(names))]
    logger.info("ranked %d checkpoints from %d trials by %d raters", len(names), int(trials.sum()), len(rf))
    return sorted(rows, key=lambda r: (r["rank"], r["checkpoint"]))
