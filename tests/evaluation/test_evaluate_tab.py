"""The Evaluate tab through the HTTP API: an admin computes metrics with EfficientNet-Lite0; a rater cannot."""

from __future__ import annotations

import re

import pytest

from appconfig import AppConfig
from database import metric_results as metric_store
from database.connection import connect
from review import studies
from tests.conftest import serve
from tests.review.conftest import ADMIN_PASSWORD, add_images


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    config = AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "checkpoints", db_path=tmp / "study.db", device="cpu")
    with connect(config.db_path) as db:
        add_images(db, tmp / "images", n_real=6, n_synthetic=4, checkpoints=2)
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
        studies.create_account(db, "rita", "rater", "rita-password")
    with serve(config) as client:
        yield config, client


def test_admin_computes_and_reads_metrics_raters_cannot(served):
    from gradio_client.exceptions import AppError

    config, client = served
    rita = client.predict("rita", "rita-password", api_name="/sign_in")[0]
    with pytest.raises(AppError, match="needs an admin account"):
        client.predict(rita, "efficientnet", "", "fid", "pooled", api_name="/compute_metrics")
    admin = client.predict("admin", ADMIN_PASSWORD, api_name="/sign_in")[0]
    status, table, plot, _ = client.predict(admin, "efficientnet", "", "fid", "pooled", api_name="/compute_metrics")
    assert status.startswith("Computed")
    rows = table["data"]
    assert {row[3] for row in rows} >= {"fid", "kid", "precision", "recall", "density", "coverage", "label_fidelity",
                                        "augmentation_utility", "diversity_ms_ssim", "memorisation"}
    assert {row[0] for row in rows} == {100, 200}  # both checkpoints, by step
    assert plot is not None
    with connect(config.db_path) as db:
        stored = metric_store.list_results(db, "efficientnet")
    assert len(stored) == len(rows)
    assert all(r["preprocessing"].startswith("uint8 RGB") for r in stored)
    assert len(list((config.data_dir / "features" / "efficientnet").rglob("*.npy"))) == 12 + 16  # every image once
    # What the admin reads: each metric at its precision, missing as an em dash; the API keeps the numbers.
    shown = {(row[0], row[2], row[3]): dict(zip(table["headers"], cells))
             for row, cells in zip(rows, table["metadata"]["display_value"])}
    fid, kid, fidelity = (shown[(100, "pooled", name)] for name in ("fid", "kid", "label_fidelity"))
    assert re.fullmatch(r"\d+\.\d", fid["value"]) and re.fullmatch(r"-?0\.\d+", kid["value"])
    assert len(kid["value"].lstrip("-0.")) <= 4 and re.fullmatch(r"\d+\.\d%", fidelity["value"])
    assert shown[(100, "pooled", "precision")]["CI low"] == "—" and fid["n real"] == "12"
    for cells in table["metadata"]["display_value"]:
        for cell in cells[4:9]:
            assert cell == "—" or re.fullmatch(r"[-+]?\d+(\.\d{1,6})?( pp|%)?", cell), cell
    assert isinstance(next(row for row in rows if row[3] == "fid")[4], float)
