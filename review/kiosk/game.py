"""The conference kiosk's game: "which one is synthetic?", ten rounds per visitor.

A game is drawn when it starts (``draw_game``, a pure seeded function of the pools): each round
pairs a synthetic image of one checkpoint with a real image of the same pathology, rounds are
balanced over checkpoints and pathologies, and the synthetic image is on the left in exactly half
of the rounds (in a shuffled order), so always tapping one side scores exactly chance.

The game lives on the server, in the kiosk database (``database.kiosk``), under a random token
that only the visitor's browser tab holds: two visitors never share a round; a round's first answer
stands (a double tap or a second visitor's tap stores nothing new); a game left mid-way is never
finished, so it counts nowhere. Which side is synthetic reaches the browser only after the answer.

The score is compared with chance (one-sided binomial test against 50 %), with other visitors'
games, and with the experts' accuracy on the same checkpoints in pair-mode studies of the study
database, which is opened read-only.

Results against chance, other visitors and the experts are in ``review.kiosk.results``.

Command line (``python -m review.kiosk --help``): ``pools`` builds the pools, ``hide`` takes a
nickname off the leaderboard, ``reset`` empties the kiosk database.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import unicodedata
from dataclasses import dataclass

import sqlite_utils

from common.labels import LABELS
from database import kiosk as kiosk_store
from review.kiosk.pools import PoolImage, Pools, PoolsError, playable_cells

logger = logging.getLogger(__name__)

ROUNDS = 10
SIDES: tuple[str, ...] = ("left", "right")
NICKNAME_MAX = 24
_MAX_MARKS = 2  # combining marks in a row after a letter: enough for Indic and Thai, not for "Zalgo" text


class KioskError(ValueError):
    """A request the kiosk refuses; the message is meant for the visitor."""


class UnknownGame(KioskError):
    """A game token the kiosk does not know (expired page, or made up)."""


class BadAnswer(KioskError):
    """An answer to a round that is not open, or a side other than left or right."""


class BadNickname(KioskError):
    """A nickname that is too long or has characters other than letters, digits, space, - and _."""


@dataclass(frozen=True)
class PlannedRound:
    """One round as drawn: the pair, which side is synthetic, and where the synthetic image came from."""

    position: int
    label: str
    checkpoint: dict
    real: PoolImage
    synthetic: PoolImage
    synthetic_side: str

    def row(self) -> dict:
        left, right = (self.synthetic, self.real) if self.synthetic_side == "left" else (self.real, self.synthetic)
        return {"position": self.position, "left_file": left.file, "right_file": right.file,
                "synthetic_side": self.synthetic_side, "label": self.label, "checkpoint": self.checkpoint["name"],
                "checkpoint_step": self.checkpoint["step"], "checkpoint_fingerprint": self.checkpoint["fingerprint"],
                "real_sha256": self.real.sha256, "synthetic_sha256": self.synthetic.sha256}


@dataclass(frozen=True)
class RoundView:
    """A round as the visitor sees it; the truth fields are None until it is answered.

    Attributes:
        position: 0-based; the page shows ``position + 1`` of ``total``.
        left_file, right_file: Presented files in the pool folder (random names).
        score: Correct answers so far (this round included once answered).
    """

    position: int
    total: int
    left_file: str
    right_file: str
    score: int
    choice: str | None = None
    synthetic_side: str | None = None
    checkpoint: str | None = None
    step: int | None = None
    label: str | None = None

    @property
    def answered(self) -> bool:
        return self.choice is not None

    @property
    def correct(self) -> bool:
        return self.answered and self.choice == self.synthetic_side

    @property
    def last(self) -> bool:
        return self.position == self.total - 1


# ---------------------------------------------------------------------------------------------
# Drawing a game (pure)


def draw_game(pools: Pools, seed: int, rounds: int = ROUNDS) -> list[PlannedRound]:
    """The rounds of one game, a pure function of the pools and the seed.

    Cells (checkpoint, pathology) are chosen greedily: the checkpoint shown least so far, then the
    pathology shown least, then the cell shown least, ties broken at random; so per game the
    checkpoints' counts differ by at most one, as do the pathologies' when every cell is playable.
    No image is shown twice in a game while its pool has unused images. Exactly ``rounds // 2``
    rounds have the synthetic image on the left.

    Raises:
        PoolsError: If the pools have no playable cell.
        ValueError: If ``rounds`` < 1.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    cells = playable_cells(pools)
    if not cells:
        raise PoolsError("the pools have no playable pair")
    rng = random.Random(seed)
    checkpoints = {checkpoint["fingerprint"]: checkpoint for checkpoint in pools.checkpoints}
    per_checkpoint = dict.fromkeys(checkpoints, 0)
    per_label = dict.fromkeys(LABELS, 0)
    per_cell = dict.fromkeys(cells, 0)
    used: set[str] = set()
    sides = ["left"] * (rounds // 2) + ["right"] * (rounds - rounds // 2)
    rng.shuffle(sides)
    planned = []
    for position in range(rounds):
        fingerprint, label = min(cells, key=lambda cell: (per_checkpoint[cell[0]], per_label[cell[1]], per_cell[cell],
                                                          rng.random()))
        per_checkpoint[fingerprint] += 1
        per_label[label] += 1
        per_cell[(fingerprint, label)] += 1
        synthetic = _pick(pools.synthetic(fingerprint, label), used, rng)
        real = _pick(pools.real(label), used, rng)
        planned.append(PlannedRound(position, label, checkpoints[fingerprint], real, synthetic, sides[position]))
    return planned


def _pick(images: list[PoolImage], used: set[str], rng: random.Random) -> PoolImage:
    fresh = [image for image in images if image.file not in used] or images
    chosen = rng.choice(fresh)
    used.add(chosen.file)
    return chosen


# ---------------------------------------------------------------------------------------------
# Playing


def new_game(db: sqlite_utils.Database, pools: Pools, rounds: int = ROUNDS, seed: int | None = None) -> str:
    """Start a game: draw and store its rounds; returns its token (keep it in the browser tab only)."""
    seed = secrets.randbits(31) if seed is None else seed
    token = secrets.token_urlsafe(24)
    kiosk_store.create_game(db, _hash(token), seed, pools.id, [r.row() for r in draw_game(pools, seed, rounds)])
    return token


def next_round(db: sqlite_utils.Database, token: str) -> RoundView | None:
    """The game's first unanswered round (its clock starts now), or None when the game is finished.

    Raises:
        UnknownGame: If the token names no game.
    """
    game = find_game(db, token)
    rows = kiosk_store.game_rounds(db, game["id"])
    open_rows = [row for row in rows if row["choice"] is None]
    if not open_rows:
        return None
    row = open_rows[0]
    kiosk_store.mark_shown(db, game["id"], row["position"])
    return _view(row, rows, reveal=False)


def answer(db: sqlite_utils.Database, token: str, position: object, side: object) -> RoundView:
    """Answer a round, once: the first answer stands and a repeat returns it unchanged.

    Args:
        position: The round's 0-based position, as shown.
        side: ``"left"`` or ``"right"``: where the visitor thinks the synthetic image is.

    Returns:
        The round with its truth revealed.

    Raises:
        UnknownGame: If the token names no game.
        BadAnswer: If the side is not left or right, or the round is not the open one or an answered one.
    """
    if side not in SIDES:
        raise BadAnswer(f"side must be left or right, got {str(side)[:20]!r}")
    game = find_game(db, token)
    rows = kiosk_store.game_rounds(db, game["id"])
    open_positions = [row["position"] for row in rows if row["choice"] is None]
    try:
        position = int(position)
    except (TypeError, ValueError):
        raise BadAnswer(f"round must be a number, got {str(position)[:20]!r}") from None
    if not 0 <= position < len(rows):
        raise BadAnswer(f"round must be between 1 and {len(rows)}, got {position + 1}")
    row = rows[position]
    if row["choice"] is None:
        if position != open_positions[0]:
            raise BadAnswer(f"round {position + 1} is not open yet; round {open_positions[0] + 1} is")
        stored = kiosk_store.insert_answer(db, game["id"], position, side, side == row["synthetic_side"])
        if not stored:
            logger.info("game %s round %s: answered concurrently; the first answer stands", game["id"], position)
        rows = kiosk_store.game_rounds(db, game["id"])
    return _view(rows[position], rows, reveal=True)


def _view(row: dict, rows: list[dict], reveal: bool) -> RoundView:
    score = sum(bool(r["correct"]) for r in rows)
    truth = {}
    if reveal and row["choice"] is not None:
        truth = {"choice": row["choice"], "synthetic_side": row["synthetic_side"], "checkpoint": row["checkpoint"],
                 "step": row["checkpoint_step"], "label": row["label"]}
    return RoundView(row["position"], len(rows), row["left_file"], row["right_file"], score, **truth)


def find_game(db: sqlite_utils.Database, token: object) -> dict:
    """The game row of a token; raises ``UnknownGame`` for an unknown, empty or non-text token."""
    game = kiosk_store.get_game(db, _hash(token)) if isinstance(token, str) and token else None
    if game is None:
        raise UnknownGame("this game is not known here (the page may be stale): press Play to start a new one")
    return game


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Nicknames and the leaderboard


def clean_nickname(raw: object) -> str | None:
    """A nickname fit for the leaderboard, or None when none was given.

    Unicode NFKC normalisation, then surrounding whitespace trimmed and inner runs collapsed to
    one space. Allowed: letters of any script (with at most two combining marks after each),
    digits, space, ``-`` and ``_``; at most 24 characters. Anything else is refused, not
    silently changed: ``<script>`` or ten thousand characters raise, with the reason.

    Raises:
        BadNickname: For a non-string, more than 24 characters, or a character outside the set.
    """
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadNickname("a nickname must be text")
    if len(raw) > 16 * NICKNAME_MAX:  # refuse before normalising a huge paste
        raise BadNickname(f"a nickname has at most {NICKNAME_MAX} characters; this one has {len(raw)}")
    text = " ".join(unicodedata.normalize("NFKC", raw).split())
    if not text:
        return None
    marks = 0
    previous_is_letter = False
    for char in text:
        category = unicodedata.category(char)
        if category.startswith("M") and previous_is_letter and marks < _MAX_MARKS:
            marks += 1
            continue
        if not (category.startswith("L") or category == "Nd" or char in " -_"):
            raise BadNickname(f"a nickname may use letters, digits, spaces, - and _ only; "
                              f"it may not use {_describe(char)}")
        marks, previous_is_letter = 0, category.startswith("L")
    if len(text) > NICKNAME_MAX:
        raise BadNickname(f"a nickname has at most {NICKNAME_MAX} characters; this one has {len(text)}")
    return text


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} ({unicodedata.name(char, 'unnamed character').lower()})"


def set_nickname(db: sqlite_utils.Database, token: str, raw: object) -> str | None:
    """Put a finished game on the leaderboard under a nickname (again: the name is replaced).

    Returns:
        The cleaned nickname, or None if empty (the game then stays off the leaderboard).

    Raises:
        UnknownGame, BadNickname: As their names say.
        KioskError: If the game is not finished.
    """
    nickname = clean_nickname(raw)
    game = find_game(db, token)
    if game["finished_at"] is None:
        raise KioskError("finish all rounds first; then your score can go on the leaderboard")
    kiosk_store.set_nickname(db, game["id"], nickname)
    return nickname


def leaderboard(db: sqlite_utils.Database, limit: int = 10) -> list[dict]:
    """The top named games: ``rank``, ``nickname`` (raw text: escape it to show it), ``score``, ``rounds``, ``seconds``."""
    return [{"rank": rank, **row} for rank, row in enumerate(kiosk_store.leaderboard(db, limit), start=1)]


# ---------------------------------------------------------------------------------------------
# Command line
