"""The admin's screens in a real Chromium at 1280x720: the Studies tab filled on sign-in with a line saying what to
do next, the created study chosen, full invitation links copied with one click and re-issued, the blinding audit
as a verdict and a table in plain words; each admin tab opens with its next step. Screenshots go to docs/ with POLYP_SCREENSHOTS=1."""

from __future__ import annotations

import re

import pytest

from appconfig import AppConfig
from database.connection import connect
from review import studies
from tests.e2e.conftest import docs_screenshot, sign_in
from tests.review.conftest import ADMIN_PASSWORD, add_images

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 30_000
PUBLIC_URL = "https://review.example.org"


@pytest.fixture(scope="module")
def app_config(tmp_path_factory) -> AppConfig:
    """The embedded demo checkpoints, registered phantom frames as the real images, links to ``PUBLIC_URL``."""
    data = tmp_path_factory.mktemp("admin-screens")
    config = AppConfig(data_dir=data, checkpoints_dir=data / "checkpoints", db_path=data / "study.db", device="cpu",
                       public_url=PUBLIC_URL)
    with connect(config.db_path) as db:
        add_images(db, data / "images", n_real=8, n_synthetic=1, checkpoints=1)
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    return config


@pytest.fixture
def small_page(browser, served_app):
    """A laptop-sized page (1280x720) that may read what the page copies to the clipboard."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served_app.rstrip("/"))
    try:
        yield context.new_page()
    finally:
        context.close()


def test_admin_creates_a_study_copies_links_reissues_one_and_reads_the_audit(small_page, served_app):
    from playwright.sync_api import expect

    page = small_page
    page.goto(served_app)
    sign_in(page, "admin", ADMIN_PASSWORD, TIMEOUT_MS)
    page.get_by_role("tab", name="Studies (admin)").click()

    # Filled on sign-in, without pressing Refresh: the next step, and the New study form open on its checkpoints.
    expect(page.locator("#studies-next")).to_contain_text("What to do next: open New study", timeout=TIMEOUT_MS)
    newest = page.get_by_label(re.compile(r"step 8000 .*phantom demo"))
    expect(newest).to_be_visible(timeout=TIMEOUT_MS)
    _shot(page, "studies-open.png")
    page.get_by_label("Study name").fill("laptop pilot")
    newest.check()
    page.get_by_label("Synthetic images per checkpoint and pathology").fill("1")
    page.get_by_label("Presentation size (px)").fill("64")
    page.get_by_label("Raters: one per line").fill("erin\nfrank")
    page.get_by_role("button", name="Create study").click()

    # Full links, one Copy button each; the study is chosen below; the form has closed.
    copy_erin = page.get_by_role("button", name="Copy the link for erin")
    expect(copy_erin).to_be_visible(timeout=180_000)
    links = page.locator("#studies-invitations code")
    expect(links).to_have_count(2)
    first = links.first.inner_text()
    assert re.fullmatch(re.escape(PUBLIC_URL) + r"/\?invite=[A-Za-z0-9_-]{20,}", first), first
    copy_erin.click()
    expect(copy_erin).to_have_text("Copied")
    assert page.evaluate("() => navigator.clipboard.readText()") == first
    expect(page.get_by_role("combobox", name="Study id")).to_have_value(re.compile(r"^#\d+ laptop pilot \(single, draft\)$"))
    expect(page.get_by_label("Study name")).to_be_hidden()
    expect(page.locator("#studies-next")).to_contain_text("is a draft: choose it under Study id, press Run blinding audit")
    page.locator("#studies-invitations").scroll_into_view_if_needed()
    _shot(page, "studies-tab.png")

    # A new link for one rater, for the chosen study.
    page.get_by_label("Rater", exact=True).fill("erin")
    page.get_by_role("button", name="Re-issue invitation for the chosen study").click()
    expect(page.get_by_text(re.compile("New link for erin, study #\\d+"))).to_be_visible(timeout=TIMEOUT_MS)
    expect(links).to_have_count(1)
    assert links.first.inner_text() != first and links.first.inner_text().startswith(f"{PUBLIC_URL}/?invite=")

    # The audit: a verdict in words and a row per cue, explained; no raw JSON.
    page.get_by_role("button", name="Run blinding audit").click()
    verdict = page.locator("#studies-audit-verdict")
    expect(verdict).to_contain_text(re.compile(r"(Passed|Failed): "), timeout=120_000)
    expect(verdict).to_contain_text("real and 2 synthetic images")
    audit = page.get_by_role("grid", name=re.compile("^Blinding audit per cue"))
    expect(audit.get_by_role("gridcell", name="File size", exact=True)).to_be_visible()
    expect(audit.get_by_role("gridcell", name=re.compile("bytes the file takes per pixel"))).to_be_visible()
    assert "auc_presented" not in page.content()
    verdict.evaluate("element => element.scrollIntoView({block: 'start'})")
    _shot(page, "audit.png")


@pytest.mark.parametrize("tab, line", [
    ("Evaluate (admin)", "What to do next: press Compute / refresh metrics"),
    ("Analysis (admin)", "What to do next: choose a study"),
    ("Generate", "What to do next: pick a checkpoint, a pathology and how many images"),
])
def test_every_admin_tab_opens_with_its_next_step(small_page, served_app, tab, line):
    from playwright.sync_api import expect

    page = small_page
    page.goto(served_app)
    sign_in(page, "admin", ADMIN_PASSWORD, TIMEOUT_MS)
    page.get_by_role("tab", name=tab).click()
    expect(page.get_by_text(line)).to_be_in_viewport(timeout=TIMEOUT_MS)


def _shot(page, name: str) -> None:
    """A screenshot of the viewport (what a 1280x720 laptop shows), into docs/ with POLYP_SCREENSHOTS=1."""
    docs_screenshot(page, name)
