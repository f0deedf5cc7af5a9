"""The conference kiosk in a real Chromium: a full game by tapping, the leaderboard, the inactivity reset, the presenter.

With ``POLYP_SCREENSHOTS=1`` the last test also builds the embedded demo's pools (about half a
minute on a CPU) and writes ``docs/kiosk-1920x1080.png`` and ``docs/kiosk-phone.png``.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from appconfig import AppConfig
from database import image_sets
from database import images as image_store
from database import kiosk as kiosk_store
from database.connection import open_db
from review.kiosk import game as kiosk
from review.kiosk import ui as kiosk_ui
from review.kiosk.pools import default_pools_dir, write_pools
from tests.conftest import REPO
from tests.e2e.conftest import _free_port
from tests.review.conftest import add_images

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 20_000
IDLE_S = 2.0


def _serve(config: AppConfig, idle_s: float):
    app = kiosk_ui.build(config, idle_s=idle_s).queue()
    app.launch(prevent_thread_lock=True, quiet=True, **{**kiosk_ui.launch_options(config), "server_name": "127.0.0.1"})
    return app


@pytest.fixture(scope="module")
def kiosk_app(tmp_path_factory):
    """Phantom frames registered as real, fake checkpoints' synthetic images, small pools; the kiosk on a free port."""
    data = tmp_path_factory.mktemp("kiosk-data")
    config = AppConfig(data_dir=data, checkpoints_dir=data / "checkpoints", db_path=data / "study.db", device="cpu",
                       port=_free_port(), host="0.0.0.0")  # the QR code shows the LAN address; served on loopback
    db = open_db(config.db_path)
    add_images(db, tmp_path_factory.mktemp("kiosk-images"), n_real=6, n_synthetic=3, checkpoints=2, real_sets=("demo",))
    write_pools(default_pools_dir(data), image_store.list_images(db, source="real", image_sets=["demo"]),
                image_store.list_images(db, source="synthetic"), image_sets=[image_sets.get_set(db, "demo")])
    db.close()
    app = _serve(config, IDLE_S)
    try:
        yield config, f"http://127.0.0.1:{config.port}/"
    finally:
        app.close()


@pytest.fixture
def kiosk_page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))  # injected script ran
    try:
        yield page
    finally:
        context.close()


def _latest_game(config) -> tuple[dict, list[dict]]:
    with kiosk_store.connect_kiosk(config.kiosk_db_path) as db:
        game = next(db.query("SELECT * FROM games ORDER BY id DESC LIMIT 1"))
        return game, kiosk_store.game_rounds(db, game["id"])


def _wait_round(page, position: int, state: str) -> None:
    page.locator(f".kiosk-pair[data-round='{position}'][data-state='{state}']").wait_for(timeout=TIMEOUT_MS)


def test_a_visitor_plays_ten_rounds_and_sees_the_score_and_the_leaderboard(kiosk_page, kiosk_app):
    from playwright.sync_api import expect

    config, url = kiosk_app
    page = kiosk_page
    response = page.goto(url)
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]  # the game runs under the CSP
    assert response.headers["referrer-policy"] == "no-referrer"
    page.get_by_role("button", name="▶ Play").click()
    _wait_round(page, 0, "open")
    _, rounds = _latest_game(config)
    picks = [(r["synthetic_side"] if r["position"] % 3 else _other(r["synthetic_side"])) for r in rounds]
    expected = sum(pick == r["synthetic_side"] for pick, r in zip(picks, rounds))
    for position, pick in enumerate(picks):
        _wait_round(page, position, "open")
        expect(page.get_by_text(f"Round {position + 1} of 10")).to_be_visible()
        image = page.get_by_role("button", name=f"{pick.capitalize()} image")
        if position == 1:
            image.dblclick()  # a rapid double tap: one answer
            page.get_by_role("button", name=f"{_other(pick).capitalize()} image").click(force=True)
        else:
            image.click()
        _wait_round(page, position, "answered")
        verdict = "Correct" if pick == rounds[position]["synthetic_side"] else "Fooled you"
        expect(page.get_by_text(verdict)).to_be_visible()
        page.get_by_role("button", name="See your score ▶" if position == 9 else "Next round ▶").click()

    expect(page.get_by_text(f"{expected} of 10 spotted")).to_be_visible(timeout=TIMEOUT_MS)
    game, rounds = _latest_game(config)
    assert game["score"] == expected and [r["choice"] for r in rounds] == picks  # the double tap stored its first pick
    expect(page.get_by_text("one-sided binomial test")).to_be_visible()

    nickname = page.get_by_label(re.compile("Nickname for the leaderboard"))
    nickname.fill("<img src=x onerror=alert(1)>")
    page.get_by_role("button", name="Add to leaderboard").click()
    expect(page.get_by_text("may not use U+003C")).to_be_visible(timeout=TIMEOUT_MS)
    nickname.fill("Dr Ada_1")
    page.get_by_role("button", name="Add to leaderboard").click()
    expect(page.get_by_text("You are on the leaderboard as Dr Ada_1")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator(".kiosk-board").get_by_text("Dr Ada_1")).to_be_visible()

    # Markup that reached the database some other way is still shown as text, never as HTML.
    db = kiosk_store.open_kiosk_db(config.kiosk_db_path)
    db.execute("UPDATE games SET nickname = ? WHERE id = ?", ["<b id=pwn>x</b><i>y</i>", game["id"]])
    db.conn.commit()
    db.close()
    page.get_by_role("button", name="▶ Play again").click()
    _wait_round(page, 0, "open")
    page.reload()
    expect(page.locator(".kiosk-board").get_by_text("<b id=pwn>x</b><i>y</i>")).to_be_visible(timeout=TIMEOUT_MS)
    assert page.locator("#pwn").count() == 0 and page.locator(".kiosk-board i").count() == 0


