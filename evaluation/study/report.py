"""Exports of a study analysis: tidy CSV tables and one self-contained HTML report.

The CSV columns are documented one by one in docs/analysis-export.md. Every table carries
``study_id`` and ``study_simulated`` so rows from a simulated panel can never pass for expert data,
and a ``note`` column saying what each row rests on. CSV cells that a spreadsheet would run as a
formula (a comment or study name starting with ``=``, ``+``, ``-``, ``@``) are neutralised.
The HTML report embeds plotly.js and every figure, opens offline, and shows an image on hover
over the embedding points; its tables show each number at the precision of its kind
(``common.numbers``: percentages, p-values, counts), while the CSVs keep full precision.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from common.cli import run_cli
from common.files import atomic_path, write_atomic
from common.numbers import shown_frame
from common.spreadsheet import neutralise_cell
from database.connection import connect
from evaluation.cache import CacheError
from evaluation.features import EXTRACTORS, ExtractorUnavailable
from evaluation.study import figures
from evaluation.study.analysis import analyse_with_embedding
from evaluation.study.embedding import METHODS, EmbeddingError
from evaluation.study.notes import CANNOT_TELL, CANNOT_TELL_RULE, basis_note, join
from evaluation.study.outcomes import STRATA, AnalysisError, outcome_table

METRIC_COLUMNS = ("checkpoint_name", "checkpoint_step", "scope", "metric", "value", "ci_low", "ci_high", "extractor",
                  "preprocessing", "n_real", "n_fake", "computed_at")
HOVER_JS = """
document.querySelectorAll('.js-plotly-plot').forEach(function (plot) {
  plot.on('plotly_hover', function (event) {
    var data = event.points[0].customdata;
    if (!data || !data[0]) return;
    var box = document.getElementById('hover-box');
    box.querySelector('img').src = data[0];
    box.querySelector('p').textContent = data[2] + ' — ' + data[1];
    box.style.display = 'block';
  });
});
"""
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 6px}
.banner{background:#fdebd0;border:2px solid #e67e22;padding:0.8em;font-weight:bold}
#hover-box{position:fixed;right:16px;bottom:16px;background:#fff;border:1px solid #888;padding:6px;display:none;width:160px}
#hover-box img{width:144px;image-rendering:auto}#hover-box p{font-size:11px;margin:4px 0 0}
"""


