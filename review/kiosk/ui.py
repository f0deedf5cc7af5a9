"""The conference kiosk: "spot the synthetic polyp", a Gradio app of its own (not a tab of the workbench).

Launched alone (``python app.py --kiosk``), because a booth must show nothing else: no sign-in, no
admin controls, no Gradio footer. Two pages:

* ``/``: the game. Start screen (Play, leaderboard), ten rounds (tap the image you think is
  synthetic; the answer is revealed at once; Next), then the result (score against chance, other
  visitors, the experts) with an optional nickname for the leaderboard, and Play again. After
  ``idle_s`` seconds without a touch the page returns to the start screen by itself.
* ``/presenter``: live aggregates per checkpoint for a second screen, refreshed every few seconds,
  with a QR code of the kiosk's address on the local network.

Callbacks call ``review.kiosk`` and return dicts keyed by component; the screens' HTML comes from
``review.kiosk.pages``. Every text that came from a visitor is HTML-escaped.
"""

from __future__ import annotations

import functools
import html
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from appconfig import AppConfig
from database.kiosk import connect_kiosk
from review.headers import SecurityHeaders
from review.kiosk import game as kiosk
from review.kiosk import pages
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
    """Keyword arguments for ``launch()`` that the kiosk needs: its CSS hides Gradio's chrome; the same
    security headers as the workbench (``review.headers``) and no run history in visitors' browsers."""
    return {"css": CSS, "js": DARK_JS, "server_name": config.host, "server_port": config.port, "show_error": True,
            "run_history": False, "app_kwargs": {"middleware": [Middleware(SecurityHeaders)]}}


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
    with connect_kiosk(config.kiosk_db_path):
        pass  # create and migrate the database now, not in two visitors' first requests at once

    with gr.Blocks(title=TITLE, fill_width=True) as app:
        screens = _game_layout(idle_ms)
        on = _GameEvents(config, pools_dir, screens)
        everything = screens.outputs()
        fast = {"show_progress": "hidden", "concurrency_limit": 4}
        screens.play.click(on.play, None, everything, api_name=False, **fast)
        screens.again.click(on.play, None, everything, api_name=False, **fast)
        screens.pair.click(on.pick, screens.token, everything, api_name=False, **fast)
        screens.next_round.click(on.next_round, screens.token, everything, api_name=False, **fast)
        naming = {"inputs": [screens.token, screens.nickname], "outputs": [screens.message, screens.board_result]}
        screens.save_name.click(on.nickname, **naming, api_name=False, **fast)
        screens.nickname.submit(on.nickname, **naming, api_name=False, **fast)
        screens.reset.click(on.start_view, None, everything, api_name=False, **fast)
        app.load(on.start_view, None, everything, api_name=False)

    with app.route("Presenter", PRESENTER_PATH, show_in_navbar=False):
        _presenter_page(app, config, playing_within_s=max(120.0, idle_ms / 1000))
    return app


@dataclass(frozen=True)
class _Screens:
    """The game page: the visitor's game token and the start, round and result screens."""

    token: gr.State
    reset: gr.Button
    start: gr.Column
    play: gr.Button
    board_start: gr.HTML
    game: gr.Column
    header: gr.HTML
    pair: gr.HTML
    feedback: gr.HTML
    next_round: gr.Button
    result_screen: gr.Column
    result: gr.HTML
    nickname: gr.Textbox
    save_name: gr.Button
    message: gr.HTML
    board_result: gr.HTML
    again: gr.Button

    def outputs(self) -> list:
        """Every component that starting, playing or finishing a game updates."""
        return [self.token, self.start, self.game, self.result_screen, self.header, self.pair, self.feedback,
                self.next_round, self.board_start, self.result, self.nickname, self.message, self.board_result]


def _game_layout(idle_ms: int) -> _Screens:
    token = gr.State("")
    gr.HTML("", js_on_load=IDLE_JS.replace("IDLE_MS", str(idle_ms)))
    reset = gr.Button("reset", visible="hidden", elem_id="kiosk-reset")
    with gr.Column(elem_id="kiosk-start", elem_classes="kiosk") as start:
        gr.HTML(FULLSCREEN_HTML, js_on_load=FULLSCREEN_JS)
        gr.HTML(f"<h1>{TITLE}</h1>{INTRO}")
        play = gr.Button("▶ Play", variant="primary", elem_classes="kiosk-big")
        board_start = gr.HTML("")
    with gr.Column(visible=False, elem_classes="kiosk") as game:
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
    return _Screens(token, reset, start, play, board_start, game, header, pair, feedback, next_round, result_screen,
                    result, nickname, save_name, message, board_result, again)


