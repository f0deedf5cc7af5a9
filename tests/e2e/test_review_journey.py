"""Review journeys in a real Chromium: a rater rates with the keyboard and resumes; an invitation link signs in once
and leaves the address bar; an admin sets up and exports. All under the app's Content-Security-Policy."""

from __future__ import annotations

import csv
import glob
import json
import re
import tempfile

import pytest

from database import studies as study_store
from database.connection import connect, open_db
from review import studies, study_setup
from review.design import StudyDesign
from tests.e2e.conftest import sign_in
from tests.review.conftest import ADMIN_PASSWORD, add_images

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def seeded(app_config, tmp_path_factory):
    """Phantom images (real and two fake checkpoints), an admin, and two open studies for rater 'dana'."""
    db = open_db(app_config.db_path)
    ids = add_images(db, tmp_path_factory.mktemp("review-images"), n_real=8, n_synthetic=3)
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    made = {}
    for mode, extra in (("single", {"real_per_label": 4, "repeats": 1, "attention_checks": 1}), ("pair", {})):
        design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=2, size=128, seed=5, **extra)
        made[mode] = study_setup.create_study(db, app_config.data_dir, admin, f"{mode} study", design,
                                              [study_setup.RaterSpec("dana", "dana-password")])
        study_store.set_study_audit(db, made[mode].study_id, {"passed": True, "leaks": []})
        study_setup.open_study(db, admin, made[mode].study_id)
    db.close()
    return made


def _give_profile(page):
    """The profile comes first, once: then the rater's studies."""
    page.get_by_label("Specialty").fill("gastroenterology")
    page.get_by_label("Years of practice").fill("7")
    page.get_by_label("100-500").check()
    page.get_by_role("button", name="Save and continue").click()


def _choose_study(page, name):
    page.get_by_role("combobox", name="Study").click()
    page.get_by_role("option", name=re.compile(name)).click()
    page.get_by_role("button", name="Start / resume").click()


def _keys(page, keys):
    """Type ``keys`` once the screen takes answers: after a submit they are locked (keys dropped) until the
    next image is on screen, as a rater waits for it."""
    from playwright.sync_api import expect

    expect(page.locator("body.polyp-locked")).to_have_count(0, timeout=TIMEOUT_MS)
    for key in keys:
        page.keyboard.press(key)


def _csp_violations(page) -> list[str]:
    """Collects the console's Content-Security-Policy complaints while the test runs."""
    found: list[str] = []
    page.on("console", lambda message: found.append(message.text) if "Content Security Policy" in message.text else None)
    return found


def test_rater_rates_with_the_keyboard_reloads_and_resumes(page, served_app, seeded, app_config):
    from playwright.sync_api import expect

    violations = _csp_violations(page)
    page.goto(served_app)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("tab")).to_have_count(0)  # before sign-in: no tab at all
    sign_in(page, "dana", "dana-password", TIMEOUT_MS)
    expect(page.get_by_role("tab", name="Rate", exact=True)).to_be_visible()
    for admin_tab in ("Studies (admin)", "Evaluate (admin)", "Analysis (admin)", "Generate"):
        expect(page.get_by_role("tab", name=admin_tab)).to_have_count(0)
    # Run history is off: the password is nowhere in the browser's storage, only the session token is.
    storage = page.evaluate("() => JSON.stringify({...window.localStorage})")
    assert "dana-password" not in storage and "polypturing-session" in storage
    page.get_by_role("tab", name="Rate", exact=True).click()
    _give_profile(page)
    _choose_study(page, "single study")
    total = seeded["single"].trials_per_rater["dana"]
    for n in range(1, 6):
        expect(page.get_by_text(f"Image {n} of {total}")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page.locator("#rate-images img").first).to_be_visible()
        # synthetic (2), confidence 4, realism 3, pathology AD (1), confidence 5, then Enter submits
        _keys(page, ["2", "4", "3", "1", "5", "Enter"])
    expect(page.get_by_text(f"Image 6 of {total}")).to_be_visible(timeout=TIMEOUT_MS)

    page.reload()  # the session survives in local storage; the page resumes on the sixth item by itself
    expect(page.get_by_text(f"Image 6 of {total}")).to_be_visible(timeout=TIMEOUT_MS)

    page.get_by_role("button", name="Back to my studies").click()
    _choose_study(page, "pair study")
    pairs = seeded["pair"].trials_per_rater["dana"]
    for n in range(1, 4):
        expect(page.get_by_text(f"Image {n} of {pairs}")).to_be_visible(timeout=TIMEOUT_MS)
        _keys(page, ["1", "5", "1", "2", "Enter"])  # left is synthetic, confidence 5, AD, Non-AD
    expect(page.get_by_text(f"Image 4 of {pairs}")).to_be_visible(timeout=TIMEOUT_MS)

    with connect(app_config.db_path) as db:
        rows = {r["study_id"]: r for r in db.query(
            "SELECT trials.study_id, count(*) AS n, min(realism) AS realism, min(synthetic_choice) AS choice,"
            " min(pathology_right) AS right_call FROM ratings JOIN trials ON trials.id = ratings.trial_id GROUP BY trials.study_id")}
    single, pair = rows[seeded["single"].study_id], rows[seeded["pair"].study_id]
    assert (single["n"], single["realism"]) == (5, 3)
    assert (pair["n"], pair["choice"], pair["right_call"]) == (3, "left", "NonAD")
    assert not violations, violations

    page.get_by_role("button", name="Back to my studies").click()  # the rating screen covers the account bar
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_role("tab")).to_have_count(0)
    assert "dana-password" not in page.evaluate("() => JSON.stringify({...window.localStorage})")


