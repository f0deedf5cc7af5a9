"""A whole study analysis on a simulated panel: outcomes, agreement, ranking, correlations, embedding, exports."""

from __future__ import annotations

import io
import re
import zipfile

import pandas as pd
import pytest

from database.connection import connect
from evaluation.cache import FeatureCache
from evaluation.metrics import MetricSettings
from evaluation.scorecard import compute_scorecard
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
    with connect(tmp / "study.db") as db:
        ids = add_images(db, tmp / "images", n_real=12, n_synthetic=6, checkpoints=3)
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
        session = studies.sign_in(db, "admin", ADMIN_PASSWORD)
        made = {}
        for mode in ("single", "pair"):
            design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=4, real_per_label=6,
                                 ratings_per_image=3, repeats=2, attention_checks=2, size=64, seed=3)
            made[mode] = simulate_panel(db, tmp / "data", session, f"sim {mode}", design, n_raters=5, seed=3)["study_id"]
        extractor, cache = make_tiny_extractor(), FeatureCache(tmp / "features")
        compute_scorecard(db, extractor, cache, MetricSettings(n_boot=10, utility_repeats=2, diversity_pairs=10))
        yield db, made, extractor, cache


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
    assert "Rests on: study" in drawn["embedding"].layout.title.text  # panels keep the figure's annotations
    bundle, report = write_bundle(analysis, drawn, tmp_path, points)
    with zipfile.ZipFile(bundle) as archive:
        names = set(archive.namelist())
        assert {f"study-{made['pair']}-{name}.csv" for name in ("ratings", "images", "metrics", "checkpoints")} <= names
        for name in names - {report.name}:
            table = pd.read_csv(io.BytesIO(archive.read(name)))
            assert table.empty or (table["study_simulated"] == 1).all(), name
            assert "note" in table.columns, name  # every exported table says what its rows rest on
        checkpoints = pd.read_csv(io.BytesIO(archive.read(f"study-{made['pair']}-checkpoints.csv")))
    assert {"accuracy_2afc", "bt_strength", "metric_fid", "clinical_gap", "clinical_gap_called_only",
            "bt_low_prior_bound", "note"} <= set(checkpoints.columns)
    assert checkpoints["note"].str.contains("rests on").all()
    text = report.read_text()
    assert "SIMULATED PANEL" in text and "Plotly" in text and "plotly_hover" in text
    assert _external_references(text) == []  # nothing is fetched when the report is opened
    cells = re.findall(r"<td>([^<]*)</td>", text[text.index("<h2>"):])  # the report's tables, as people read them
    assert cells and re.search(r"^\d+\.\d%$", "\n".join(cells), re.M)  # shares as percentages
    assert not [cell for cell in cells if re.search(r"\d\.\d{5,}|\de-\d|^None$|^nan$", cell)]
    assert (checkpoints["bt_strength"] * 1000 % 1).abs().gt(1e-6).any()  # the CSV keeps every digit


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


def test_every_figure_has_a_caption_saying_what_it_rests_on(simulated):
    db, made, extractor, cache = simulated
    analysis = analyse_study(db, made["single"], "tiny", n_boot=20)
    context = analysis.context
    # The simulated panel rated every planned trial of a study that is open for rating.
    assert context.n_planned > 0 and context.n_rated == context.n_planned and context.n_raters == 5
    drawn = [figures.outcome_figure(analysis), figures.pathology_figure(analysis), figures.realism_figure(analysis),
             figures.agreement_figure(analysis)]
    for figure in drawn:
        (caption,) = [a.text for a in figure.layout.annotations if a.text.startswith("<i>Rests on:")]
        assert f"study {context.status}" in caption and "5 raters" in caption and "planned trials rated" in caption
    assert all(r["note"].startswith("rests on") for r in analysis.outcomes)
    # Points the small-n rule flags (here: 95 % intervals wider than 0.5) are hollow, the others filled.
    symbols = {(trace.name, x): symbol for trace in drawn[0].data for x, symbol in zip(trace.x, trace.marker.symbol)}
    flagged = {(r["scope"], r["group"]): "too wide" in r["note"] or "too small" in r["note"]
               for r in analysis.outcomes}
    assert {k: v.endswith("-open") for k, v in symbols.items()} == flagged and any(flagged.values())


def test_csv_cells_that_would_run_as_formulas_are_neutralised(simulated, tmp_path):
    db, made, _, _ = simulated
    analysis = analyse_study(db, made["single"], "tiny", n_boot=10)
    payloads = ["=HYPERLINK(\"http://x\")", "+SUM(1,2)", "@SUM(1)", "=cmd|' /C calc'!A0"]
    frame = analysis.frame.copy()
    frame["comment"] = [payloads[i % 4] for i in range(len(frame))]
    frame["rater_specialty"] = "-gastro"
    analysis.frame = frame
    analysis.study = dict(analysis.study, name="=cmd|' /C calc'!A0")
    bundle, report = write_bundle(analysis, {}, tmp_path)
    with zipfile.ZipFile(bundle) as archive:
        ratings = pd.read_csv(io.BytesIO(archive.read(f"study-{made['single']}-ratings.csv")))
    assert set(ratings["comment"]) == {"'" + p for p in payloads}
    assert (ratings["rater_specialty"] == "'-gastro").all()
    assert pd.api.types.is_numeric_dtype(ratings["pathology_score"]) and (ratings["pathology_score"] < 0).any()
    assert "=cmd|&#x27; /C calc&#x27;!A0" in report.read_text()  # HTML-escaped in the report