class _GameEvents:
    """The game page's callbacks: each opens the kiosk database, calls ``review.kiosk`` and returns the screens' updates."""

    def __init__(self, config: AppConfig, pools_dir: Path, screens: _Screens):
        self.config, self.pools_dir, self.screens = config, pools_dir, screens

    def _db(self):
        return connect_kiosk(self.config.kiosk_db_path)

    def _show(self, screen, values: dict) -> dict:
        s = self.screens
        return {**{each: gr.update(visible=each is screen) for each in (s.start, s.game, s.result_screen)}, **values}

    def _round(self, view: RoundView) -> dict:
        s = self.screens
        return self._show(s.game, {
            s.header: pages.header_html(view), s.pair: pages.pair_html(view, self.pools_dir),
            s.feedback: pages.feedback_html(view),
            s.next_round: gr.update(visible=view.answered, value="See your score ▶" if view.last else "Next round ▶")})

    def start_view(self):
        s = self.screens
        with self._db() as db:
            board = pages.leaderboard_html(kiosk.leaderboard(db))
        return self._show(s.start, {s.token: "", s.board_start: board, s.nickname: "", s.message: ""})

    @_user_errors
    def play(self):
        pools = load_pools(self.pools_dir)
        with self._db() as db:
            game = kiosk.new_game(db, pools)
            view = kiosk.next_round(db, game)
        return {**self._round(view), self.screens.token: game}

    @_user_errors
    def pick(self, game, evt: gr.EventData):
        data = getattr(evt, "_data", None) or {}
        with self._db() as db:
            view = kiosk.answer(db, game, data.get("round"), data.get("side"))
        return self._round(view)

    @_user_errors
    def next_round(self, game):
        s = self.screens
        with self._db() as db:
            view = kiosk.next_round(db, game)
            if view is not None:
                return self._round(view)
            outcome = kiosk_results.game_result(db, game, self.config.db_path)
            board = pages.leaderboard_html(kiosk.leaderboard(db))
        return self._show(s.result_screen, {s.result: pages.result_html(outcome), s.board_result: board, s.message: "",
                                            s.nickname: ""})

    @_user_errors
    def nickname(self, game, raw):
        s = self.screens
        with self._db() as db:
            try:
                name = kiosk.set_nickname(db, game, raw)
            except kiosk.BadNickname as error:
                return {s.message: f"<p class='kiosk-message'>{html.escape(str(error))}</p>"}
            board = pages.leaderboard_html(kiosk.leaderboard(db))
        text = (f"You are on the leaderboard as <b>{html.escape(name)}</b>." if name
                else "No nickname: your score stays off the leaderboard.")
        return {s.message: f"<p class='kiosk-message'>{text}</p>", s.board_result: board}


def _presenter_page(app: gr.Blocks, config: AppConfig, playing_within_s: float) -> None:
    """The presenter view: live results, refreshed every ``PRESENTER_REFRESH_S`` (``/live_results``), and the QR code."""
    with gr.Column(elem_classes="kiosk"):
        gr.HTML(f"<h1>{TITLE}: live results</h1>")
        with gr.Row():
            with gr.Column(scale=3):
                live = gr.HTML("")
            with gr.Column(scale=1, min_width=260):
                qr = gr.HTML("")
    timer = gr.Timer(PRESENTER_REFRESH_S)

    def on_refresh():
        with connect_kiosk(config.kiosk_db_path) as db:
            stats = kiosk_results.live_stats(db, config.db_path, playing_within_s=playing_within_s)
        return pages.live_html(stats)

    timer.tick(on_refresh, None, live, api_name="live_results", show_progress="hidden")
    app.load(on_refresh, None, live, api_name=False)
    app.load(lambda: _qr_html(config), None, qr, api_name=False)


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
