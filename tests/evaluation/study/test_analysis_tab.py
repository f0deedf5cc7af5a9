"""The Analysis tab through the HTTP API: an admin analyses a simulated study and exports it; a rater cannot."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from appconfig import AppConfig
from tests.conftest import serve
from tests.evaluation.study.simulated_study import make_simulated_study
from tests.review.conftest import ADMIN_PASSWORD


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("analysis-tab")
    config = AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "checkpoints", db_path=tmp / "study.db", device="cpu")
    made = make_simulated_study(config, tmp / "images")
    with serve(config) as client:
        yield made, client


def test_admin_analyses_and_exports_a_study_raters_cannot(served):
    from gradio_client.exceptions import AppError

    made, client = served
    rita = client.predict("rita", "rita-password", api_name="/sign_in")[0]
    with pytest.raises(AppError, match="needs an admin account"):
        client.predict(rita, made["pair"], "efficientnet", "none", "tsne", "fid", "fooling_rate", api_name="/analyse_study")
    admin = client.predict("admin", ADMIN_PASSWORD, api_name="/sign_in")[0]
    listed, extractor = client.predict(admin, api_name="/analysis_studies")
    assert listed["value"] == made["pair"]  # newest first
    assert extractor["value"] == "efficientnet"  # the extractor whose metrics are stored
    assert [label for label, _ in listed["choices"]] == [
        f"#{made['pair']} Simulated pair (pair, open) [SIMULATED]", f"#{made['single']} Simulated single (single, open) [SIMULATED]"]
    out = client.predict(admin, made["pair"], "efficientnet", "specialty", "tsne", "fid", "fooling_rate",
                         api_name="/analyse_study")
    banner, outcome_table, correlations, embedding, ranking_table = out[0], out[4], out[12], out[15], out[18]
    assert "SIMULATED PANEL" in banner and "pair mode" in banner
    assert {"stratum", "accuracy_2afc", "p_vs_chance"} <= set(outcome_table["headers"])
    assert any(row[0] == "fid" for row in correlations["data"])
    assert embedding is not None and len(ranking_table["data"]) == 3
    files = client.predict(admin, "fooling_rate", "fid", api_name="/analysis_report")
    names = sorted(Path(f).name for f in files)
    assert names == [f"study-{made['pair']}-analysis.zip", f"study-{made['pair']}-report.html"]
    with zipfile.ZipFile(next(f for f in files if f.endswith(".zip"))) as archive:
        assert f"study-{made['pair']}-ratings.csv" in archive.namelist()


def test_analysis_before_choosing_a_study_is_a_clear_error(served):
    from gradio_client.exceptions import AppError

    _, client = served
    admin = client.predict("admin", ADMIN_PASSWORD, api_name="/sign_in")[0]
    with pytest.raises(AppError, match="no study with id"):
        client.predict(admin, None, "efficientnet", "none", "tsne", "fid", "fooling_rate", api_name="/analyse_study")
