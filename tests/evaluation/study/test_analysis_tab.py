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
    listed, extractor, next_step = client.predict(admin, api_name="/analysis_studies")
    assert next_step.startswith("**What to do next:** choose a study")
    assert listed["value"] == made["pair"]  # newest first
    assert extractor["value"] == "efficientnet"  # the extractor whose metrics are stored
    assert [label for label, _ in listed["choices"]] == [
        f"#{made['pair']} Simulated pair (pair, open) [SIMULATED]", f"#{made['single']} Simulated single (single, open) [SIMULATED]"]
    out = client.predict(admin, made["pair"], "efficientnet", "specialty", "tsne", "fid", "fooling_rate",
                         api_name="/analyse_study")
    banner, outcome_table, correlations, embedding, ranking_table = out[0], out[4], out[12], out[15], out[18]
    assert "SIMULATED PANEL" in banner and "pair mode" in banner
    assert {"stratum", "accuracy_2afc", "p_vs_chance"} <= set(outcome_table["headers"])
    _assert_shown_at_their_precision(outcome_table, {"accuracy_2afc": r"\d+\.\d%|—", "n_raters": r"\d+",
                                                     "p_vs_chance": r"<0\.001|\d\.\d+|—", "checkpoint_step": r"\d+|—"})
    _assert_shown_at_their_precision(out[5], {"gap": r"[-+]?\d+\.\d pp"})  # the clinical gap
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


def _assert_shown_at_their_precision(table: dict, patterns: dict[str, str]) -> None:
    """Every cell of the named columns as the admin reads it (``display_value``) matches its pattern; no raw float
    (0.9805999994277954), exponent (2.776e-17) or "None" anywhere in the table."""
    import re

    shown = table["metadata"]["display_value"]
    assert shown, table
    for column, pattern in patterns.items():
        at = table["headers"].index(column)
        for cells in shown:
            assert re.fullmatch(pattern, cells[at]), (column, cells[at])
    for cells in shown:
        for cell in cells:
            assert not re.search(r"\d\.\d{5,}|\de-\d|^None$|^nan$", str(cell)), cell
