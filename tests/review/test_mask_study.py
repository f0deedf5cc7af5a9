"""Studies that outline each image's polyp mask and ask whether it fits the lesion (show_masks)."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from app import create_app
from appconfig import AppConfig
from database import ratings as rating_store
from database import studies as study_store
from database.connection import connect, open_db
from generation.phantom.frames import render_phantom
from review import studies, study_setup
from review.design import DesignError, StudyDesign
from review.presentation import MASK_OUTLINE, PresentationError, present
from review.simulate import simulate_panel
from tests.review.conftest import add_phantom_masks


def _design(**extra) -> dict:
    return dict(mode="single", images_per_cell=2, real_per_label=2, ratings_per_image=1, size=64, seed=2, **extra)


def test_mask_studies_outline_the_mask_and_require_the_fit_answer(review_env, tmp_path):
    db, data_dir, session, ids = review_env
    add_phantom_masks(db, tmp_path / "masks")
    created = study_setup.create_study(db, data_dir, session, "masks", StudyDesign(checkpoint_ids=tuple(ids), show_masks=True,
                                                                                   attention_checks=1, **_design()),
                                       [study_setup.RaterSpec("maya", "maya-password-1")])
    study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
    study_setup.open_study(db, session, created.study_id)
    maya = studies.sign_in(db, "maya", "maya-password-1")
    answers = {"real_or_synthetic": "real", "source_confidence": 3, "realism": 3, "pathology": "AD",
               "pathology_confidence": 3}
    seen_outline = False
    while (view := studies.next_item(db, maya, created.study_id)) is not None:
        pixels = np.asarray(Image.open(view.image_paths[0]).convert("RGB"))
        outlined = bool((pixels == MASK_OUTLINE).all(axis=-1).any())
        assert view.ask_mask_fit == outlined  # attention cards have no mask and no question
        seen_outline |= outlined
        if view.ask_mask_fit:
            with pytest.raises(studies.ReviewError, match="mask fit: choose one of fits, partly, does not fit"):
                studies.submit(db, maya, created.study_id, view.trial_id, answers, f"submit-key-{view.trial_id}-a")
            studies.submit(db, maya, created.study_id, view.trial_id, {**answers, "mask_fit": "partly"},
                           f"submit-key-{view.trial_id}-b")
        else:
            studies.submit(db, maya, created.study_id, view.trial_id, answers, f"submit-key-{view.trial_id}")
    assert seen_outline
    rows = list(csv.DictReader(io.StringIO(studies.export_csv(db, session, created.study_id))))
    assert {row["mask_fit"] for row in rows if row["trial_kind"] == "normal"} == {"partly"}
    assert {row["mask_fit"] for row in rows if row["trial_kind"] == "attention"} == {""}


def test_only_images_with_masks_are_eligible(review_env, tmp_path):
    db, data_dir, session, ids = review_env
    add_phantom_masks(db, tmp_path / "masks", every=3)
    with pytest.raises(studies.ReviewError, match="too few"):
        study_setup.create_study(db, data_dir, session, "too few masks",
                                 StudyDesign(checkpoint_ids=tuple(ids), show_masks=True, **_design()),
                                 [study_setup.RaterSpec("maya", "maya-password-1")])


def test_pair_mode_cannot_outline_masks():
    with pytest.raises(DesignError, match="single mode only"):
        StudyDesign(mode="pair", checkpoint_ids=(1,), images_per_cell=1, show_masks=True)


def test_plain_studies_never_ask_for_a_mask_fit(review_env):
    db, data_dir, session, ids = review_env
    created = study_setup.create_study(db, data_dir, session, "plain", StudyDesign(checkpoint_ids=tuple(ids), **_design()),
                                       [study_setup.RaterSpec("maya", "maya-password-1")])
    study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
    study_setup.open_study(db, session, created.study_id)
    view = studies.next_item(db, studies.sign_in(db, "maya", "maya-password-1"), created.study_id)
    assert not view.ask_mask_fit


def test_the_outline_follows_the_presentation_crop():
    phantom = render_phantom("AD", 7, (320, 256))
    plain, outlined = np.asarray(present(phantom.image, 128)), np.asarray(present(phantom.image, 128, phantom.mask))
    changed = (plain != outlined).any(axis=-1)
    assert changed.any() and (outlined[changed] == MASK_OUTLINE).all()
    assert changed.sum() < 0.1 * changed.size  # an outline, not a filled mask
    # The outline lies on the lesion: paint the lesion's pixels blue, present that, and look under the outline.
    painted = np.asarray(phantom.image).copy()
    painted[phantom.mask] = (0, 0, 255)
    under = np.asarray(present(Image.fromarray(painted), 128)).astype(int)[changed]
    assert (under[:, 2] > under[:, 0]).mean() > 0.8
    with pytest.raises(PresentationError, match="mask shape"):
        present(phantom.image, 128, np.zeros((10, 10), bool))


def test_the_rate_tab_shows_the_mask_question_and_stores_its_answer(tmp_path):
    from gradio_client import Client

    from tests.review.conftest import ADMIN_PASSWORD, add_images

    config = AppConfig(data_dir=tmp_path / "data", checkpoints_dir=tmp_path / "c", db_path=tmp_path / "study.db", device="cpu")
    db = open_db(config.db_path)
    ids = add_images(db, tmp_path / "images")
    add_phantom_masks(db, tmp_path / "masks")
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    admin = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    created = study_setup.create_study(db, config.data_dir, admin, "masks", StudyDesign(checkpoint_ids=tuple(ids), show_masks=True,
                                                                                       **_design()),
                                       [study_setup.RaterSpec("maya", "maya-password-1")])
    study_store.set_study_audit(db, created.study_id, {"passed": True, "leaks": []})
    study_setup.open_study(db, admin, created.study_id)
    db.close()
    app = create_app(config).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True, show_error=True)
    try:
        client = Client(app.local_url, verbose=False)
        token = client.predict("maya", "maya-password-1", api_name="/sign_in")[0]
        reply = client.predict(token, created.study_id, api_name="/next_trial")
        assert reply[-1]["visible"] is True  # the mask question is shown for this study
        answers = ("real", "3", "3", "AD", "3", [], "", None, None, None, None)
        reply = client.predict(token, created.study_id, reply[2], reply[3], *answers, "does not fit", api_name="/submit_rating")
    finally:
        app.close()
    with connect(config.db_path) as db:
        assert [row["mask_fit"] for row in rating_store.export_rows(db, created.study_id)] == ["does not fit"]


def test_a_simulated_panel_refuses_mask_studies(review_env):
    db, data_dir, session, ids = review_env
    with pytest.raises(studies.ReviewError, match="does not judge whether masks fit"):
        simulate_panel(db, data_dir, session, "sim masks", StudyDesign(checkpoint_ids=tuple(ids), show_masks=True, **_design()))
