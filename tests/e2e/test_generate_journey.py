"""A user's journey through the Generate tab in a real Chromium, located by what the user sees."""

from __future__ import annotations

import re

import pytest

from database.connection import connect
from database.images import count_images
from review import studies
from tests.e2e.conftest import sign_in
from tests.review.conftest import ADMIN_PASSWORD

pytestmark = pytest.mark.e2e

GENERATION_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def admin(app_config):
    with connect(app_config.db_path) as db:
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)


def test_generate_two_images_from_the_latest_demo_checkpoint(page, served_app, app_config, admin, tmp_path):
    from playwright.sync_api import expect

    page.goto(served_app)
    # Generating is for admins: before sign-in the tab is not there at all.
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(page.get_by_role("tab", name="Generate")).to_have_count(0)
    sign_in(page, "admin", ADMIN_PASSWORD, GENERATION_TIMEOUT_MS)
    page.get_by_role("tab", name="Generate").click()
    generate = page.get_by_role("button", name="Generate", exact=True)
    expect(generate, "the Generate tab should appear once on the page").to_have_count(1)

    # 1. Pick the latest demo checkpoint by its visible text.
    page.get_by_role("combobox", name="Checkpoint").click()
    page.get_by_role("option", name=re.compile(r"step 8000 .*phantom demo")).click()
    expect(page.get_by_role("combobox", name="Checkpoint")).to_have_value(re.compile(r"step 8000"))

    # 2. Sliders: type into the number box that Gradio puts beside each slider, named after its label.
    _set_slider(page, "Number of images", 2)
    _set_slider(page, "Denoising steps", 10)

    # 3. Generate and wait for the gallery to show both images.
    generate.click()
    thumbnails = page.get_by_role("button", name=re.compile(r"^Thumbnail \d+ of \d+$"))
    expect(thumbnails).to_have_count(2, timeout=GENERATION_TIMEOUT_MS)
    expect(thumbnails.locator("img")).to_have_count(2)

    # 4. Provenance: one row per image, from checkpoint step 8000, seeds 0 and 1.
    table = page.get_by_role("grid", name=re.compile(r"^Provenance"))
    rows = table.get_by_role("row").filter(has=page.get_by_role("gridcell"))
    expect(rows).to_have_count(2)
    header = [cell.strip() for cell in table.get_by_role("columnheader").all_inner_texts()]
    cells = [dict(zip(header, (c.strip() for c in row.get_by_role("gridcell").all_inner_texts()))) for row in rows.all()]
    assert [(cell["step"], cell["seed"], cell["steps"]) for cell in cells] == [("8000", "0", "10"), ("8000", "1", "10")], cells

    page.screenshot(path=tmp_path / "generate.png", full_page=True)
    with connect(app_config.db_path) as db:
        assert count_images(db)["synthetic"] == {"AD": 2, "NonAD": 0}


def _set_slider(page, label: str, value: int) -> None:
    from playwright.sync_api import expect

    number = page.get_by_role("spinbutton", name=label)
    number.fill(str(value))
    number.press("Enter")
    expect(page.get_by_role("slider", name=label)).to_have_value(str(value))
