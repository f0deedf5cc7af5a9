"""Analysis journey in a real Chromium: an admin analyses a simulated pair study, switches checkpoint panel and
extractor, hovers an embedding point to see its image and ratings, and downloads the HTML report."""

from __future__ import annotations

import glob
import re
import tempfile
import time

import pytest

from tests.e2e.conftest import sign_in
from tests.evaluation.study.simulated_study import make_simulated_study
from tests.review.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def seeded(app_config, tmp_path_factory):
    return make_simulated_study(app_config, tmp_path_factory.mktemp("analysis-images"))


def test_admin_analyses_a_simulated_study_and_downloads_the_report(page, served_app, seeded):
    from playwright.sync_api import expect

    page.goto(served_app)
    sign_in(page, "admin", ADMIN_PASSWORD, TIMEOUT_MS)
    page.get_by_role("tab", name="Analysis (admin)").click()

    study = page.get_by_role("combobox", name="Study")
    expect(study).to_have_value(re.compile(r"Simulated pair .*\[SIMULATED\]"), timeout=TIMEOUT_MS)
    page.get_by_role("button", name="Analyse").click()
    expect(page.get_by_text("SIMULATED PANEL: these ratings come from a seeded simulation")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text("Two-alternative accuracy (synthetic image found)")).to_be_visible(timeout=TIMEOUT_MS)

    # One checkpoint's panel of the joint embedding.
    page.get_by_role("tab", name="Embedding").click()
    plot = page.locator("#analysis-embedding")
    expect(plot.locator(".annotation-text")).to_have_count(3, timeout=TIMEOUT_MS)  # a panel per checkpoint
    page.get_by_role("combobox", name="Checkpoint panel").click()
    page.get_by_role("option", name="checkpoint-200").click()
    expect(plot.locator(".annotation-text")).to_have_count(1, timeout=TIMEOUT_MS)
    expect(plot.locator(".annotation-text")).to_have_text("checkpoint-200")

    # Hovering a synthetic point shows its image and its ratings beside the plot.
    hover = page.locator("#analysis-hover")
    plot.scroll_into_view_if_needed()  # below the fold at 1400x1000 under the demo panel and the next-step line
    shown = _hover_until(page, plot.locator("path.point"), hover.locator("p"), re.compile(r"synthetic (AD|NonAD) · checkpoint-200: "))
    assert re.search(r"\d+ ratings?: judged real \d+%|not rated", shown), shown
    expect(hover.locator("img")).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))

    # Another extractor: new features and embedding; no Inception metrics were computed, and the banner says so.
    page.get_by_role("combobox", name="Feature extractor").click()
    page.get_by_role("option", name="inception").click()
    page.get_by_role("button", name="Analyse").click()
    expect(page.get_by_text("no metric results stored for the inception extractor")).to_be_visible(timeout=TIMEOUT_MS)
    expect(plot.locator(".gtitle")).to_contain_text("(inception)", timeout=TIMEOUT_MS)

    # The self-contained report.
    page.get_by_role("tab", name="Export").click()
    exports_before = set(glob.glob(f"{tempfile.gettempdir()}/polyp-analysis-*"))
    page.get_by_role("button", name="Write CSVs and HTML report").click()
    link = page.locator('a[href$="-report.html"]')
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    with page.expect_download() as download:
        link.click()
    text = open(download.value.path(), encoding="utf-8").read()
    assert "SIMULATED PANEL" in text and "Bradley-Terry" in text and "plotly_hover" in text
    deadline = time.monotonic() + 10  # the temporary copies go once Gradio has cached what it serves
    while set(glob.glob(f"{tempfile.gettempdir()}/polyp-analysis-*")) - exports_before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(glob.glob(f"{tempfile.gettempdir()}/polyp-analysis-*")) - exports_before


def _hover_until(page, points, text, pattern, attempts: int = 40) -> str:
    """Move the mouse onto points (last first: synthetic traces are drawn last) until ``text`` matches."""
    for i in range(min(attempts, points.count())):
        box = points.nth(points.count() - 1 - i).bounding_box()
        if box is None:
            continue
        page.mouse.move(5, 5)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
        page.wait_for_timeout(300)
        if pattern.search(text.text_content() or ""):
            return text.text_content()
    raise AssertionError(f"no hover text matching {pattern.pattern!r}; last: {text.text_content()!r}")
