"""The Studies tab over HTTP: filled on sign-in for admins only, the created study chosen, full invitation links
(from ``--public-url``) with a copy button each, re-issued on demand, the blinding audit in plain words."""

from __future__ import annotations

import re

import pytest

from appconfig import AppConfig, build_config
from database import studies as study_store
from database.connection import connect
from review import studies, study_setup
from review.audit import CUE_WORDS, CUES
from review.design import StudyDesign
from review.studies_tab import _id, invitations_html, next_step
from tests.conftest import serve
from tests.review.conftest import ADMIN_PASSWORD, add_images
from tests.review.test_security import _events, call

PUBLIC_URL = "https://review.example.org/polyp"
LINK = re.compile(re.escape(PUBLIC_URL) + r"/\?invite=[A-Za-z0-9_-]{20,}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studies-tab")
    config = AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "checkpoints", db_path=tmp / "study.db",
                       device="cpu", public_url=PUBLIC_URL)
    with connect(config.db_path) as db:
        add_images(db, tmp / "images")
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
        studies.create_account(db, "rater", "rater", "rater-password-1")
    with serve(config) as client:
        yield client, config


def _admin(client) -> str:
    return client.predict("admin", ADMIN_PASSWORD, api_name="/sign_in")[0]


def test_refresh_lists_the_image_sets_with_kind_and_counts(served):
    client, _ = served
    _, _, sets, _, _ = client.predict(_admin(client), api_name="/list_studies")
    choices = {value: label for label, value in sets["choices"]}
    assert {"default", "demo"} <= set(choices)
    assert choices["default"].startswith("default (clinical, not public; AD ")
    assert "phantom-demo, public" in choices["demo"]


def test_a_rater_gets_no_image_sets(served):
    client, _ = served
    rater = client.predict("rater", "rater-password-1", api_name="/sign_in")[0]
    with pytest.raises(Exception, match="admin"):
        client.predict(rater, api_name="/list_studies")


def test_signing_in_fills_the_tab_for_an_admin_and_nothing_for_a_rater(served):
    client, config = served
    url = client.src if client.src.endswith("/") else client.src + "/"
    event = next(e for e in _events(url) if e["key"] == "change:session"
                 and any(c.get("props", {}).get("label") == "Studies" for c in e["outputs"]))
    ok, (study, table, checkpoints, sets, line, new_study) = call(url, event["index"], [_admin(client)])
    assert ok and "choices" in study and checkpoints["choices"] and sets["choices"]
    assert line.startswith("**What to do next:** open **New study**")
    assert new_study["open"] is True  # no study yet: the form is opened
    rater = client.predict("rater", "rater-password-1", api_name="/sign_in")[0]
    ok, answer = call(url, event["index"], [rater])
    assert ok and answer[0]["choices"] == [] and all(set(update) == {"__type__"} for update in answer[1:])
    assert str(config.data_dir) not in str(answer)


def test_create_chooses_the_study_and_gives_each_rater_a_full_link_with_a_copy_button(served):
    client, config = served
    admin = _admin(client)
    _, checkpoints, _, _, _ = client.predict(admin, api_name="/list_studies")
    newest = checkpoints["choices"][-1][1]
    invitations, table, chosen, line = client.predict(  # (and the New study form closed: no API value)
        admin, "tab pilot", "single", [newest], 1, 2, 1, 0, 0, 64, 3, True, "erin\nfrank,frank-password-1", False, [],
        api_name="/create_study")
    study_id = table["data"][-1][0]
    assert chosen["value"] == study_id and (f"#{study_id} tab pilot (single, draft)", study_id) in [
        tuple(choice) for choice in chosen["choices"]]
    links = sorted(set(LINK.findall(invitations)), key=invitations.index)
    assert len(links) == 2 and all(f"data-copy='{link}'" in invitations for link in links)
    assert "Copy the link for erin" in invitations and "Copy the link for frank" in invitations
    assert f"study #{study_id} tab pilot is a draft" in line and "Run blinding audit" in line
    with connect(config.db_path) as db:  # each link signs its rater in
        token, redeemed_study = studies.redeem_invitation(db, links[0].rsplit("=", 1)[1])
        assert redeemed_study == study_id and studies.account(db, token).username == "erin"