def test_the_kiosk_returns_to_its_start_screen_after_inactivity(kiosk_page, kiosk_app):
    from playwright.sync_api import expect

    config, url = kiosk_app
    page = kiosk_page
    page.goto(url)
    page.get_by_role("button", name="▶ Play").click()
    _wait_round(page, 0, "open")
    page.get_by_role("button", name="Left image").click()
    _wait_round(page, 0, "answered")
    started = time.monotonic()
    expect(page.get_by_role("button", name="▶ Play")).to_be_visible(timeout=TIMEOUT_MS)
    assert time.monotonic() - started >= IDLE_S - 0.5
    expect(page.locator(".kiosk-pair")).to_be_hidden()
    game, _ = _latest_game(config)
    assert game["finished_at"] is None  # abandoned: never finished, counted nowhere


def test_the_presenter_view_shows_live_results_and_a_qr_code(kiosk_page, kiosk_app):
    from playwright.sync_api import expect

    config, url = kiosk_app
    page = kiosk_page
    page.goto(url + "presenter")
    expect(page.get_by_text("live results")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator(".kiosk-qr svg, .kiosk-note").first).to_be_visible()
    if page.locator(".kiosk-qr svg").count():
        expect(page.get_by_text(re.compile(rf"http://[\d.]+:{config.port}/"))).to_be_visible()
    expect(page.get_by_text("Games finished")).to_be_visible()
    expect(page.locator("footer")).to_be_hidden()


@pytest.mark.skipif(os.environ.get("POLYP_SCREENSHOTS") != "1", reason="set POLYP_SCREENSHOTS=1 to rewrite docs/kiosk-*.png")
def test_screenshots_of_the_embedded_demo(browser, tmp_path):
    """The embedded demo's pools (built here, on the CPU), at 1920x1080 and at a phone's size."""
    data = tmp_path / "demo"
    assert kiosk.main(["--data-dir", str(data), "pools", "--per-label", "6", "--device", "cpu"]) == 0
    config = AppConfig(data_dir=data, checkpoints_dir=data / "checkpoints", db_path=data / "polypturing.db",
                       device="cpu", port=_free_port())
    app = _serve(config, 90)
    url = f"http://127.0.0.1:{config.port}/"
    try:
        for name, viewport, scale in (("kiosk-1920x1080.png", {"width": 1920, "height": 1080}, 1),
                                      ("kiosk-phone.png", {"width": 390, "height": 844}, 2)):
            context = browser.new_context(viewport=viewport, device_scale_factor=scale, has_touch=scale > 1)
            page = context.new_page()
            page.goto(url)
            page.get_by_role("button", name="▶ Play").click()
            _wait_round(page, 0, "open")
            page.get_by_role("button", name="Left image").click()
            _wait_round(page, 0, "answered")
            page.wait_for_timeout(300)
            page.screenshot(path=str(REPO / "docs" / name))
            context.close()
    finally:
        app.close()
    assert Path(REPO / "docs" / "kiosk-phone.png").stat().st_size > 10_000


def _other(side: str) -> str:
    return "left" if side == "right" else "right"
