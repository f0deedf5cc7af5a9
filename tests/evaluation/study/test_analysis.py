"""A whole study analysis on a simulated panel: outcomes, agreement, ranking, correlations, embedding, exports."""

from __future__ import annotations

import io
import zipfile

import pandas as pd
import pytest

from database.connection import open_db
from evaluation.cache import FeatureCache
from evaluation.scorecard import ScorecardSettings, compute_scorecard
from evaluation.study import figures
from evaluation.study.analysis import analyse_study, embedding_points, study_images
from evaluation.study.outcomes import AnalysisError
from evaluation.study.report import write_bundle
from review import studies
from review.design import StudyDesign
from review.simulate import simulate_panel
from tests.evaluation.conftest import make_tiny_extractor
from tests.review.conftest import ADMIN_PASSWORD, add_images


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """Three checkpoints, a single and a pair study each rated by a simulated panel of 5, tiny-extractor metrics."""
    tmp = tmp_path_factory.mktemp("analysis")
    db = open_db(tmp / "study.db")
    ids = add_images(db, tmp / "images", n_real=12, n_synthetic=6, checkpoints=3)
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    session = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    made = {}
    for mode in ("single", "pair"):
        design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=4, real_per_label=6,
                             ratings_per_image=3, repeats=2, attention_checks=2, size=64, seed=3)
        made[mode] = simulate_panel(db, tmp / "data", session, f"sim {mode}", design, n_raters=5, seed=3)["study_id"]
    extractor, cache = make_tiny_extractor(), FeatureCache(tmp / "features")
    compute_scorecard(db, extractor, cache, ScorecardSettings(n_boot=10, utility_repeats=2, diversity_pairs=10))
    yield db, made, extractor, cache
    db.close()


def test_single_study_analysis_has_every_part(simulated):
    db, made, extractor, cache = simulated
    images = study_images(db, made["single"], extractor, cache)
    analysis = analyse_study(db, made["single"], "tiny", images=images, n_boot=50)
    assert analysis.simulated and "SIMULATED PANEL" in analysis.warnings[0]
    assert analysis.checkpoints == ["checkpoint-100", "checkpoint-200", "checkpoint-300"]
    pooled = [r for r in analysis.outcomes if r["scope"] == "pooled"]
    assert [r["group"] for r in pooled] == ["real", *analysis.checkpoints]
    assert all(0 <= r["judged_real_low"] <= r["judged_real"] <= r["judged_real_high"] <= 1 for r in pooled)
    assert {(r["question"], r["statistic"]) for r in analysis.agreement} >= {
        ("real_or_synthetic", "fleiss_kappa"), ("realism", "krippendorff_alpha_ordinal"), ("pathology_call", "gwet_ac1")}
    assert {r["question"] for r in analysis.intra_rater} == {"judged_real", "pathology_call"}
    assert any(r["rater"] == "all" and r["n"] == 10 for r in analysis.attention)  # 5 raters x 2 checks
    assert analysis.ranking == [] and "pair-mode study" in analysis.ranking_note
    fid = next(r for r in analysis.correlations if r["metric"] == "fid" and r["outcome"] == "fooling_rate")
    assert fid["n_checkpoints"] == 3 and not fid["conclusive"] and "too few to conclude anything" in fid["note"]
    assert {"nearest_real_distance", "label_fidelity_score", "judged_real"} <= set(analysis.images.columns)
    assert len(analysis.image_links) == 2


def test_pair_study_ranks_checkpoints_and_stratifies(simulated):
    db, made, _, _ = simulated
    analysis = analyse_study(db, made["pair"], "tiny", stratify="specialty", n_boot=50)
    assert sorted(r["checkpoint"] for r in analysis.ranking) == ["checkpoint-100", "checkpoint-200", "checkpoint-300"]
    assert all(r["ci_low"] <= r["strength"] <= r["ci_high"] for r in analysis.ranking)
    synthetic = [r for r in analysis.outcomes if r["group"] != "real" and r["scope"] == "pooled"]
    assert synthetic and all(r["accuracy_2afc"] is not None and r["p_vs_chance"] is not None for r in synthetic)
    assert {r["stratum"] for r in analysis.outcomes} <= {"gastroenterology", "endoscopy nurse", "trainee"}


def test_embedding_points_carry_thumbnails_and_ratings(simulated):
    db, made, extractor, cache = simulated
    images = study_images(db, made["single"], extractor, cache)
    analysis = analyse_study(db, made["single"], "tiny", images=images, n_boot=20)
    fitted, points = embedding_points(images, analysis.frame, "tsne")
    assert len(points) == 24 + 3 * 12 and fitted.coords.shape == (len(points), 2)
    assert points["thumbnail"].str.startswith("data:image/jpeg;base64,").all()
    rated = points[points["ratings"].str.contains(r"ratings?: judged real")]
    assert 0 < len(rated) < len(points)  # study images have ratings, the others say so


def test_exports_are_tidy_marked_simulated_and_the_report_is_self_contained(simulated, tmp_path):
    db, made, extractor, cache = simulated
    images = study_images(db, made["pair"], extractor, cache)
    analysis = analyse_study(db, made["pair"], "tiny", images=images, n_boot=20)
    fitted, points = embedding_points(images, analysis.frame, "tsne")
    drawn = {"outcome": figures.outcome_figure(analysis), "ranking": figures.ranking_figure(analysis),
             "embedding": figures.embedding_figure(points, fitted, analysis)}
    bundle, report = write_bundle(analysis, drawn, tmp_path, points)
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        assert {f"study-{made['pair']}-{name}.csv" for name in ("ratings", "images", "metrics", "checkpoints")} <= names
        for name in names - {report.name}:
            table = pd.read_csv(io.BytesIO(archive.read(name)))
            assert table.empty or (table["study_simulated"] == 1).all(), name
        checkpoints = pd.read_csv(io.BytesIO(archive.read(f"study-{made['pair']}-checkpoints.csv")))
    assert {"accuracy_2afc", "bt_strength", "metric_fid", "clinical_gap"} <= set(checkpoints.columns)
    text = report.read_text()
    assert "SIMULATED PANEL" in text and "Plotly" in text and "plotly_hover" in text
    assert _external_references(text) == []  # nothing is fetched when the report is opened


def _external_references(text: str) -> list[str]:
    """src/href attributes of the document's own tags (plotly.js's source is inside a script, not a tag)."""
    from html.parser import HTMLParser

    found = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.extend(value for name, value in attrs if name in ("src", "href") and value and not value.startswith("data:"))

    Tags().feed(text)
    return found


def test_unknown_study_is_a_clear_error(simulated):
    db, *_ = simulated
    with pytest.raises(AnalysisError, match="no study with id 999"):
        analyse_study(db, 999)