def test_an_invitation_link_signs_in_once_and_leaves_the_address_bar(browser, served_app, seeded, app_config):
    from playwright.sync_api import expect

    with connect(app_config.db_path) as db:
        admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
        link = study_setup.new_invitation(db, admin, seeded["pair"].study_id, "dana")
    first, second = (browser.new_context() for _ in range(2))
    try:
        page = first.new_page()
        page.goto(f"{served_app}?invite={link}")
        expect(page.get_by_text("Signed in as dana")).to_be_visible(timeout=TIMEOUT_MS)
        expect(page).not_to_have_url(re.compile("invite="), timeout=TIMEOUT_MS)
        assert link not in page.evaluate("() => JSON.stringify({...window.localStorage}) + window.location.href")
        again = second.new_page()
        again.goto(f"{served_app}?invite={link}")  # the same link, elsewhere: it has been used
        expect(again.get_by_text("not valid")).to_be_visible(timeout=TIMEOUT_MS)
        expect(again.get_by_text("Not signed in.")).to_be_visible()
    finally:
        first.close()
        second.close()


def test_admin_creates_a_study_opens_it_and_exports_the_csv(page, served_app, seeded, app_config, tmp_path):
    from playwright.sync_api import expect

    exports_before = set(glob.glob(f"{tempfile.gettempdir()}/polyp-export-*"))
    violations = _csp_violations(page)
    page.goto(served_app)
    sign_in(page, "admin", ADMIN_PASSWORD, TIMEOUT_MS)
    page.get_by_role("tab", name="Studies (admin)").click()
    page.get_by_role("button", name="Refresh").click()
    page.get_by_text("New study").click()
    page.get_by_label("Study name").fill("booth pilot")
    page.get_by_label(re.compile(r"step 8000 .*phantom demo")).check()
    page.get_by_label("Synthetic images per checkpoint and pathology").fill("2")
    page.get_by_label("Raters: one per line").fill("erin,erin-password")
    page.get_by_role("button", name="Create study").click()
    expect(page.locator("#studies-invitations").get_by_role("cell", name="erin", exact=True)).to_be_visible(timeout=120_000)
    page.get_by_role("button", name="Run blinding audit").click()  # the created study is already chosen
    expect(page.locator("#studies-audit-verdict")).to_contain_text(re.compile("(Passed|Failed): "), timeout=TIMEOUT_MS)
    page.get_by_label("Override reason").fill("phantom pilot")
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.get_by_role("grid", name=re.compile("^Studies")).get_by_role("gridcell", name="open", exact=True)).to_have_count(3, timeout=TIMEOUT_MS)  # the two seeded + this one

    page.get_by_role("button", name="Export ratings CSV").click()
    link = page.locator("a[href$=\"-ratings.csv\"]").first
    expect(link).to_be_visible(timeout=TIMEOUT_MS)
    with page.expect_download() as download:
        link.click()
    path = tmp_path / "ratings.csv"
    download.value.save_as(path)
    header = next(csv.reader(path.open()))
    assert header == list(studies.EXPORT_COLUMNS)
    assert set(glob.glob(f"{tempfile.gettempdir()}/polyp-export-*")) <= exports_before  # the temporary copy is gone
    assert not violations, violations
    assert ADMIN_PASSWORD not in json.dumps(page.evaluate("() => ({...window.localStorage})"))
