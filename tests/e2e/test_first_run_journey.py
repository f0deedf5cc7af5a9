"""The first run in a real Chromium at 1280x720: the server prints a setup link, its owner creates the admin in
the browser and starts the demo project, whose progress a reload finds again. Screenshots go to docs/ with POLYP_SCREENSHOTS=1."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading

import pytest

from tests.conftest import REPO
from tests.e2e.conftest import _free_port, docs_screenshot

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 60_000
START_S = 240  # importing the whole stack on a busy 2-core machine
PASSWORD = "owner-password-1"
SETUP_LINE = re.compile(r"PolypTuring first run: open (http://\S+/\?setup=(\S+)) to create the admin account")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python app.py`` on an empty data folder, as ``make run`` starts it; yields (base URL, setup URL, token)."""
    data = tmp_path_factory.mktemp("first-run")
    port = _free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    process = subprocess.Popen([sys.executable, "app.py", "--data-dir", str(data), "--port", str(port), "--device", "cpu"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        found, running = None, False
        while not (found and running):
            line = lines.get(timeout=START_S)  # the console output, line by line
            found = found or SETUP_LINE.search(line)
            running = running or "Running on local URL" in line
        yield f"http://127.0.0.1:{port}/", found.group(1), found.group(2)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _context(browser):
    return browser.new_context(viewport={"width": 1280, "height": 720})


def test_a_first_run_creates_the_admin_in_the_browser_and_starts_the_demo_project(browser, server):
    from playwright.sync_api import expect

    base, link, token = server
    context = _context(browser)
    page = context.new_page()
    page.goto(base)
    expect(page.get_by_text("First run: no admin account exists yet")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_label("Admin username")).to_have_count(0)  # no form without the token

    page.goto(link)
    expect(page.get_by_label("Admin username")).to_be_visible(timeout=TIMEOUT_MS)
    page.wait_for_function("() => !window.location.search.includes('setup=')", timeout=TIMEOUT_MS)
    assert token not in page.url
    expect(page.get_by_text("Not signed in.")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text(re.compile(r"processing \|"))).to_have_count(0, timeout=TIMEOUT_MS)
    docs_screenshot(page, "first-run-setup.png")

    page.get_by_label("Admin username").fill("alice")
    page.get_by_label("Password (at least 8 characters)").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create admin and sign in").click()
    expect(page.get_by_text("Signed in as alice (admin)")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("tab", name="Studies (admin)")).to_be_visible()
    expect(page.get_by_label("Admin username")).to_have_count(0)
    stored = page.evaluate("() => JSON.stringify([window.localStorage, window.sessionStorage]) + document.cookie")
    assert token not in stored and token not in page.url

    page.get_by_role("button", name="Build demo project").click()
    expect(page.get_by_text("Building the demo project")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Building…")).to_be_disabled()
    # The panel polls the server: the build moves past its first step without a click.
    expect(page.get_by_text(re.compile(r"Building the demo project: [1-9]\d?%"))).to_be_visible(timeout=180_000)
    docs_screenshot(page, "demo-project-progress.png")

    page.reload()  # the progress is the server's: a reload finds the build again
    expect(page.get_by_text("Signed in as alice (admin)")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("Building the demo project")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Building…")).to_be_disabled()

    spent = context.new_page()  # the link works once
    spent.goto(link)
    expect(spent.get_by_text("this setup link is not valid")).to_be_visible(timeout=TIMEOUT_MS)
    expect(spent.get_by_label("Admin username")).to_have_count(0)
    expect(spent.get_by_text("First run: no admin account exists yet")).to_have_count(0)
    context.close()
