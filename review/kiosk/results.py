"""Kiosk results: a finished game against chance, other visitors and the experts; the presenter's live numbers.

Visitors' numbers count finished games only (a game left mid-way counts nowhere). The experts'
accuracy comes from pair-mode studies in the study database, opened read-only: never written,
never migrated. Proportions carry their Wilson 95 % interval.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import sqlite_utils

from database import kiosk as kiosk_store
from database.ratings import export_rows
from database.studies import list_studies
from review.kiosk.game import ROUNDS, KioskError, find_game, leaderboard

logger = logging.getLogger(__name__)

SIMULATED_PANEL = "simulated panel"
EXPERTS = "experts"


@dataclass(frozen=True)
class Proportion:
    """``correct`` of ``n`` with its Wilson 95 % interval."""

    correct: int
    n: int

    @property
    def rate(self) -> float | None:
        return self.correct / self.n if self.n else None

    @property
    def ci(self) -> tuple[float, float] | None:
        if not self.n:
            return None
        from statsmodels.stats.proportion import proportion_confint

        low, high = proportion_confint(self.correct, self.n, alpha=0.05, method="wilson")
        return max(0.0, float(low)), min(1.0, float(high))


@dataclass(frozen=True)
class CheckpointResult:
    """One checkpoint's line: the visitor's own picks, all visitors', and each expert panel's."""

    name: str
    step: int | None
    fingerprint: str
    yours: Proportion
    visitors: Proportion
    experts: dict[str, Proportion]


@dataclass(frozen=True)
class GameResult:
    """A finished game's score against chance, other visitors and the experts.

    Attributes:
        p_value: One-sided binomial test against 50 %: how often guessing scores this well or better.
        others: Scores of the other finished games.
        better_than: Share of the other games with a lower score (None when there are none).
    """

    score: int
    rounds: int
    p_value: float
    others: tuple[int, ...]
    better_than: float | None
    checkpoints: tuple[CheckpointResult, ...]
    nickname: str | None


def game_result(db: sqlite_utils.Database, token: str, study_db: Path | None) -> GameResult:
    """The result screen of a finished game.

    Raises:
        UnknownGame: If the token names no game.
        KioskError: If the game is not finished.
    """
    from scipy.stats import binomtest

    game = find_game(db, token)
    if game["finished_at"] is None:
        raise KioskError("this game is not finished yet")
    rows = kiosk_store.game_rounds(db, game["id"])
    mine: dict[str, list[int]] = {}
    for row in rows:
        mine.setdefault(row["checkpoint_fingerprint"], []).append(int(row["correct"]))
    others = tuple(row["score"] for row in kiosk_store.finished_scores(db) if row["id"] != game["id"])
    lines = tuple(checkpoint_results(db, study_db, mine))
    return GameResult(
        score=game["score"], rounds=game["rounds"],
        p_value=float(binomtest(game["score"], game["rounds"], 0.5, alternative="greater").pvalue),
        others=others, better_than=sum(s < game["score"] for s in others) / len(others) if others else None,
        checkpoints=lines, nickname=game["nickname"])


def checkpoint_results(db: sqlite_utils.Database, study_db: Path | None,
                       mine: dict[str, list[int]] | None = None) -> list[CheckpointResult]:
    """Per checkpoint (every one visitors have played, and ``mine``): visitors' and experts' accuracy.

    Visitors' accuracy counts finished games only. Experts' comes from ``expert_accuracy``.
    """
    experts = expert_accuracy(study_db) if study_db else {}
    totals = {row["fingerprint"]: row for row in kiosk_store.checkpoint_totals(db)}
    lines = []
    for fingerprint, total in totals.items():  # ordered by step: a finished game's checkpoints are all here
        if mine is not None and fingerprint not in mine:
            continue
        own = (mine or {}).get(fingerprint, [])
        lines.append(CheckpointResult(
            name=total["checkpoint"], step=total["step"], fingerprint=fingerprint, yours=Proportion(sum(own), len(own)),
            visitors=Proportion(int(total["correct"]), int(total["n"])),
            experts={panel: counts for (fp, panel), counts in sorted(experts.items()) if fp == fingerprint}))
    return lines


def expert_accuracy(study_db: Path) -> dict[tuple[str, str], Proportion]:
    """Pair-mode accuracy (synthetic image picked) per (checkpoint fingerprint, panel), from the study database.

    The database is opened read-only and never migrated or written. Only normal trials count
    (planned repeats would count a judgement twice). Simulated studies or raters are the
    ``"simulated panel"``, real ones ``"experts"``. A missing or unreadable database gives ``{}``.
    """
    path = Path(study_db)
    if not path.is_file():
        return {}
    try:
        connection = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
    except sqlite3.Error as error:
        logger.warning("experts' accuracy unavailable: cannot open %s read-only: %s", path, error)
        return {}
    with closing(connection):
        try:
            counts = _pair_tallies(sqlite_utils.Database(connection))
        except sqlite3.Error as error:
            logger.warning("experts' accuracy unavailable: %s: %s", path, error)
            return {}
    return {key: Proportion(correct, n) for key, (correct, n) in counts.items()}


def _pair_tallies(db: sqlite_utils.Database) -> dict[tuple[str, str], list[int]]:
    """``[correct, n]`` of normal pair trials on synthetic images per (checkpoint fingerprint, panel)."""
    counts: dict[tuple[str, str], list[int]] = {}
    if "studies" not in db.table_names():
        return counts
    for study in list_studies(db):
        if study["mode"] != "pair":
            continue
        for row in export_rows(db, study["id"]):
            if row["image_source"] != "synthetic" or row["trial_kind"] != "normal" or not row["checkpoint_fingerprint"]:
                continue
            panel = SIMULATED_PANEL if (row["study_simulated"] or row["rater_simulated"]) else EXPERTS
            tally = counts.setdefault((row["checkpoint_fingerprint"], panel), [0, 0])
            tally[0] += row["synthetic_choice"] == row["synthetic_side"]
            tally[1] += 1
    return counts


@dataclass(frozen=True)
class LiveStats:
    """What the presenter screen shows."""

    games_started: int
    games_finished: int
    playing_now: int
    mean_score: float | None
    rounds: int
    checkpoints: tuple[CheckpointResult, ...]
    leaderboard: tuple[dict, ...]


def live_stats(db: sqlite_utils.Database, study_db: Path | None, playing_within_s: float = 120.0) -> LiveStats:
    """Aggregates over all visitors so far, per checkpoint, with the leaderboard."""
    counts = kiosk_store.count_games(db)
    scores = kiosk_store.finished_scores(db)
    return LiveStats(
        games_started=counts["started"], games_finished=counts["finished"],
        playing_now=kiosk_store.games_in_progress(db, playing_within_s),
        mean_score=sum(row["score"] for row in scores) / len(scores) if scores else None,
        rounds=scores[-1]["rounds"] if scores else ROUNDS,
        checkpoints=tuple(checkpoint_results(db, study_db)), leaderboard=tuple(leaderboard(db)))
