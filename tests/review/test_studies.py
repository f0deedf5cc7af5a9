"""The review rules without a browser: study set-up, sign-in, trials, submits, export."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from database import raters as rater_store
from database import studies as study_store
from review import auth, studies, study_setup
from review.design import StudyDesign
from review.studies import Forbidden, NotSignedIn, ReviewError
from review.study_setup import RaterSpec

SINGLE = dict(mode="single", images_per_cell=2, real_per_label=4, ratings_per_image=1, repeats=1, attention_checks=1,
              size=64, seed=3)
ANSWER = {"real_or_synthetic": "synthetic", "source_confidence": 4, "realism": 2, "pathology": "AD",
          "pathology_confidence": 3, "artifacts": ["colour"], "comment": "flat"}
PAIR_ANSWER = {"synthetic_choice": "left", "choice_confidence": 5, "pathology_left": "AD", "pathology_right": "NonAD"}


def _create(db, data, admin, ids, mode="single", raters=("ann", "bob"), **changes):
    design = StudyDesign(checkpoint_ids=tuple(ids), **{**SINGLE, "mode": mode, **changes})
    specs = [RaterSpec(name, f"{name}-password") for name in raters]
    return study_setup.create_study(db, data, admin, f"study-{mode}-{len(raters)}", design, specs)


def _open(db, admin, study_id):
    audit = study_setup.audit_study(db, admin, study_id)
    study_setup.open_study(db, admin, study_id, "" if audit["passed"] else "test images are phantoms")


def _rate_all(db, session, study_id, answer=ANSWER) -> int:
    count = 0
    while (view := studies.next_item(db, session, study_id)) is not None:
        assert studies.submit(db, session, study_id, view.trial_id, answer, f"key-{view.trial_id:08d}")
        count += 1
    return count


def test_created_study_presents_every_image_under_a_random_token(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids)
    # 2 checkpoints x 2 labels x 2 synthetic + 2 x 4 real = 16 units over 2 raters, + 1 repeat + 1 attention each
    assert created.trials_per_rater == {"ann": 10, "bob": 10}
    rows = study_store.study_images(db, created.study_id)
    for row in rows:
        presented = Path(row["presented_path"])
        assert presented.name == f"{row['token']}.png" and presented.is_file()
        assert row["sha256"] not in presented.name
    assert {row["role"] for row in rows} == {"real", "synthetic", "attention"}


def test_rater_signs_in_rates_and_resumes_where_they_left(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids)
    _open(db, admin, created.study_id)
    ann = studies.sign_in(db, "ann", "ann-password")
    first = studies.next_item(db, ann, created.study_id)
    assert (first.position, first.total, len(first.image_paths)) == (1, 10, 1)
    assert studies.submit(db, ann, created.study_id, first.trial_id, ANSWER, "key-first-1")
    # a reload (a new session from a new sign-in) resumes at the next unrated trial
    again = studies.sign_in(db, "ann", "ann-password")
    second = studies.next_item(db, again, created.study_id)
    assert second.position == 2 and second.trial_id != first.trial_id
    with pytest.raises(ReviewError, match="after the last image"):
        studies.personal_summary(db, ann, created.study_id)
    assert _rate_all(db, again, created.study_id) == 9
    summary = studies.personal_summary(db, again, created.study_id)
    assert summary["trials"] == 8  # normal trials only: repeats and attention checks are not scored here
    assert studies.next_item(db, again, created.study_id) is None


def test_a_repeated_submit_is_stored_once(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids)
    _open(db, admin, created.study_id)
    ann = studies.sign_in(db, "ann", "ann-password")
    view = studies.next_item(db, ann, created.study_id)
    assert studies.submit(db, ann, created.study_id, view.trial_id, ANSWER, "double-click")
    assert not studies.submit(db, ann, created.study_id, view.trial_id, ANSWER, "double-click")
    assert not studies.submit(db, ann, created.study_id, view.trial_id, {**ANSWER, "realism": 5}, "second-tab")
    count = db.execute("SELECT count(*) FROM ratings WHERE trial_id = ?", [view.trial_id]).fetchone()[0]
    assert count == 1
    assert db.execute("SELECT realism FROM ratings WHERE trial_id = ?", [view.trial_id]).fetchone()[0] == 2


def test_raters_cannot_reach_other_raters_trials_or_admin_functions(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids)
    _open(db, admin, created.study_id)
    ann = studies.sign_in(db, "ann", "ann-password")
    bob = studies.sign_in(db, "bob", "bob-password")
    bobs_trial = studies.next_item(db, bob, created.study_id)
    with pytest.raises(Forbidden):
        studies.submit(db, ann, created.study_id, bobs_trial.trial_id, ANSWER, "steal-1234")
    for call in (lambda: studies.export_csv(db, ann, created.study_id),
                 lambda: study_setup.progress(db, ann, created.study_id),
                 lambda: study_setup.close_study(db, ann, created.study_id),
                 lambda: study_setup.new_invitation(db, ann, created.study_id, "bob")):
        with pytest.raises(Forbidden):
            call()
    with pytest.raises(NotSignedIn):
        studies.next_item(db, "forged-session-token", created.study_id)
    with pytest.raises(NotSignedIn):
        studies.sign_in(db, "ann", "wrong-password")


def test_invitations_forged_and_expired_get_clear_messages(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids)
    session, study_id = studies.redeem_invitation(db, created.invitations["bob"])
    assert study_id == created.study_id and studies.account(db, session).username == "bob"
    with pytest.raises(NotSignedIn, match="not valid"):
        studies.redeem_invitation(db, "forged" + created.invitations["bob"])
    expired = auth.new_token()
    rater_store.add_invitation(db, auth.token_hash(expired), created.study_id, 2, "2020-01-01T00:00:00.000Z")
    with pytest.raises(NotSignedIn, match="expired on 2020-01-01"):
        studies.redeem_invitation(db, expired)


def test_opening_needs_the_audit_and_a_failed_audit_needs_a_recorded_override(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids)
    with pytest.raises(ReviewError, match="run the blinding audit"):
        study_setup.open_study(db, admin, created.study_id)
    audit = {"passed": False, "auc_presented": 0.93, "leaks": [{"cue": "file_size", "auc": 0.9}]}
    study_store.set_study_audit(db, created.study_id, audit)
    with pytest.raises(ReviewError, match="file_size"):
        study_setup.open_study(db, admin, created.study_id)
    study = study_setup.open_study(db, admin, created.study_id, "pilot with phantoms")
    assert study["status"] == "open"
    assert study["audit_override"]["reason"] == "pilot with phantoms" and study["audit_override"]["by"] == "admin"
    ann = studies.sign_in(db, "ann", "ann-password")
    study_setup.close_study(db, admin, created.study_id)
    with pytest.raises(ReviewError, match="is closed"):
        studies.next_item(db, ann, created.study_id)


def test_bad_answers_and_too_few_images_are_refused_with_reasons(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids)
    _open(db, admin, created.study_id)
    ann = studies.sign_in(db, "ann", "ann-password")
    view = studies.next_item(db, ann, created.study_id)
    with pytest.raises(ReviewError, match="realism: choose 1 to 5"):
        studies.submit(db, ann, created.study_id, view.trial_id, {**ANSWER, "realism": 9}, "bad-answer-1")
    with pytest.raises(ReviewError, match="artifacts: unknown"):
        studies.submit(db, ann, created.study_id, view.trial_id, {**ANSWER, "artifacts": ["<script>"]}, "bad-answer-2")
    assert db.execute("SELECT count(*) FROM ratings").fetchone()[0] == 0
    with pytest.raises(ReviewError, match="real"):
        _create(db, data, admin, ids, real_per_label=40)


def test_export_is_one_row_per_rating_and_image_with_provenance(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids, mode="pair", raters=("ann",), repeats=0, attention_checks=0)
    _open(db, admin, created.study_id)
    ann = studies.sign_in(db, "ann", "ann-password")
    view = studies.next_item(db, ann, created.study_id)
    assert len(view.image_paths) == 2
    rated = _rate_all(db, ann, created.study_id, PAIR_ANSWER)
    rows = list(csv.DictReader(io.StringIO(studies.export_csv(db, admin, created.study_id))))
    assert len(rows) == 2 * rated
    assert list(rows[0]) == list(studies.EXPORT_COLUMNS)
    synthetic = [row for row in rows if row["image_source"] == "synthetic"]
    assert synthetic and all(row["checkpoint_step"] in {"100", "200"} and row["prompt"] for row in synthetic)
    assert {row["side"] for row in rows} == {"left", "right"}


def test_a_missing_presented_file_gets_a_clear_message(review_env):
    db, data, admin, ids = review_env
    created = _create(db, data, admin, ids)
    _open(db, admin, created.study_id)
    for row in study_store.study_images(db, created.study_id):
        Path(row["presented_path"]).unlink()
    ann = studies.sign_in(db, "ann", "ann-password")
    with pytest.raises(ReviewError, match="could not be loaded"):
        studies.next_item(db, ann, created.study_id)
