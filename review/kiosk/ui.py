"""The conference kiosk: "spot the synthetic polyp", a Gradio app of its own (not a tab of the workbench).

Launched alone (``python app.py --kiosk``), because a booth must show nothing else: no sign-in, no
admin controls, no Gradio footer. Two pages:

* ``/``: the game. Start screen (Play, leaderboard), ten rounds (tap the image you think is
  synthetic; the answer is revealed at once; Next), then the result (score against chance, other
  visitors, the experts) with an optional nickname for the leaderboard, and Play again. After
  ``idle_s`` seconds without a touch the page returns to the start screen by itself.
* ``/presenter``: live aggregates per checkpoint for a second screen, refreshed every few seconds,
  with a QR code of the kiosk's address on the local network.

Callbacks call ``review.kiosk``; every text that came from a visitor is HTML-escaped here.
"""

from __future__ import annotations

import base64
import functools
import html
import logging
import socket
from pathlib import Path

import gradio as gr

from appconfig import AppConfig
from database.kiosk import open_kiosk_db
from review.kiosk import game as kiosk
from review.kiosk import results as kiosk_results
from review.kiosk.game import KioskError, RoundView
from review.kiosk.pools import PoolsError, default_pools_dir, load_pools

logger = logging.getLogger(__name__)

TITLE = "Spot the synthetic polyp"
PRESENTER_PATH = "presenter"
PRESENTER_REFRESH_S = 3.0
LOOPBACK = ("127.0.0.1", "localhost", "::1")

CSS = """
footer, .nav-holder, .show-api, .built-with, .settings { display: none !important; }
.gradio-container { max-width: 100% !important; padding: 8px 16px !important; }
body, .gradio-container { background: #10151c !important; color: #f3f4f6 !important; }
.kiosk h1 { font-size: clamp(28px, 4.5vw, 64px); margin: 0.2em 0; text-align: center; color: #f3f4f6; }
.kiosk p, .kiosk li, .kiosk td, .kiosk th { font-size: clamp(16px, 1.6vw, 24px); color: #e5e7eb; }
.kiosk-lead { text-align: center; max-width: 60em; margin: 0 auto; }
.kiosk-big button, button.kiosk-big { font-size: clamp(22px, 2.6vw, 40px) !important; min-height: 88px !important;
  border-radius: 18px !important; }
.kiosk-header { text-align: center; font-size: clamp(20px, 2.4vw, 36px); font-weight: 700; margin: 4px 0; color: #f3f4f6; }
.kiosk-pair { display: grid; grid-template-columns: 1fr 1fr; gap: 2vw; justify-items: center; align-items: start; }
.kiosk-pick { position: relative; padding: 0; border: 6px solid #374151; border-radius: 24px; background: #000;
  cursor: pointer; touch-action: manipulation; width: min(42vw, 58vh); aspect-ratio: 1; overflow: hidden; }
.kiosk-pick img { width: 100%; height: 100%; display: block; object-fit: contain; image-rendering: auto; }
.kiosk-pick:not([disabled]):hover, .kiosk-pick:not([disabled]):focus-visible { border-color: #f59e0b; }
.kiosk-pick[disabled] { cursor: default; opacity: 1 !important; filter: none !important; }
.kiosk-pick.is-synthetic { border-color: #ef4444; }
.kiosk-pick.is-real { border-color: #22c55e; }
.kiosk-badge { position: absolute; left: 0; right: 0; bottom: 0; padding: 10px; font-size: clamp(16px, 2vw, 30px);
  font-weight: 700; color: #fff !important; background: rgba(0, 0, 0, 0.72); text-align: center; }
.kiosk-feedback { text-align: center; font-size: clamp(20px, 2.4vw, 36px); font-weight: 700; min-height: 1.4em;
  color: #f3f4f6; }
.kiosk-feedback.good { color: #4ade80; } .kiosk-feedback.bad { color: #f87171; }
.kiosk-score { text-align: center; font-size: clamp(28px, 4vw, 60px); font-weight: 800; color: #f3f4f6; }
.kiosk h3, .kiosk b { color: #f3f4f6; }
.kiosk table { border-collapse: collapse; margin: 8px auto; } .kiosk td, .kiosk th { padding: 4px 14px;
  border-bottom: 1px solid #374151; text-align: left; }
.kiosk-note { color: #9ca3af !important; font-size: clamp(13px, 1.1vw, 18px) !important; text-align: center; }
.kiosk-message { text-align: center; color: #fbbf24; min-height: 1.2em; }
.kiosk-qr svg { background: #fff; padding: 12px; border-radius: 8px; width: min(24vw, 360px); height: auto; }
.kiosk input { font-size: clamp(18px, 1.8vw, 28px) !important; }
.kiosk-bar { position: relative; height: 18px; background: #1f2937; border-radius: 9px; min-width: 160px; }
.kiosk-bar span { position: absolute; top: 0; bottom: 0; background: #60a5fa; border-radius: 9px; }
.kiosk-bar i { position: absolute; top: -4px; bottom: -4px; left: 50%; border-left: 2px dashed #f59e0b; }
@media (max-aspect-ratio: 1/1), (max-width: 700px) {
  .kiosk-pair { grid-template-columns: 1fr; gap: 10px; }
  .kiosk-pick { width: min(84vw, 29vh); border-width: 4px; }
  .gradio-container { padding-top: 0 !important; }
  .kiosk-feedback { font-size: 18px; min-height: 0; }
  .kiosk-big button, button.kiosk-big { min-height: 64px !important; }
  .kiosk td, .kiosk th { padding: 3px 5px; font-size: 13px !important; }
}
.kiosk-table { overflow-x: auto; max-width: 100%; }
"""

