"""The rater's screen in a real Chromium at 1280x720, a laptop: an invitation, the profile once, then
image, questions and Submit all inside the viewport; an early Enter; keys typed during a submit; the
next image preloaded; a reload that resumes; and never an admin tab.

``POLYP_SCREENSHOTS=1`` rewrites ``docs/rate-1280x720.png`` and ``docs/rate-incomplete-submit.png``.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from database import studies as study_store
from database.connection import connect, open_db
from review import studies, study_setup
from review.design import StudyDesign
from tests.review.conftest import ADMIN_PASSWORD, add_images, add_phantom_masks

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_MS = 30_000
LAPTOP = {"width": 1280, "height": 720}
ADMIN_TABS = ("Studies (admin)", "Evaluate (admin)", "Analysis (admin)", "Generate")
SINGLE_QUESTIONS = ("Real or synthetic?", "Confidence", "Realism", "Pathology", "Pathology confidence")


@pytest.fixture(scope="module")
def seeded(app_config, tmp_path_factory):
    """Open studies for 'ivy', who has invitations and no password: single, pair, and single with mask outlines."""
    db = open_db(app_config.db_path)
    folder = tmp_path_factory.mktemp("rater-images")
    ids = add_images(db, folder, n_real=8, n_synthetic=3)
    add_phantom_masks(db, folder / "masks")
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    made = {}
    for name, mode, extra in (("single", "single", {"real_per_label": 4, "repeats": 1, "attention_checks": 1}),
                              ("pair", "pair", {}), ("mask", "single", {"real_per_label": 2, "show_masks": True})):
        design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=2, size=256, seed=3, **extra)
        made[name] = study_setup.create_study(db, app_config.data_dir, admin, f"{name} laptop study", design,
                                              [study_setup.RaterSpec("ivy")])
        study_store.set_study_audit(db, made[name].study_id, {"passed": True, "leaks": []})
        study_setup.open_study(db, admin, made[name].study_id)
    db.close()
    return made


@pytest.fixture
def laptop(browser):
    context = browser.new_context(viewport=LAPTOP)
    try:
        yield context.new_page()
    finally:
        context.close()


def _inside_viewport(page, locator, name: str) -> dict:
    box = locator.bounding_box()
    assert box is not None, f"{name} is not on screen"
    assert box["x"] >= 0 and box["y"] >= 0, (name, box)
    assert box["x"] + box["width"] <= LAPTOP["width"] + 0.5 and box["y"] + box["height"] <= LAPTOP["height"] + 0.5, (name, box)
    return box


def _ratings(app_config, study_id: int) -> list[dict]:
    with connect(app_config.db_path) as db:
        return list(db.query("SELECT trials.position, ratings.realism, ratings.real_or_synthetic FROM ratings"
                             " JOIN trials ON trials.id = ratings.trial_id WHERE trials.study_id = ?"
                             " ORDER BY trials.position", [study_id]))


def _screenshot(page, tmp_path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name))
    if os.environ.get("POLYP_SCREENSHOTS") == "1":
        shutil.copy(tmp_path / name, REPO / "docs" / name)


def _only_the_rate_tab(page) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_role("tab")).to_have_count(1)
    for name in ADMIN_TABS:
        expect(page.get_by_role("tab", name=name)).to_have_count(0)


def _press_at_once(page, keys: list[str]) -> None:
    """Key presses in one go, faster than any server answer (the way a practised rater types ahead)."""
    page.evaluate("""keys => { for (const key of keys) document.dispatchEvent(
        new KeyboardEvent('keydown', {key, bubbles: true, cancelable: true})); }""", keys)


def test_a_rater_follows_an_invitation_and_rates_on_a_laptop(laptop, served_app, seeded, app_config, tmp_path):
    from playwright.sync_api import expect

    page, single = laptop, seeded["single"]
    total = single.trials_per_rater["ivy"]
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{served_app}?invite={single.invitations['ivy']}")
    expect(page.get_by_text("Signed in as ivy")).to_be_visible(timeout=TIMEOUT_MS)
    _only_the_rate_tab(page)

    # The profile first, alone; then it is gone for good.
    expect(page.get_by_text("About you")).to_be_visible()
    expect(page.get_by_role("combobox", name="Study")).to_have_count(0)
    page.get_by_label("Specialty").fill("gastroenterology")
    page.get_by_label("Years of practice").fill("9")
    page.get_by_label("500-1000").check()
    page.get_by_role("button", name="Save and continue").click()
    expect(page.get_by_role("combobox", name="Study")).to_have_value(re.compile(f"single laptop study · 0 of {total} rated"),
                                                                      timeout=TIMEOUT_MS)
    expect(page.get_by_text("About you")).to_have_count(0)
    page.get_by_role("button", name="Start / resume").click()
    expect(page.get_by_text(f"Image 1 of {total}")).to_be_visible(timeout=TIMEOUT_MS)

    # Everything on one screen: the image at least 480 px, the questions beside it, Submit.
    image = page.locator("#rate-images .rate-image img")
    expect(image).to_have_count(1)
    expect(image).to_have_js_property("complete", True)
    box = _inside_viewport(page, image, "the image")
    assert box["width"] >= 480 and box["height"] >= 480, box
    questions = page.locator("#rate-questions .kbd-q")
    for n in range(questions.count()):
        if questions.nth(n).is_visible():
            question = _inside_viewport(page, questions.nth(n), f"question {n + 1}")
            assert question["x"] >= box["x"] + box["width"], "the questions sit beside the image"
    _inside_viewport(page, page.get_by_role("button", name="Submit"), "Submit")
    _only_the_rate_tab(page)
    current = page.locator("#rate-questions .kbd-current")
    expect(current).to_have_count(1)
    expect(current).to_contain_text("Real or synthetic?")
    expect(current).to_have_css("border-top-color", "rgb(245, 158, 11)")
    _screenshot(page, tmp_path, "rate-1280x720.png")

    # Enter after one answer: nothing is stored, everything stays, every missing answer is named.
    page.keyboard.press("2")
    expect(current).to_contain_text("Confidence")
    page.keyboard.press("Enter")
    notice = page.locator("#rate-notice")
    expect(notice).to_contain_text("please answer 4 more", timeout=TIMEOUT_MS)
    for title in ("Confidence", "Realism", "Pathology", "Pathology confidence"):
        expect(notice).to_contain_text(title)
    expect(page.locator("#rate-questions .kbd-missing")).to_have_count(4)
    expect(image).to_be_visible()
    expect(page.get_by_label("Synthetic")).to_be_checked()
    expect(page.get_by_text("Error", exact=True)).to_have_count(0)
    expect(page.locator("body.polyp-locked")).to_have_count(0)
    assert _ratings(app_config, single.study_id) == []
    expect(current).to_contain_text("Confidence")  # the mark went back to the first missing answer
    _inside_viewport(page, page.get_by_role("button", name="Submit"), "Submit beside the notice")
    _screenshot(page, tmp_path, "rate-incomplete-submit.png")

    # The rest, then Enter and a second set of answers typed before the next image is there: the
    # second set reaches no image (the answers are locked until the next image is on screen).
    upcoming = page.locator("#rate-preload img").first.get_attribute("src")
    for key in "4315":
        page.keyboard.press(key)
    _press_at_once(page, ["Enter", "1", "1", "1", "1", "1", "Enter"])
    expect(page.get_by_text(f"Image 2 of {total}")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.locator("body.polyp-locked")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.locator("#rate-questions input:checked")).to_have_count(0)
    assert _ratings(app_config, single.study_id) == [{"position": 0, "realism": 3, "real_or_synthetic": "synthetic"}]
    # The second image was loaded before it was needed, and only once.
    expect(image).to_have_attribute("src", upcoming)
    assert requests.count(upcoming) == 1, [url for url in requests if "file=" in url]
    expect(page.locator("#rate-notice")).to_have_text("")

    # Zoom with Z, back with Escape.
    page.keyboard.press("z")
    zoomed = page.locator(".rate-image.polyp-zoom").bounding_box()
    assert zoomed is not None and zoomed["width"] >= LAPTOP["width"] - 1 and zoomed["height"] >= LAPTOP["height"] - 1
    page.keyboard.press("Escape")
    expect(page.locator(".rate-image.polyp-zoom")).to_have_count(0)

    # Reopening the page resumes at the next image, with no Start to press.
    for key in ["1", "3", "3", "2", "4", "Enter"]:
        page.keyboard.press(key)
    expect(page.get_by_text(f"Image 3 of {total}")).to_be_visible(timeout=TIMEOUT_MS)
    page.reload()
    expect(page.get_by_text(f"Image 3 of {total}")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("button", name="Start / resume")).not_to_be_visible()
    _only_the_rate_tab(page)

    # Back to the list: its progress is today's.
    page.get_by_role("button", name="Back to my studies").click()
    expect(page.get_by_role("combobox", name="Study")).to_have_value(re.compile(f"· 2 of {total} rated"), timeout=TIMEOUT_MS)
    expect(page.locator("#rate-screen")).to_have_count(0)
    _only_the_rate_tab(page)


def _start_by_link(page, served_app, app_config, created) -> int:
    """Follow a fresh invitation of ``created`` as ivy (profile given) and press Start; returns the trial count."""
    from playwright.sync_api import expect

    with connect(app_config.db_path) as db:
        studies.save_profile(db, studies.redeem_invitation(db, created.invitations["ivy"])[0], "surgery", 3, "<100")
        link = study_setup.new_invitation(db, studies.sign_in(db, "admin", ADMIN_PASSWORD), created.study_id, "ivy")
    page.goto(f"{served_app}?invite={link}")
    page.get_by_role("button", name="Start / resume").click()
    total = created.trials_per_rater["ivy"]
    expect(page.get_by_text(f"Image 1 of {total}")).to_be_visible(timeout=TIMEOUT_MS)
    return total


def test_the_pair_screen_fits_a_laptop_too_and_ends_on_the_summary(laptop, served_app, seeded, app_config):
    from playwright.sync_api import expect

    page = laptop
    total = _start_by_link(page, served_app, app_config, seeded["pair"])
    images = page.locator("#rate-images .rate-image img")
    expect(images).to_have_count(2)
    for n, side in enumerate(("left", "right")):
        box = _inside_viewport(page, images.nth(n), f"the {side} image")
        assert box["width"] >= 400, box
    for n in range(4):
        _inside_viewport(page, page.locator("#rate-questions .kbd-q").nth(n), f"question {n + 1}")
    _inside_viewport(page, page.get_by_role("button", name="Submit"), "Submit")
    for position in range(2, total + 2):  # every trial, to the summary
        for key in ["1", "5", "1", "2", "Enter"]:
            page.keyboard.press(key)
        if position <= total:
            expect(page.get_by_text(f"Image {position} of {total}")).to_be_visible(timeout=TIMEOUT_MS)
            expect(page.locator("body.polyp-locked")).to_have_count(0, timeout=TIMEOUT_MS)
    # After the last submit only the summary is left: no image, no question, no Submit.
    expect(page.get_by_text("All done: thank you!")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_text(f"You rated {total} images.")).to_be_visible()
    expect(page.locator("#rate-body")).to_be_hidden()
    expect(page.get_by_role("button", name="Submit")).to_be_hidden()
    expect(page.locator("#rate-images img")).to_have_count(0)
    _only_the_rate_tab(page)


def test_with_the_mask_question_and_a_notice_everything_still_fits(laptop, served_app, seeded, app_config, tmp_path):
    from playwright.sync_api import expect

    page = laptop
    total = _start_by_link(page, served_app, app_config, seeded["mask"])
    for _ in range(total):  # attention checks have no outline and no mask question
        if page.get_by_text("Does the green outline").is_visible():
            break
        page.keyboard.press("Escape")
        for key in ["1", "3", "3", "1", "3", "Enter"]:
            page.keyboard.press(key)
        expect(page.locator("body.polyp-locked")).to_have_count(0, timeout=TIMEOUT_MS)
    expect(page.get_by_text("Does the green outline")).to_be_visible()
    page.keyboard.press("Enter")
    expect(page.locator("#rate-notice")).to_contain_text("please answer 6 more", timeout=TIMEOUT_MS)
    expect(page.locator("#rate-notice")).to_contain_text("Does the green outline fit the lesion?")
    _inside_viewport(page, page.locator("#rate-images .rate-image img"), "the image")
    questions = page.locator("#rate-questions .kbd-q")
    for n in range(questions.count()):
        _inside_viewport(page, questions.nth(n), f"question {n + 1}")
    _inside_viewport(page, page.get_by_role("button", name="Submit"), "Submit")
    _screenshot(page, tmp_path, "rate-mask-question.png")