def test_a_reissued_link_is_full_and_replaces_the_unused_one(served):
    client, config = served
    admin = _admin(client)
    with connect(config.db_path) as db:
        study_id = max(s["id"] for s in study_store.list_studies(db))
    first = sorted(set(LINK.findall(client.predict(admin, study_id, "frank", api_name="/reissue_invitation"))))
    again = client.predict(admin, f"#{study_id} tab pilot", "frank", api_name="/reissue_invitation")
    assert len(first) == 1 and LINK.findall(again) and "earlier unused links of this study stop working" in again
    with connect(config.db_path) as db:
        with pytest.raises(studies.NotSignedIn):
            studies.redeem_invitation(db, first[0].rsplit("=", 1)[1])
        studies.redeem_invitation(db, LINK.findall(again)[0].rsplit("=", 1)[1])
    with pytest.raises(Exception, match="rater: type the username"):
        client.predict(admin, study_id, "  ", api_name="/reissue_invitation")


def test_the_audit_is_a_verdict_and_one_plain_row_per_cue(served):
    client, config = served
    admin = _admin(client)
    with connect(config.db_path) as db:
        study_id = max(s["id"] for s in study_store.list_studies(db))
    verdict, rows, table, _, line = client.predict(admin, study_id, api_name="/audit_study")
    assert re.match(r"\*\*(Passed|Failed)\*\*: ", verdict) and "AUC" in verdict and "synthetic images" in verdict
    assert len(rows["data"]) == len(CUES)
    assert {row[0] for row in rows["data"]} == {title for title, _ in CUE_WORDS.values()}
    assert all(re.fullmatch(r"\d\.\d\d", row[3]) for row in rows["data"])  # AUCs to 2 decimals
    assert {row[4] for row in rows["data"]} <= {"✗ gives it away", "✓ removed by the presentation", "✓ within the threshold",
                                          "✓ no difference"}
    assert table["data"][-1][-1] in ("passed", "FAILED") and "its audit" in line


def test_a_missing_or_malformed_study_id_is_a_clear_error(served):
    client, _ = served
    admin = _admin(client)
    for value in (None, "pilot"):
        with pytest.raises(Exception, match="study id: choose a study from the list"):
            client.predict(admin, value, api_name="/study_progress")


def test_study_ids_come_from_the_chooser_or_typed(served):
    assert _id(3) == _id(3.0) == _id("3") == _id("#3 pilot (single, draft)") == 3
    for bad in (None, "", 0, -1, True, "three", 2.5):
        with pytest.raises(studies.ReviewError, match="study id"):
            _id(bad)


def test_invitation_links_are_escaped_in_the_page():
    text = invitations_html([("erin", 6, "https://x.org/?invite=a'b<c")], "Study #1 created")
    assert "a'b<c" not in text and "a&#x27;b&lt;c" in text and "<td>6</td>" in text


def test_the_next_step_follows_the_database(tmp_path):
    with connect(tmp_path / "study.db") as db:
        assert "no real images are registered yet" in next_step(db, lambda: True)
        ids = add_images(db, tmp_path / "images")
        assert "no checkpoints found" in next_step(db, lambda: False)
        assert next_step(db, lambda: True).startswith("open **New study**")
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
        admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
        design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=1, size=64, seed=2)
        created = study_setup.create_study(db, tmp_path / "data", admin, "first", design,
                                           [study_setup.RaterSpec("rita", "rita-password")])
        assert "study #1 first is a draft" in next_step(db, lambda: True)
        study_store.set_study_audit(db, created.study_id, {"passed": False, "leaks": []})
        assert "its audit failed" in next_step(db, lambda: True)
        study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
        assert "its audit passed: press *Open*" in next_step(db, lambda: True)
        study_setup.open_study(db, admin, created.study_id)
        assert next_step(db, lambda: True).startswith("1 study is open")
        study_setup.close_study(db, admin, created.study_id)
        assert next_step(db, lambda: True).startswith("every study is closed")


def test_the_public_url_comes_from_the_flag_the_environment_or_host_and_port():
    assert build_config([], {}).link_base == "http://127.0.0.1:7860"
    assert build_config(["--host", "0.0.0.0", "--port", "8080"], {}).link_base == "http://0.0.0.0:8080"
    assert build_config([], {"POLYP_PUBLIC_URL": "https://a.example.org/"}).link_base == "https://a.example.org"
    assert build_config(["--public-url", "https://b.example.org/x"], {"POLYP_PUBLIC_URL": "https://a.example.org"}
                        ).link_base == "https://b.example.org/x"


@pytest.mark.parametrize("bad", ["review.example.org", "ftp://x.org", "https://x.org/?a=1", "https://x.org/#f", "https://"])
def test_a_bad_public_url_is_refused_with_what_is_allowed(bad, capsys):
    with pytest.raises(SystemExit):
        build_config(["--public-url", bad], {})
    assert "must be an http:// or https:// address" in capsys.readouterr().err