# Installed once per page: inactivity reset, and arrow keys for a laptop booth.
IDLE_JS = """
if (!window.__kioskIdle) {
  window.__kioskIdle = true;
  const idleMs = IDLE_MS;
  let last = Date.now();
  const touch = () => { last = Date.now(); };
  ['pointerdown', 'keydown', 'touchstart', 'wheel', 'input'].forEach(
    (type) => document.addEventListener(type, touch, {capture: true, passive: true}));
  const visible = (selector) => { const el = document.querySelector(selector); return el && el.offsetParent !== null ? el : null; };
  setInterval(() => {
    if (Date.now() - last < idleMs) return;
    last = Date.now();
    if (visible('#kiosk-start')) return;
    const reset = document.querySelector('#kiosk-reset');
    if (reset) (reset.tagName === 'BUTTON' ? reset : reset.querySelector('button') || reset).click();
  }, 250);
  document.addEventListener('keydown', (e) => {
    if (e.target && ['INPUT', 'TEXTAREA'].includes(e.target.tagName)) return;
    const side = {ArrowLeft: 'left', ArrowRight: 'right'}[e.key];
    const pick = side && visible(`.kiosk-pick[data-side="${side}"]:not([disabled])`);
    if (pick) { pick.click(); e.preventDefault(); }
  });
}
"""

# The pair: a tap sends the side and the round shown; both images lock at once, so a double tap sends one answer.
PAIR_JS = """
element.addEventListener('click', (e) => {
  const button = e.target.closest('button[data-side]');
  if (!button || button.disabled) return;
  const pair = button.closest('.kiosk-pair');
  pair.querySelectorAll('button[data-side]').forEach((b) => { b.disabled = true; });
  trigger('click', {side: button.dataset.side, round: Number(pair.dataset.round)});
});
"""

# Gradio's own dark theme, whatever the visitor's system prefers: a booth has one look.
DARK_JS = "() => { document.body.classList.add('dark'); }"

FULLSCREEN_JS = """
element.addEventListener('click', () => {
  const root = document.documentElement;
  if (document.fullscreenElement) document.exitFullscreen(); else if (root.requestFullscreen) root.requestFullscreen();
});
"""
FULLSCREEN_HTML = '<button class="kiosk-fullscreen" style="float:right" aria-label="Full screen">Full screen</button>'

INTRO = (
    "<p class='kiosk-lead'>Each round shows two colonoscopy images: one real, one made by a generative model "
    "at some point of its training. <b>Tap the one you think is synthetic.</b> Ten rounds, about a minute.</p>"
)


def launch_options(config: AppConfig) -> dict:
    """Keyword arguments for ``launch()`` that the kiosk needs (its CSS hides Gradio's chrome)."""
    return {"css": CSS, "js": DARK_JS, "server_name": config.host, "server_port": config.port, "show_error": True}


