"""The HTML of the kiosk's screens, from the game's and the results' plain values; no Gradio.

Every text that came from a visitor (a nickname) or from the pools (a checkpoint's name) is
HTML-escaped here. Images are inlined as data URIs.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

from review.kiosk import results as kiosk_results
from review.kiosk.game import KioskError, RoundView

logger = logging.getLogger(__name__)


def _data_uri(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        logger.error("kiosk image %s unreadable: %s", path, error)
        raise KioskError("an image of this round could not be loaded; press Play to start again") from error
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def header_html(view: RoundView) -> str:
    """The round's heading: its number of the total and the score so far."""
    return f"<div class='kiosk-header'>Round {view.position + 1} of {view.total} · score {view.score}</div>"


def pair_html(view: RoundView, pools_dir: Path) -> str:
    """The two images as buttons (locked and labelled real / synthetic once answered); files are read from ``pools_dir``.

    Raises:
        KioskError: If an image file cannot be read.
    """
    cells = []
    for side, file in (("left", view.left_file), ("right", view.right_file)):
        classes, badge = "kiosk-pick", ""
        if view.answered:
            synthetic = side == view.synthetic_side
            classes += " is-synthetic" if synthetic else " is-real"
            what = ("Real" if not synthetic else f"Synthetic · step {view.step}" if view.step is not None
                    else f"Synthetic · {html.escape(str(view.checkpoint))}")
            badge = f"<span class='kiosk-badge'>{'Your pick: ' if side == view.choice else ''}{what}</span>"
        name = f"{side.capitalize()} image"
        cells.append(f"<button class='{classes}' data-side='{side}' aria-label='{name}' title='{name}'"
                     f"{' disabled' if view.answered else ''}><img src='{_data_uri(pools_dir / file)}' alt='{name}'>"
                     f"{badge}</button>")
    state = "answered" if view.answered else "open"
    return f"<div class='kiosk-pair' data-round='{view.position}' data-state='{state}'>{''.join(cells)}</div>"


def feedback_html(view: RoundView) -> str:
    """The line under the pair: the question, or whether the answer was right."""
    if not view.answered:
        return "<div class='kiosk-feedback'>Which one is synthetic? Tap it.</div>"
    if view.correct:
        return "<div class='kiosk-feedback good'>✓ Correct: you spotted the synthetic one.</div>"
    return "<div class='kiosk-feedback bad'>✗ Fooled you: the other one was synthetic.</div>"


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _proportion(p: kiosk_results.Proportion) -> str:
    if not p.n:
        return "–"
    low, high = p.ci
    return f"{_percent(p.rate)} <small>({_percent(low)}–{_percent(high)}, n = {p.n})</small>"


def _experts(line: kiosk_results.CheckpointResult) -> str:
    if not line.experts:
        return "–"
    return "<br>".join(f"{html.escape(panel)}: {_proportion(p)}" for panel, p in line.experts.items())


def result_html(outcome: kiosk_results.GameResult) -> str:
    """The result screen: the score against chance, other visitors and the experts, per checkpoint."""
    chance = outcome.rounds / 2
    verdict = ("Better than guessing!" if outcome.p_value < 0.05 else
               "The synthetic images fooled you more often than not!" if outcome.score < chance else
               "That could be luck: the images fooled you as often as not." if outcome.score == chance else
               "Above chance, but luck could do that too.")
    lines = [f"<h1>Your result</h1><div class='kiosk-score'>{outcome.score} of {outcome.rounds} spotted</div>",
             f"<p class='kiosk-lead'><b>{verdict}</b> Guessing scores {chance:g} of {outcome.rounds} on average; "
             f"it scores {outcome.score} or more in {_percent(outcome.p_value)} of games "
             f"(one-sided binomial test against 50 %, p = {outcome.p_value:.3f}).</p>"]
    if outcome.others:
        mean = sum(outcome.others) / len(outcome.others)
        games = f"{len(outcome.others)} game{'s' if len(outcome.others) > 1 else ''}"
        lines.append(f"<p class='kiosk-lead'>Other visitors: {mean:.1f} of {outcome.rounds} on average over {games}; "
                     f"you beat {_percent(outcome.better_than)} of them.</p>")
    else:
        lines.append("<p class='kiosk-lead'>You are the first visitor to finish a game.</p>")
    rows = "".join(
        f"<tr><td>{html.escape(line.name)}</td><td>{line.yours.correct} of {line.yours.n}</td>"
        f"<td>{_proportion(line.visitors)}</td><td>{_experts(line)}</td></tr>" for line in outcome.checkpoints)
    lines.append("<div class='kiosk-table'><table><tr><th>Model checkpoint</th><th>You</th><th>All visitors (95 % CI)</th>"
                 f"<th>Experts, pair studies (95 % CI)</th></tr>{rows}</table></div>")
    return "".join(lines)


def leaderboard_html(rows: list[dict]) -> str:
    """The leaderboard (``review.kiosk.game.leaderboard`` rows), nicknames escaped."""
    if not rows:
        return "<p class='kiosk-note'>No names on the leaderboard yet: finish a game and add yours.</p>"
    body = "".join(f"<tr><td>{row['rank']}</td><td class='kiosk-nick'>{html.escape(row['nickname'])}</td>"
                   f"<td>{row['score']} of {row['rounds']}</td><td>{row['seconds']:.0f} s</td></tr>" for row in rows)
    return f"<h3 style='text-align:center'>Leaderboard</h3><table class='kiosk-board'>{body}</table>"


def live_html(stats: kiosk_results.LiveStats) -> str:
    """The presenter screen: games finished and playing, accuracy per checkpoint, the leaderboard."""
    mean = "–" if stats.mean_score is None else f"{stats.mean_score:.1f} of {stats.rounds}"
    rows = []
    for line in stats.checkpoints:
        rate = line.visitors.rate or 0.0
        rows.append(f"<tr><td>{html.escape(line.name)}</td><td>{_proportion(line.visitors)}</td>"
                    f"<td><div class='kiosk-bar' title='dashed line: chance'><span style='width:{100 * rate:.0f}%'>"
                    f"</span><i></i></div></td><td>{_experts(line)}</td></tr>")
    table = ("<table><tr><th>Model checkpoint</th><th>Visitors spotted the synthetic image (95 % CI, n)</th><th></th>"
             f"<th>Experts, pair studies</th></tr>{''.join(rows)}</table>" if rows else
             "<p class='kiosk-lead'>No finished game yet: be the first!</p>")
    return (f"<p class='kiosk-lead'>Games finished: <b>{stats.games_finished}</b> · playing now: "
            f"<b>{stats.playing_now}</b> · average score: <b>{mean}</b></p>{table}"
            f"{leaderboard_html(list(stats.leaderboard))}"
            "<p class='kiosk-note'>Finished games only. 50 % is chance; lower means the model fools people.</p>")