def tables(analysis, points: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The tidy tables: ``ratings``, ``images``, ``metrics``, ``checkpoints``, ``outcomes``,
    ``agreement``, ``intra_rater``, ``attention``, ``correlations``, ``ranking``, ``image_links``."""
    study = {"study_id": analysis.study["id"], "study_simulated": int(bool(analysis.study.get("simulated")))}
    frame = analysis.frame
    ratings = frame.drop(columns=[c for c in ("study_simulated", "study_id") if c in frame.columns])
    out = {
        "ratings": ratings.assign(note=_rating_notes(ratings)),
        "images": _images(analysis, points),
        "metrics": pd.DataFrame([{**{k: r.get(k) for k in METRIC_COLUMNS}, "note": _metric_note(r)}
                                 for r in analysis.metrics], columns=[*METRIC_COLUMNS, "note"]),
        "checkpoints": _checkpoints(analysis),
        "outcomes": pd.DataFrame(analysis.outcomes),
        "agreement": pd.DataFrame(analysis.agreement),
        "intra_rater": pd.DataFrame(analysis.intra_rater),
        "attention": pd.DataFrame(analysis.attention),
        "correlations": pd.DataFrame([{k: v for k, v in r.items() if k != "points"} for r in analysis.correlations]),
        "ranking": pd.DataFrame(analysis.ranking),
        "image_links": pd.DataFrame(analysis.image_links),
    }
    return {name: _stamp(_with_note(table), study) for name, table in out.items()}


def write_bundle(analysis, figures: dict, folder: Path, points: pd.DataFrame | None = None) -> tuple[Path, Path]:
    """Write ``study-<id>-analysis.zip`` (every CSV and the report) and ``study-<id>-report.html``.

    Returns:
        (zip path, report path).
    """
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"study-{analysis.study['id']}"
    report = folder / f"{stem}-report.html"
    write_atomic(report, render_html(analysis, figures).encode("utf-8"))
    bundle = folder / f"{stem}-analysis.zip"
    with atomic_path(bundle) as partial, zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, table in tables(analysis, points).items():
            archive.writestr(f"{stem}-{name}.csv", neutralised(table).to_csv(index=False))
        archive.write(report, report.name)
    return bundle, report


def render_html(analysis, figures: dict) -> str:
    """A self-contained HTML report (plotly.js inline, thumbnails as data URIs, no network)."""
    study = analysis.study
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(study['name'])} - PolypTuring analysis</title>",
             f"<style>{STYLE}</style><script>{get_plotlyjs()}</script></head><body>",
             f"<h1>Study {study['id']}: {_e(study['name'])}</h1>",
             f"<p>Mode {_e(study['mode'])}; {_e(analysis.caption())}; metrics from the {_e(analysis.extractor)} "
             f"extractor; written {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} by PolypTuring.</p>",
             f"<p>Every table's <code>note</code> says what its row rests on; rows flagged 'n too small to conclude' "
             f"rest on fewer than 10 ratings or 3 raters (or have a 95 % interval wider than 0.5). Rule for "
             f"'{CANNOT_TELL}': {_e(CANNOT_TELL_RULE)}.</p>"]
    parts += [f"<p class='banner'>{_e(w)}</p>" for w in analysis.warnings]
    parts.append("<div id='hover-box'><img alt='hovered image'><p></p></div>")
    sections = [
        ("Expert outcomes", "outcomes", ["outcome", "realism", "pathology"]),
        ("Clinical significance gap", "clinical_gap", []),
        ("Agreement", "agreement", ["agreement"]),
        ("Intra-rater agreement (planned repeats)", "intra_rater", []),
        ("Attention checks", "attention", []),
        ("Checkpoint ranking", "ranking", ["ranking"]),
        ("Expert vs metric", "correlations", ["scatter"]),
        ("Per-image links", "image_links", []),
        ("Embedding", None, ["embedding"]),
    ]
    for title, table, figure_keys in sections:
        parts.append(f"<h2>{_e(title)}</h2>")
        if table == "ranking" and not analysis.ranking:
            parts.append(f"<p>{_e(analysis.ranking_note)}</p>")
        for key in figure_keys:
            if figures.get(key) is not None:
                parts.append(pio.to_html(figures[key], full_html=False, include_plotlyjs=False))
        if table:
            rows = getattr(analysis, table)
            if table == "correlations":
                rows = [{k: v for k, v in r.items() if k != "points"} for r in rows]
            parts.append(_table(pd.DataFrame(rows)))
    parts.append(f"<script>{HOVER_JS}</script></body></html>")
    return "\n".join(parts)


def neutralised(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every text cell a spreadsheet would run as a formula made inert (numbers untouched)."""
    return table.map(neutralise_cell)


def _with_note(table: pd.DataFrame) -> pd.DataFrame:
    """Every exported table has a ``note`` column (empty when a table has no rows to explain)."""
    return table if "note" in table.columns else table.assign(note=pd.Series(dtype=object))


def _rating_notes(ratings: pd.DataFrame) -> np.ndarray:
    """Per rating row: how the analysis reads it (attention, repeat, or a 'cannot tell' counted as not correct)."""
    kind = ratings["trial_kind"]
    cannot_tell = (ratings["pathology_call"] == CANNOT_TELL) & ratings["pathology_correct"].notna()
    return np.select([kind == "attention", kind == "repeat", cannot_tell],
                     ["attention check: scored apart (attention table), not in outcomes",
                      "planned repeat: intra-rater agreement only, not in outcomes",
                      "'cannot tell': pathology_correct 0 by the rule (the *_called_only columns leave it out)"],
                     default="")


def _metric_note(row: dict) -> str:
    details = row.get("details") if isinstance(row.get("details"), dict) else {}
    basis = f"rests on {row.get('n_real')} real and {row.get('n_fake')} synthetic images"
    return join(basis, str(details.get("pooled_as", "")), "" if row.get("ci_low") is not None else "no CI")


def _images(analysis, points: pd.DataFrame | None) -> pd.DataFrame:
    frame = analysis.frame[analysis.frame["trial_kind"] == "normal"]
    per = frame.groupby("image_sha256").agg(
        image_source=("image_source", "first"), image_label=("image_label", "first"),
        checkpoint_name=("checkpoint_name", "first"), checkpoint_step=("checkpoint_step", "first"),
        n_ratings=("judged_real", "size"), n_raters=("rater", "nunique"), judged_real_rate=("judged_real", "mean"),
        realism_mean=("realism", lambda v: pd.to_numeric(v, errors="coerce").mean()),
        pathology_accuracy=("pathology_correct", "mean")).reset_index()
    per["note"] = [basis_note(int(n), int(r)) for n, r in zip(per["n_ratings"], per["n_raters"])]
    if len(analysis.images):
        scores = analysis.images.set_index("image_sha256")[["nearest_real_distance", "label_fidelity_score"]]
        per = per.join(scores, on="image_sha256")
    if points is not None:
        coords = points.set_index("sha256")[["x", "y"]].rename(columns={"x": "embedding_x", "y": "embedding_y"})
        per = per.join(coords[~coords.index.duplicated()], on="image_sha256")
    return per


def _checkpoints(analysis) -> pd.DataFrame:
    overall = analysis.outcomes if analysis.stratify == "none" else outcome_table(
        analysis.frame, "none", seed=analysis.seed, n_boot=analysis.n_boot)
    rows = {r["group"]: {"checkpoint_name": r["group"], "checkpoint_step": r["checkpoint_step"],
                         **{k: v for k, v in r.items() if k not in ("stratum", "group", "checkpoint_step", "scope")}}
            for r in overall if r["scope"] == "pooled" and r["group"] != "real"}
    for gap in analysis.clinical_gap:
        if gap["group"] in rows:
            row = rows[gap["group"]]
            row.update(clinical_gap=gap["gap"], clinical_gap_low=gap["gap_low"], clinical_gap_high=gap["gap_high"],
                       clinical_gap_called_only=gap["gap_called_only"],
                       clinical_gap_called_only_low=gap["gap_called_only_low"],
                       clinical_gap_called_only_high=gap["gap_called_only_high"])
            row["note"] = join(row.get("note", ""), "gap: " + gap["note"])
    for rank in analysis.ranking:
        if rank["checkpoint"] in rows:
            row = rows[rank["checkpoint"]]
            row.update(bt_strength=rank["strength"], bt_low=rank["ci_low"], bt_high=rank["ci_high"],
                       bt_low_prior_bound=rank["ci_low_prior_bound"], bt_high_prior_bound=rank["ci_high_prior_bound"],
                       bt_rank=rank["rank_label"])
            row["note"] = join(row.get("note", ""), "ranking: " + rank["note"] if rank["note"] else "")
    for metric in analysis.metrics:
        if metric["scope"] == "pooled" and metric["group"] in rows:
            rows[metric["group"]][f"metric_{metric['metric']}"] = metric["value"]
    return pd.DataFrame(list(rows.values()))


def _stamp(table: pd.DataFrame, study: dict) -> pd.DataFrame:
    table = table.copy()
    for i, (key, value) in enumerate(study.items()):
        table.insert(i, key, value)
    return table


def _table(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p>(nothing to show)</p>"
    # Display text at each column's precision (``common.numbers``); the CSVs keep every digit.
    return shown_frame(table).to_html(index=False, escape=True)


def _e(text) -> str:
    return html.escape(str(text))


def build_figures(analysis, fitted=None, points: pd.DataFrame | None = None, metric: str = "fid",
                  outcome: str = "fooling_rate") -> dict:
    """Every figure of the report, ``None`` where a study has no such figure."""
    chosen = [r for r in analysis.correlations if r["metric"] == metric and r["outcome"] == outcome]
    return {"outcome": figures.outcome_figure(analysis), "pathology": figures.pathology_figure(analysis),
            "realism": figures.realism_figure(analysis) if analysis.study["mode"] == "single" else None,
            "agreement": figures.agreement_figure(analysis),
            "scatter": figures.scatter_figure(chosen[0], analysis.metrics, analysis) if chosen else None,
            "ranking": figures.ranking_figure(analysis) if analysis.ranking else None,
            "embedding": figures.embedding_figure(points, fitted, analysis) if points is not None else None}


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m evaluation.study.report``."""
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.study.report",
        description="Analyse one study (expert outcomes, agreement, ranking, expert-vs-metric correlations, "
                    "embedding) and write study-<id>-analysis.zip (every CSV, see docs/analysis-export.md) and "
                    "study-<id>-report.html (self-contained) into --out.")
    parser.add_argument("--study", type=int, required=True, help="the study's id (Studies tab)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write into (created if missing)")
    parser.add_argument("--db", type=Path, help="study database (default: the app's, DATA/polypturing.db)")
    parser.add_argument("--data-dir", type=Path, help="data folder holding the feature cache (default: the app's)")
    parser.add_argument("--extractor", choices=sorted(EXTRACTORS), default="efficientnet",
                        help="features for the embedding and per-image links, and whose metric results to use")
    parser.add_argument("--stratify", choices=list(STRATA), default="none", help="rater strata for outcomes and agreement")
    parser.add_argument("--method", choices=METHODS, default="tsne", help="embedding method")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run the extractor")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m evaluation.study.report``: write a study's CSVs and HTML report; return the exit status."""
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import config_from

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = config_from(data_dir=args.data_dir, db=args.db)
    return run_cli(lambda: _write(args, config), (AnalysisError, EmbeddingError, ExtractorUnavailable, CacheError, OSError))


def _write(args: argparse.Namespace, config) -> int:
    """Analyse the study the flags name and write its bundle and report; print where they are."""
    with connect(config.db_path) as db:
        view = analyse_with_embedding(db, args.study, args.extractor, args.stratify, args.method,
                                      config.data_dir / "features", args.device)
    bundle, report = write_bundle(view.analysis, build_figures(view.analysis, view.fitted, view.points),
                                  args.out, view.points)
    print(f"wrote {bundle} and {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
