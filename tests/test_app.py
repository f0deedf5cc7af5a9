"""The app without a browser: gradio_client against a launched app, and the import boundaries."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest

from app import create_app
from appconfig import AppConfig, Services
from database.connection import connect, open_db
from database.images import count_images, list_images
from generation.ui import checkpoint_path
from review import studies
from tests.conftest import REPO, serve

ADMIN = ("root", "root-password-1")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_run):
    from gradio_client import Client

    data = tmp_path_factory.mktemp("appdata")
    config = AppConfig(data_dir=data, checkpoints_dir=data / "checkpoints", db_path=data / "study.db", device="cpu", demo_dir=tiny_run)
    with connect(config.db_path) as db:
        studies.create_account(db, ADMIN[0], "admin", ADMIN[1])
    app = create_app(config).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=True, quiet=True)
    try:
        client = Client(app.local_url, verbose=False)
        yield config, client, client.predict(*ADMIN, api_name="/sign_in")[0], app.local_url
    finally:
        app.close()


def test_every_event_has_an_explicit_api_name(served):
    _, client, _, _ = served
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {
        "/default_prompt", "/list_checkpoints", "/generate",  # Generate
        "/sign_in", "/next_trial", "/submit_rating", "/save_profile",  # Rate
        "/list_studies", "/create_study", "/audit_study", "/open_study", "/close_study", "/study_progress",
        "/export_ratings", "/revoke_sessions", "/reissue_invitation",  # Studies (admin)
        "/compute_metrics", "/metric_results", "/segmentation_test",  # Evaluate (admin)
        "/analysis_studies", "/analyse_study", "/analysis_report",  # Analysis (admin)
        "/create_admin", "/demo_project_start",  # first run, demo project
    }


def test_checkpoints_are_listed_by_step_under_their_names_only(served, tiny_run):
    _, client, admin, _ = served
    update = client.predict(admin, api_name="/list_checkpoints")
    names = [value for value, _ in update["choices"]]
    assert [label for _, label in update["choices"]] == names  # the value is the name: no path
    assert names[0].startswith("step 2 · stage 1") and names[1].startswith("step 4 · stage 2") and len(names) == 2
    assert str(tiny_run) not in json.dumps(update)


def test_prompt_is_prefilled_from_the_pathology_template(served):
    _, client, admin, _ = served
    assert "non-adenomatous" in client.predict(admin, "NonAD", api_name="/default_prompt")


def _latest(client, admin) -> str:
    return client.predict(admin, api_name="/list_checkpoints")["choices"][-1][0]


def test_generate_stores_images_with_provenance(served, tiny_run):
    config, client, admin, _ = served
    gallery, table = client.predict(admin, _latest(client, admin), "AD", "colonoscopy image of an adenomatous polyp", "",
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


def test_generate_is_for_admins_only_and_loads_only_discovered_checkpoints(served, tiny_run, tmp_path):
    config, client, admin, _ = served
    before = _count(config)
    for token in ("", "forged-token"):
        with pytest.raises(Exception, match="needs an admin account"):
            client.predict(token, _latest(client, admin), "AD", "a polyp", "", 1, 0, 2, 2.0, "dpm++", api_name="/generate")
    # A real checkpoint folder typed in, and a path that does not exist: the same answer, naming no server path
    # (Gradio itself refuses a value outside the session's list before the callback; the callback maps names only).
    for typed in (str(tiny_run / "checkpoint-4"), "/nowhere/checkpoint-1"):
        with pytest.raises(Exception, match="is not in the list of choices") as error:
            client.predict(admin, typed, "AD", "a polyp", "", 1, 0, 2, 2.0, "dpm++", api_name="/generate")
        assert str(error.value).replace(typed, "TYPED").count("/") == 0
    with pytest.raises(gr.Error, match="Unknown checkpoint: pick one"):
        checkpoint_path(services_of(config), str(tiny_run / "checkpoint-4"))
    assert _count(config) == before


def services_of(config) -> Services:
    return Services(config)


def _count(config):
    with connect(config.db_path) as db:
        return count_images(db)


@pytest.mark.parametrize("checkpoint, prompt, seed, message", [
    (None, "a polyp", 0, "No checkpoint selected"),
    ("CKPT", " ", 0, "prompt is empty"),
    ("CKPT", "a polyp", None, "seed must be between 0"),
])
def test_bad_input_is_shown_as_an_error_and_stores_nothing(served, checkpoint, prompt, seed, message):
    config, client, admin, _ = served
    before = _count(config)
    checkpoint = checkpoint and checkpoint.replace("CKPT", _latest(client, admin))
    with pytest.raises(Exception, match=message):
        client.predict(admin, checkpoint, "AD", prompt, "", 1, seed, 2, 2.0, "dpm++", api_name="/generate")
    assert _count(config) == before


def test_every_response_carries_the_security_headers_and_run_history_is_off(served):
    import httpx

    _, _, _, url = served
    with httpx.Client(base_url=url) as http:
        for path in ("/", "config", "gradio_api/info", "no-such-page"):
            headers = http.get(path).headers
            assert headers["referrer-policy"] == "no-referrer", path
            assert "frame-ancestors 'none'" in headers["content-security-policy"], path
            assert "default-src 'self'" in headers["content-security-policy"], path
            assert headers["x-frame-options"] == "DENY", path
        config = http.get("config").json()
    assert config["run_history"] is False and "runs" not in config["footer_links"]


def test_plain_modules_do_not_import_gradio():
    code = ("import sys; import evaluation.metrics, evaluation.scorecard, evaluation.utility, evaluation.memorisation, "
            "evaluation.diversity, evaluation.study.analysis, evaluation.study.outcomes, evaluation.study.concordance, "
            "evaluation.study.agreement, evaluation.study.ranking, evaluation.study.embedding, evaluation.study.figures, "
            "evaluation.study.report, evaluation.study.consistency, review.simulate, review.simulated_raters, "
            "evaluation.segmentation, evaluation.segmentation.experiment, evaluation.distances, evaluation.errors, "
            "generation.masks.files, generation.masks.shapes, database.masks, generation.sampling, generation.train, "
            "generation.library, database.images, database.checkpoints, database.connection, database.studies, "
            "database.ratings, review.register, review.studies, review.study_setup, review.schedule, review.audit, "
            "review.presentation, review.accounts, review.kiosk.game, review.kiosk.pages, review.kiosk.pools, "
            "review.kiosk.results, database.kiosk, review.headers, review.auth, appconfig; "
            "assert 'gradio' not in sys.modules, 'gradio imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("family", ["sdxl", "flux"])
def test_the_generate_endpoint_samples_other_families_with_their_defaults(tmp_path, tiny_run, tiny_family, family):
    """Through HTTP as an admin: a discovered SDXL / FLUX folder, the family's own scheduler, its provenance stored."""
    import shutil

    from database import checkpoints as checkpoint_store
    from database import images as image_store

    config = AppConfig(data_dir=tmp_path, checkpoints_dir=tmp_path / "checkpoints", db_path=tmp_path / "study.db",
                       device="cpu", demo_dir=tiny_run)
    shutil.copytree(tiny_family(family), config.checkpoints_dir / f"tiny-{family}")
    with connect(config.db_path) as db:
        studies.create_account(db, ADMIN[0], "admin", ADMIN[1])
    with serve(config) as client:
        admin = client.predict(*ADMIN, api_name="/sign_in")[0]
        names = [choice[0] for choice in client.predict(admin, api_name="/list_checkpoints")["choices"]]
        name = next(n for n in names if family.upper() in n.upper())
        _, table = client.predict(admin, name, "AD", "a polyp", "", 1, 3, 2, 2.0, "family default", api_name="/generate")
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["scheduler"] == ("flow-euler" if family == "flux" else "dpm++") and row["steps"] == 2 and row["seed"] == 3
    with connect(config.db_path) as db:
        stored = image_store.list_images(db, source="synthetic")
        checkpoint = next(c for c in checkpoint_store.list_checkpoints(db) if c["id"] == stored[0]["checkpoint_id"])
    assert len(stored) == 1 and stored[0]["scheduler"] == row["scheduler"]
    assert checkpoint["metadata"]["loading"]["family"] == family
