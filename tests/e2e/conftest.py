"""Browser fixtures: the Debian Chromium driven by Playwright, and the app served on a free local port.

Chromium comes from the system (``apt-get install chromium``), never from ``playwright install``:
that downloads a browser, and these machines have no network beyond package registries.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from app import create_app
from appconfig import AppConfig

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium; skipped without one, unless ``POLYP_REQUIRE_E2E=1`` (set by CI) makes that a failure."""
    executable = shutil.which("chromium")
    if executable is None:
        reason = "browser tests need Chromium on PATH: apt-get install -y chromium"
        if os.environ.get("POLYP_REQUIRE_E2E") == "1":
            pytest.fail(f"POLYP_REQUIRE_E2E=1 but Chromium is missing; {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page in its own browser context, so tests share no cookies or storage."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def app_config(tmp_path_factory) -> AppConfig:
    """The embedded demo checkpoints, as a user meets them; data and database under tmp."""
    data = tmp_path_factory.mktemp("e2e-data")
    return AppConfig(data_dir=data, checkpoints_dir=data / "checkpoints", db_path=data / "study.db", device="cpu")


@pytest.fixture(scope="module")
def served_app(app_config):
    """The whole app served on a free local port; yields its URL."""
    app = create_app(app_config).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=_free_port(), show_error=True, quiet=True)
    try:
        yield app.local_url
    finally:
        app.close()


def _free_port() -> int:
    # The OS picks a free port; it is released just before Gradio binds it, a race we accept in tests.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


DOCS = Path(__file__).resolve().parents[2] / "docs"


def docs_screenshot(page, name: str) -> Path:
    """A screenshot of the viewport, written into docs/ only with ``POLYP_SCREENSHOTS=1`` (else into a
    temporary folder), so that a test run leaves the checkout as it was; returns the file."""
    folder = DOCS if os.environ.get("POLYP_SCREENSHOTS") == "1" else Path(tempfile.mkdtemp(prefix="polyp-screenshot-"))
    page.screenshot(path=str(folder / name))
    return folder / name


def sign_in(page, user: str, password: str, timeout_ms: int) -> None:
    """Sign in with the account bar's form and wait until the page says who is signed in."""
    from playwright.sync_api import expect  # only the browser tests need Playwright

    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {user}")).to_be_visible(timeout=timeout_ms)