def _user_errors(fn):
    """Kiosk and pool errors become a visible, escaped message (gr.Error renders HTML)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (KioskError, PoolsError) as error:
            raise gr.Error(html.escape(str(error))) from error

    return wrapper


def build(config: AppConfig, idle_s: float | None = None) -> gr.Blocks:
    """The kiosk app: the game at ``/`` and the presenter view at ``/presenter``.

    Args:
        config: Where the data, the study database (read-only, for the experts' accuracy) and the
            kiosk database are, and where the kiosk is served (for the QR code).
        idle_s: Seconds without input before the game page returns to its start screen
            (default ``config.kiosk_idle_s``).

    Raises:
        PoolsError: If the pools are missing or unusable (the message says how to build them).
    """
    pools_dir = default_pools_dir(config.data_dir)
    load_pools(pools_dir)  # refuse to start without pools; games reload them, so a rebuild needs no restart
    idle_ms = int(1000 * (idle_s if idle_s is not None else config.kiosk_idle_s))

    def db():
        return open_kiosk_db(config.kiosk_db_path)

    db().close()  # create and migrate the database now, not in two visitors' first requests at once

    with gr.Blocks(title=TITLE, fill_width=True) as app:
        token = gr.State("")
        gr.HTML("", js_on_load=IDLE_JS.replace("IDLE_MS", str(idle_ms)))
        reset = gr.Button("reset", visible="hidden", elem_id="kiosk-reset")
        with gr.Column(elem_id="kiosk-start", elem_classes="kiosk") as start_screen:
            gr.HTML(FULLSCREEN_HTML, js_on_load=FULLSCREEN_JS)
            gr.HTML(f"<h1>{TITLE}</h1>{INTRO}")
            play = gr.Button("▶ Play", variant="primary", elem_classes="kiosk-big")
            board_start = gr.HTML("")
        with gr.Column(visible=False, elem_classes="kiosk") as game_screen:
            header = gr.HTML("")
            pair = gr.HTML("", js_on_load=PAIR_JS)
            feedback = gr.HTML("")
            next_round = gr.Button("Next round ▶", variant="primary", visible=False, elem_classes="kiosk-big")
        with gr.Column(visible=False, elem_classes="kiosk") as result_screen:
            result = gr.HTML("")
            with gr.Row(equal_height=True):
                nickname = gr.Textbox(label="Nickname for the leaderboard (optional, letters, digits, space, - and _)",
                                      max_lines=1, max_length=kiosk.NICKNAME_MAX, scale=3)
                save_name = gr.Button("Add to leaderboard", scale=1, elem_classes="kiosk-big")
            message = gr.HTML("")
            board_result = gr.HTML("")
            again = gr.Button("▶ Play again", variant="primary", elem_classes="kiosk-big")

        screens = (start_screen, game_screen, result_screen)

        def show(screen, values: dict) -> dict:
            return {**{s: gr.update(visible=s is screen) for s in screens}, **values}

        def round_updates(view: RoundView) -> dict:
            return show(game_screen, {
                header: _header_html(view), pair: _pair_html(view, pools_dir), feedback: _feedback_html(view),
                next_round: gr.update(visible=view.answered, value="See your score ▶" if view.last else "Next round ▶")})

        def start_view():
            connection = db()
            try:
                board = _leaderboard_html(kiosk.leaderboard(connection))
            finally:
                connection.close()
            return show(start_screen, {token: "", board_start: board, nickname: "", message: ""})

        @_user_errors
        def on_play():
            pools = load_pools(pools_dir)
            connection = db()
            try:
                game = kiosk.new_game(connection, pools)
                view = kiosk.next_round(connection, game)
            finally:
                connection.close()
            return {**round_updates(view), token: game}

        @_user_errors
        def on_pick(game, evt: gr.EventData):
            data = getattr(evt, "_data", None) or {}
            connection = db()
            try:
                view = kiosk.answer(connection, game, data.get("round"), data.get("side"))
            finally:
                connection.close()
            return round_updates(view)

        @_user_errors
        def on_next(game):
            connection = db()
            try:
                view = kiosk.next_round(connection, game)
                if view is not None:
                    return round_updates(view)
                outcome = kiosk_results.game_result(connection, game, config.db_path)
                board = _leaderboard_html(kiosk.leaderboard(connection))
            finally:
                connection.close()
            return show(result_screen, {result: _result_html(outcome), board_result: board, message: "", nickname: ""})

        @_user_errors
        def on_nickname(game, raw):
            connection = db()
            try:
                try:
                    name = kiosk.set_nickname(connection, game, raw)
                except kiosk.BadNickname as error:
                    return {message: f"<p class='kiosk-message'>{html.escape(str(error))}</p>"}
                board = _leaderboard_html(kiosk.leaderboard(connection))
            finally:
                connection.close()
            text = (f"You are on the leaderboard as <b>{html.escape(name)}</b>." if name
                    else "No nickname: your score stays off the leaderboard.")
            return {message: f"<p class='kiosk-message'>{text}</p>", board_result: board}

        everything = [token, *screens, header, pair, feedback, next_round, board_start, result, nickname, message,
                      board_result]
        fast = {"show_progress": "hidden", "concurrency_limit": 4}
        play.click(on_play, None, everything, api_name=False, **fast)
        again.click(on_play, None, everything, api_name=False, **fast)
        pair.click(on_pick, token, everything, api_name=False, **fast)
        next_round.click(on_next, token, everything, api_name=False, **fast)
        save_name.click(on_nickname, [token, nickname], [message, board_result], api_name=False, **fast)
        nickname.submit(on_nickname, [token, nickname], [message, board_result], api_name=False, **fast)
        reset.click(start_view, None, everything, api_name=False, **fast)
        app.load(start_view, None, everything, api_name=False)

    with app.route("Presenter", PRESENTER_PATH, show_in_navbar=False):
        with gr.Column(elem_classes="kiosk"):
            gr.HTML(f"<h1>{TITLE}: live results</h1>")
            with gr.Row():
                with gr.Column(scale=3):
                    live = gr.HTML("")
                with gr.Column(scale=1, min_width=260):
                    qr = gr.HTML("")
        timer = gr.Timer(PRESENTER_REFRESH_S)

        def on_refresh():
            connection = db()
            try:
                stats = kiosk_results.live_stats(connection, config.db_path, playing_within_s=max(120.0, idle_ms / 1000))
            finally:
                connection.close()
            return _live_html(stats)

        timer.tick(on_refresh, None, live, api_name="live_results", show_progress="hidden")
        app.load(on_refresh, None, live, api_name=False)
        app.load(lambda: _qr_html(config), None, qr, api_name=False)
    return app


# ---------------------------------------------------------------------------------------------
# HTML (every visitor-supplied text is escaped)


def _data_uri(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        logger.error("kiosk image %s unreadable: %s", path, error)
        raise KioskError("an image of this round could not be loaded; press Play to start again") from error
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _header_html(view: RoundView) -> str:
    return f"<div class='kiosk-header'>Round {view.position + 1} of {view.total} · score {view.score}</div>"


def _pair_html(view: RoundView, pools_dir: Path) -> str:
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


def _feedback_html(view: RoundView) -> str:
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


def _result_html(outcome: kiosk_results.GameResult) -> str:
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


def _leaderboard_html(rows: list[dict]) -> str:
    if not rows:
        return "<p class='kiosk-note'>No names on the leaderboard yet: finish a game and add yours.</p>"
    body = "".join(f"<tr><td>{row['rank']}</td><td class='kiosk-nick'>{html.escape(row['nickname'])}</td>"
                   f"<td>{row['score']} of {row['rounds']}</td><td>{row['seconds']:.0f} s</td></tr>" for row in rows)
    return f"<h3 style='text-align:center'>Leaderboard</h3><table class='kiosk-board'>{body}</table>"


def _live_html(stats: kiosk_results.LiveStats) -> str:
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
            f"{_leaderboard_html(list(stats.leaderboard))}"
            "<p class='kiosk-note'>Finished games only. 50 % is chance; lower means the model fools people.</p>")


def kiosk_url(config: AppConfig) -> str | None:
    """The address phones on the same network can open, or None when the kiosk listens on loopback only."""
    host = config.host
    if host in LOOPBACK:
        return None
    if host in ("0.0.0.0", "::", ""):
        host = lan_ip()
        if host is None:
            return None
    return f"http://{'[' + host + ']' if ':' in host else host}:{config.port}/"


def lan_ip() -> str | None:
    """This machine's address on the local network (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.254.254.254", 1))  # a UDP connect only picks the outgoing interface
            address = probe.getsockname()[0]
    except OSError:
        try:
            address = socket.gethostbyname(socket.gethostname())
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _qr_html(config: AppConfig) -> str:
    import segno

    url = kiosk_url(config)
    if url is None:
        return ("<p class='kiosk-note'>Phones cannot reach this kiosk: it listens on this laptop only. "
                "Start it with <code>make kiosk HOST=0.0.0.0</code> to show a QR code here.</p>")
    svg = segno.make_qr(url, error="m").svg_inline(omitsize=True, dark="#000", light="#fff")  # a viewBox: CSS sizes it
    return (f"<div class='kiosk-qr' style='text-align:center'><p><b>Play on your phone</b></p>{svg}"
            f"<p class='kiosk-note'>{html.escape(url)} (same Wi-Fi)</p></div>")
