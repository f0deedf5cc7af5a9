"""The app without a browser: gradio_client against a launched app, and the import boundaries."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from appconfig import AppConfig
from database.connection import open_db
from database.images import count_images, list_images
from tests.conftest import REPO


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_run):
    from gradio_client import Client


    data = tmp_path_factory.mktemp("appdata")
    config = AppConfig(data_dir=data, checkpoints_dir=data / "checkpoints", db_path=data / "study.db", device="cpu", demo_dir=tiny_run)
    app = create_app(config).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=True, quiet=True)
    try:
        yield config, Client(app.local_url, verbose=False)
    finally:
        app.close()


def test_every_event_has_an_explicit_api_name(served):
    _, client = served
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {
        "/default_prompt", "/list_checkpoints", "/generate",  # Generate
        "/sign_in", "/next_trial", "/submit_rating", "/save_profile",  # Rate
        "/list_studies", "/create_study", "/audit_study", "/open_study", "/close_study", "/study_progress",
        "/export_ratings",  # Studies (admin)
        "/compute_metrics", "/metric_results", "/segmentation_test",  # Evaluate (admin)
        "/analysis_studies", "/analyse_study", "/analysis_report",  # Analysis (admin)
    }


def test_checkpoints_are_listed_by_step(served, tiny_run):
    _, client = served
    update = client.predict(api_name="/list_checkpoints")
    assert [value for _, value in update["choices"]] == [str(tiny_run / "checkpoint-2"), str(tiny_run / "checkpoint-4")]
    assert update["choices"][0][0].startswith("step 2 · stage 1")


def test_prompt_is_prefilled_from_the_pathology_template(served):
    _, client = served
    assert "non-adenomatous" in client.predict("NonAD", api_name="/default_prompt")


def test_generate_stores_images_with_provenance(served, tiny_run):
    config, client = served
    gallery, table = client.predict(str(tiny_run / "checkpoint-4"), "AD", "colonoscopy image of an adenomatous polyp", "",
                                    2, 3, 2, 2.0, "ddim", api_name="/generate")
    assert len(gallery) == 2 and len(table["data"]) == 2
    db = open_db(config.db_path)
    images = {row["sha256"]: row for row in list_images(db, source="synthetic")}
    db.close()
    assert len(images) == 2
    for sha, row in images.items():
        assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == sha
        assert (row["seed"], row["scheduler"], row["steps"], row["guidance"]) in {(3, "ddim", 2, 2.0), (4, "ddim", 2, 2.0)}
        assert (row["checkpoint_step"], row["checkpoint_stage"], row["label"]) == (4, 2, "AD")


def _count(config):
    db = open_db(config.db_path)
    try:
        return count_images(db)
    finally:
        db.close()


@pytest.mark.parametrize("checkpoint, prompt, seed, message", [
    ("", "a polyp", 0, "No checkpoint selected"),
    ("CKPT", " ", 0, "prompt is empty"),
    ("CKPT", "a polyp", None, "seed must be between 0"),
    ("/nowhere/checkpoint-1", "a polyp", 0, "does not exist"),
])
def test_bad_input_is_shown_as_an_error_and_stores_nothing(served, tiny_run, checkpoint, prompt, seed, message):
    config, client = served
    before = _count(config)
    checkpoint = checkpoint.replace("CKPT", str(tiny_run / "checkpoint-4"))
    with pytest.raises(Exception, match=message):
        client.predict(checkpoint, "AD", prompt, "", 1, seed, 2, 2.0, "dpm++", api_name="/generate")
    assert _count(config) == before


def test_plain_modules_do_not_import_gradio():
    code = ("import sys; import evaluation.metrics, evaluation.scorecard, evaluation.utility, evaluation.memorisation, "
            "evaluation.diversity, evaluation.study.analysis, evaluation.study.outcomes, evaluation.study.concordance, "
            "evaluation.study.agreement, evaluation.study.ranking, evaluation.study.embedding, evaluation.study.figures, "
            "evaluation.study.report, review.simulate, evaluation.segmentation, generation.masks.files, "
            "generation.masks.shapes, database.masks, generation.sampling, generation.train, generation.library, "
            "database.images, database.checkpoints, database.connection, database.studies, database.ratings, "
            "review.register, review.studies, review.study_setup, review.schedule, review.audit, review.presentation, "
            "review.accounts, review.kiosk.game, review.kiosk.pools, review.kiosk.results, database.kiosk, appconfig; "
            "assert 'gradio' not in sys.modules, 'gradio imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
