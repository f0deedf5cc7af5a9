"""studies.submit_and_next: the Rate tab's submit in one transaction, with the same rules as submit + next_item."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from database import studies as study_store
from database.connection import ConnectionPool
from review import studies, study_setup
from review.design import StudyDesign
from review.studies import Forbidden, ReviewError
from review.study_setup import RaterSpec

ANSWER = {"real_or_synthetic": "real", "source_confidence": 4, "realism": 3, "pathology": "NonAD",
          "pathology_confidence": 2}


@pytest.fixture
def study(review_env):
    """(db, study id, ann's session, bob's session) for an open single-mode study of 10 trials each."""
    db, data, admin, ids = review_env
    design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=2, real_per_label=4,
                         ratings_per_image=1, repeats=1, attention_checks=1, size=64, seed=3)
    created = study_setup.create_study(db, data, admin, "one transaction",
                                       design, [RaterSpec("ann", "ann-password"), RaterSpec("bob", "bob-password")])
    study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
    study_setup.open_study(db, admin, created.study_id)
    return db, created.study_id, studies.sign_in(db, "ann", "ann-password"), studies.sign_in(db, "bob", "bob-password")


def _ratings(db) -> int:
    return db.execute("SELECT count(*) FROM ratings").fetchone()[0]


def test_submit_and_next_stores_the_rating_and_shows_the_next_trial(study):
    db, study_id, ann, _ = study
    view = studies.next_item(db, ann, study_id)
    assert view.position == 1 and view.total == 10
    stored, following = studies.submit_and_next(db, ann, study_id, view.trial_id, ANSWER, "key-first-trial")
    assert stored and _ratings(db) == 1
    assert following.position == 2 and following.trial_id != view.trial_id
    assert study_store.get_trial(db, following.trial_id)["shown_at"] is not None  # its clock started
    # The same submit again (a retry) stores nothing and shows the same next trial.
    again, same = studies.submit_and_next(db, ann, study_id, view.trial_id, ANSWER, "key-first-trial")
    assert not again and same.trial_id == following.trial_id and _ratings(db) == 1


def test_upcoming_names_the_files_of_the_trial_after_the_one_shown(study):
    db, study_id, ann, _ = study
    view = studies.next_item(db, ann, study_id)
    seen = []
    while view is not None:
        seen.append(view)
        _, view = studies.submit_and_next(db, ann, study_id, view.trial_id, ANSWER, f"key-{view.trial_id:08d}")
    assert len(seen) == 10
    for shown, after in zip(seen, seen[1:]):
        assert shown.upcoming == after.image_paths and all(Path(path).is_file() for path in shown.upcoming)
    assert seen[-1].upcoming == ()
    assert view is None and _ratings(db) == 10


def _trials_of(db, study_id: int, username: str) -> list[int]:
    return [row["id"] for row in db.query(
        "SELECT trials.id FROM trials JOIN raters ON raters.id = trials.rater_id"
        " WHERE trials.study_id = ? AND raters.username = ? ORDER BY trials.position", [study_id, username])]


def test_only_the_trial_shown_last_can_be_rated_and_a_refusal_stores_nothing(study):
    db, study_id, ann, _ = study
    view = studies.next_item(db, ann, study_id)
    anns, bobs = _trials_of(db, study_id, "ann"), _trials_of(db, study_id, "bob")
    assert view.trial_id == anns[0]
    with pytest.raises(Forbidden, match="not the image you are being shown"):
        studies.submit_and_next(db, ann, study_id, anns[1], ANSWER, "key-not-shown-1")
    with pytest.raises(Forbidden, match="not in your schedule"):
        studies.submit_and_next(db, ann, study_id, bobs[0], ANSWER, "key-bobs-trial")
    with pytest.raises(ReviewError, match="pathology"):
        studies.submit_and_next(db, ann, study_id, view.trial_id, {**ANSWER, "pathology": "maybe"}, "key-bad-answer")
    assert _ratings(db) == 0
    assert not db.conn.in_transaction  # every refusal rolled its transaction back
    stored, following = studies.submit_and_next(db, ann, study_id, view.trial_id, ANSWER, "key-good-answer")
    assert stored and _ratings(db) == 1 and following.trial_id == anns[1]


def test_a_missing_next_image_keeps_the_rating_and_says_so(study):
    db, study_id, ann, _ = study
    view = studies.next_item(db, ann, study_id)
    for path in view.upcoming:
        Path(path).unlink()
    with pytest.raises(ReviewError, match="could not be loaded"):
        studies.submit_and_next(db, ann, study_id, view.trial_id, ANSWER, "key-before-missing")
    assert _ratings(db) == 1  # committed before the next trial's files were looked at


def test_a_missing_next_image_keeps_the_rating_in_a_shared_commit_too(study):
    db, study_id, ann, _ = study
    pool = ConnectionPool(db.execute("PRAGMA database_list").fetchone()[2])
    view = studies.next_item(db, ann, study_id)
    for path in view.upcoming:
        Path(path).unlink()
    with pytest.raises(ReviewError, match="could not be loaded"):
        studies.submit_and_next_shared(pool, ann, study_id, view.trial_id, ANSWER, "key-before-missing")
    assert _ratings(db) == 1


@pytest.mark.parametrize("shared", [False, True], ids=["own connection", "shared commit"])
def test_pooled_raters_at_once_store_every_rating_once(tmp_path, review_env, shared):
    db, data, admin, ids = review_env
    names = [f"rater{i}" for i in range(6)]
    design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=2, real_per_label=4,
                         ratings_per_image=3, repeats=1, attention_checks=1, size=64, seed=5)
    created = study_setup.create_study(db, data, admin, "pooled", design, [RaterSpec(n, f"{n}-password") for n in names])
    study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
    study_setup.open_study(db, admin, created.study_id)
    pool = ConnectionPool(tmp_path / "study.db")

    def rate(name: str) -> int:
        with pool.connection() as mine:
            token = studies.sign_in(mine, name, f"{name}-password")
            view = studies.next_item(mine, token, created.study_id)
        count = 0
        while view is not None:
            key = f"key-{name}-{count:04d}"
            if shared:  # as the served Rate tab submits
                stored, view = studies.submit_and_next_shared(pool, token, created.study_id, view.trial_id, ANSWER, key)
            else:
                with pool.connection() as mine:
                    stored, view = studies.submit_and_next(mine, token, created.study_id, view.trial_id, ANSWER, key)
            count += stored
        return count

    with concurrent.futures.ThreadPoolExecutor(len(names)) as threads:
        counts = list(threads.map(rate, names))
    assert sum(counts) == sum(created.trials_per_rater.values()) == _ratings(db)
    assert db.execute("SELECT count(DISTINCT trial_id) FROM ratings").fetchone()[0] == _ratings(db)
