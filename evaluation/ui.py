"""The Evaluate tab (admins): compute every metric for every checkpoint, read them as a table and over steps."""

from __future__ import annotations

import tempfile
from contextlib import closing
from pathlib import Path

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from database.metric_results import list_results
from evaluation.cache import CacheError, FeatureCache
from evaluation.features import ExtractorUnavailable, get_extractor, resolve_device
from evaluation.images import ImageSetError
from evaluation.scorecard import (
    ALL_METRICS,
    SCOPES,
    SEGMENTATION_EXTRACTOR,
    NothingToEvaluate,
    ScorecardSettings,
    compute_scorecard,
    compute_segmentation_scorecard,
)
from evaluation.segmentation import SegmentationError, SegmentationSettings
from evaluation.study import figures as figures_mod
from evaluation.study.analysis import analyse_with_embedding, embedding_points, preferred_extractor, study_list
from evaluation.study.concordance import OUTCOMES
from evaluation.study.outcomes import STRATA, AnalysisError
from evaluation.study.report import build_figures, write_bundle
from generation.masks.files import MaskError
from generation.ui import user_errors_of
from review.studies import Forbidden, NotSignedIn, ReviewError, require_admin

TABLE = ["step", "checkpoint", "scope", "metric", "value", "CI low", "CI high", "n real", "n fake", "extractor", "note", "computed"]
LOWER_IS_BETTER = {"fid", "kid", "diversity_ms_ssim", "memorisation"}


user_errors = user_errors_of(ReviewError, NothingToEvaluate, ExtractorUnavailable, ImageSetError, CacheError, AnalysisError,
                             SegmentationError, MaskError)


def build(services, session) -> None:
    """Build the tab's components in the current Blocks context; ``session`` is the signed-in token."""
    gr.Markdown(
        "Metrics per checkpoint, per pathology and pooled, against the registered real images. Features are cached "
        "by (image sha256, extractor, preprocessing), so a new checkpoint costs only its own images. "
        "FID at small n is dominated by bias: read it with KID and the CIs.")
    with gr.Row():
        extractor = gr.Dropdown(["inception", "efficientnet"], value="inception", label="Feature extractor")
        training = gr.Textbox(label="Training images folder (optional, for memorisation)")
        compute = gr.Button("Compute / refresh metrics", variant="primary")
        show = gr.Button("Show stored results")
    with gr.Accordion("Downstream segmentation (checkpoints with image+mask pairs)", open=False):
        gr.Markdown("A small U-Net trained on real pairs only, on a checkpoint's synthetic pairs only, and on real + "
                    "synthetic pairs at several real-set sizes, tested on the same held-out real pairs: Dice and IoU "
                    "with bootstrap CIs over test images (`seg_*` rows below). About 20 s per training run on 2 CPU "
                    "cores at 64 px, so minutes per checkpoint; seconds on a GPU.")
        with gr.Row():
            seg_sizes = gr.Textbox("16 32 64 all", label="Real training-set sizes")
            seg_steps = gr.Number(300, precision=0, minimum=10, maximum=100000, label="Training steps per run")
            segment = gr.Button("Run the segmentation test")
    status = gr.Markdown("")
    table = gr.Dataframe(headers=TABLE, label="Metric results", interactive=False, wrap=True)
    with gr.Row():
        metric = gr.Dropdown([*ALL_METRICS, "seg_dice_synthetic_only", "seg_dice_gain_n16"], value="fid", label="Metric",
                             allow_custom_value=True)
        scope = gr.Radio(list(SCOPES), value="pooled", label="Scope")
    plot = gr.Plot(label="Metric over training steps")
    with gr.Accordion("Memorisation: nearest training image of each synthetic image", open=False):
        pairs = gr.Gallery(label="synthetic | nearest training image", columns=4, height="auto")

    def view(db, name, metric_name, scope_name):
        rows = list_results(db, name) + list_results(db, SEGMENTATION_EXTRACTOR)
        return _table(rows), _figure(rows, metric_name, scope_name, name), _pairs(rows)

    @user_errors
    def on_compute(token, name, training_dir, metric_name, scope_name, progress=gr.Progress()):
        db = services.db()
        try:
            require_admin(db, token)
            folder = Path(training_dir.strip()) if training_dir and training_dir.strip() else None
            model = get_extractor(name, device=resolve_device(services.config.device))
            rows = compute_scorecard(db, model, FeatureCache(services.config.data_dir / "features"), ScorecardSettings(),
                                     training_dir=folder, on_progress=lambda f, text: progress(f, desc=text))
            return f"Computed {len(rows)} results with {name}.", *view(db, name, metric_name, scope_name)
        finally:
            db.close()

    @user_errors
    def on_show(token, name, metric_name, scope_name):
        db = services.db()
        try:
            require_admin(db, token)
            return view(db, name, metric_name, scope_name)
        finally:
            db.close()

    @user_errors
    def on_segment(token, sizes_text, steps, name, metric_name, scope_name, progress=gr.Progress()):
        sizes = _sizes(sizes_text)
        with closing(services.db()) as db:
            require_admin(db, token)
            device = str(resolve_device(services.config.device))
            rows = compute_segmentation_scorecard(db, SegmentationSettings(steps=int(steps or 300)), sizes=sizes,
                                                  device=device, on_progress=lambda f, text: progress(f, desc=text))
            return f"Stored {len(rows)} segmentation results ({device}).", *view(db, name, metric_name, scope_name)

    segment.click(on_segment, [session, seg_sizes, seg_steps, extractor, metric, scope], [status, table, plot, pairs],
                  api_name="segmentation_test")
    compute.click(on_compute, [session, extractor, training, metric, scope], [status, table, plot, pairs], api_name="compute_metrics")
    for trigger in (show.click, metric.change, scope.change):
        trigger(on_show, [session, extractor, metric, scope], [table, plot, pairs],
                api_name="metric_results" if trigger == show.click else False)


def _sizes(text: str) -> tuple:
    """``"16 32 all"`` -> ``(16, 32, "all")``."""
    sizes = []
    for part in (text or "").replace(",", " ").split():
        if part == "all":
            sizes.append("all")
        elif part.isdigit() and int(part) >= 1:
            sizes.append(int(part))
        else:
            raise ReviewError(f"real training-set sizes: whole numbers >= 1 or 'all', separated by spaces; got {part!r}")
    if not sizes:
        raise ReviewError("real training-set sizes: give at least one, e.g. '16 32 all'")
    return tuple(sizes)


def _table(rows: list[dict]) -> list[list]:
    out = []
    for r in rows:
        note = (r["details"] or {}).get("skipped") or "; ".join((r["details"] or {}).get("warnings", []))
        out.append([r["checkpoint_step"], r["checkpoint_name"], r["scope"], r["metric"], _round(r["value"]),
                    _round(r["ci_low"]), _round(r["ci_high"]), r["n_real"], r["n_fake"], r["extractor"], note[:200],
                    r["computed_at"]])
    return out


def _figure(rows: list[dict], metric: str, scope: str, extractor: str) -> go.Figure:
    chosen = sorted((r for r in rows if r["metric"] == metric and r["scope"] == scope and r["value"] is not None),
                    key=lambda r: r["checkpoint_step"])
    steps = [r["checkpoint_step"] for r in chosen]
    figure = go.Figure()
    if any(r["ci_low"] is not None for r in chosen):
        figure.add_trace(go.Scatter(x=steps + steps[::-1],
                                    y=[r["ci_high"] for r in chosen] + [r["ci_low"] for r in chosen][::-1],
                                    fill="toself", line={"width": 0}, opacity=0.25, name="CI", hoverinfo="skip"))
    figure.add_trace(go.Scatter(x=steps, y=[r["value"] for r in chosen], mode="lines+markers", name=metric,
                                text=[f"{r['checkpoint_name']} · n_real {r['n_real']} · n_fake {r['n_fake']}" for r in chosen]))
    direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    figure.update_layout(title=f"{metric} ({scope}, {extractor}; {direction})", xaxis_title="training step",
                         yaxis_title=metric, height=380, margin={"t": 50, "b": 40})
    return figure


def _pairs(rows: list[dict]) -> list[tuple]:
    # Loaded here, not served by path: the training folder can be anywhere on disk.
    items = []
    for r in rows:
        if r["metric"] == "memorisation" and r["value"] is not None:
            for pair in (r["details"] or {}).get("pairs", [])[:4]:
                if not (Path(pair["fake"]).is_file() and Path(pair["train"]).is_file()):
                    continue
                caption = f"step {r['checkpoint_step']} · distance {pair['distance']:.3f}"
                items += [(Image.open(pair["fake"]).convert("RGB"), f"synthetic · {caption}"),
                          (Image.open(pair["train"]).convert("RGB"), f"nearest training · {caption}")]
    return items


def _round(value):
    return None if value is None else round(float(value), 4)


# The embedding plot is plotly.js: its hover event fills the box beside it with the image and its ratings.
HOVER_JS = """
if (!window.__polypHover) {
  const show = (event) => {
    const data = event.points[0].customdata;
    const box = document.getElementById('analysis-hover');
    if (!data || !box) return;
    box.querySelector('img').src = data[0] || '';
    box.querySelector('img').style.display = data[0] ? 'block' : 'none';
    box.querySelector('p').textContent = data[2] + ': ' + data[1];
  };
  // Re-bound on every tick: a re-rendered plot may keep its element but lose its listeners.
  window.__polypHover = setInterval(() => {
    document.querySelectorAll('#analysis-embedding .js-plotly-plot').forEach((plot) => {
      if (typeof plot.on !== 'function') return;
      plot.removeListener('plotly_hover', show);
      plot.on('plotly_hover', show);
    });
  }, 500);
}
"""
HOVER_BOX = ("<div id='analysis-hover' style='min-height:120px'><img alt='hovered image' style='display:none;width:144px'>"
             "<p>Hover a point to see its image and ratings.</p></div>")
OUTCOME_COLUMNS = ["stratum", "group", "checkpoint_step", "scope", "n_ratings", "n_images", "n_raters", "judged_real",
                   "judged_real_low", "judged_real_high", "accuracy_2afc", "accuracy_low", "accuracy_high",
                   "p_vs_chance", "realism_mean", "pathology_accuracy", "pathology_low", "pathology_high",
                   "pathology_auc", "auc_low", "auc_high", "pathology_cannot_tell", "mask_fits", "mask_fits_low",
                   "mask_fits_high", "response_ms_median"]


def build_analysis(services, session) -> None:
    """The Analysis tab (admins): one study's ratings against its checkpoints' metrics and features."""
    gr.Markdown(
        "Expert outcomes per checkpoint and pathology, agreement, expert-vs-metric correlations, the joint "
        "t-SNE/UMAP view and the ranking, for one study. Every figure has a download button (camera icon); "
        "**Export** writes every table as CSV and one self-contained HTML report.")
    with gr.Row():
        study = gr.Dropdown([], label="Study", scale=3, allow_custom_value=True)
        extractor = gr.Dropdown(["efficientnet", "inception"], value="efficientnet", label="Feature extractor")
        stratify = gr.Dropdown(list(STRATA), value="none", label="Stratify raters by")
        analyse = gr.Button("Analyse", variant="primary")
    banner = gr.Markdown("Choose a study and press **Analyse**.")
    state = gr.State(None)
    with gr.Tabs():
        with gr.Tab("Outcomes"):
            outcome_plot, realism_plot, pathology_plot = gr.Plot(label="Source"), gr.Plot(label="Realism"), gr.Plot(label="Pathology")
            outcome_table = gr.Dataframe(label="Outcomes per group and scope", interactive=False)
            gap_table = gr.Dataframe(label="Clinical significance gap (pathology accuracy real - synthetic)", interactive=False)
        with gr.Tab("Agreement"):
            agreement_plot = gr.Plot(label="Agreement")
            agreement_table = gr.Dataframe(label="Inter-rater agreement", interactive=False, wrap=True)
            intra_table = gr.Dataframe(label="Intra-rater agreement (planned repeats)", interactive=False)
            attention_table = gr.Dataframe(label="Attention checks", interactive=False)
        with gr.Tab("Expert vs metric"):
            with gr.Row():
                metric = gr.Dropdown(["fid"], value="fid", label="Metric", allow_custom_value=True)
                outcome = gr.Dropdown(list(OUTCOMES), value="fooling_rate", label="Expert outcome")
            scatter = gr.Plot(label="Metric vs expert outcome")
            correlation_table = gr.Dataframe(label="All correlations", interactive=False, wrap=True)
            links_table = gr.Dataframe(label="Per-image links (synthetic images)", interactive=False, wrap=True)
        with gr.Tab("Embedding"):
            with gr.Row():
                method = gr.Radio(["tsne", "umap"], value="tsne", label="Method",
                                  info="UMAP: its first use in a server process compiles (15-30 s on 2 cores)")
                checkpoint = gr.Dropdown(["all"], value="all", label="Checkpoint panel", allow_custom_value=True)
            with gr.Row():
                embedding = gr.Plot(label="Embedding", elem_id="analysis-embedding", scale=4)
                gr.HTML(HOVER_BOX, js_on_load=HOVER_JS, scale=1)
        with gr.Tab("Ranking"):
            ranking_note = gr.Markdown("")
            ranking_plot = gr.Plot(label="Ranking")
            ranking_table = gr.Dataframe(label="Bradley-Terry ranking", interactive=False)
        with gr.Tab("Export"):
            export = gr.Button("Write CSVs and HTML report")
            files = gr.File(label="Downloads", file_count="multiple")

    @user_errors
    def on_studies(token):
        with closing(services.db()) as db:
            try:
                require_admin(db, token)
            except (Forbidden, NotSignedIn):
                return gr.update(choices=[], value=None), gr.update()
            choices = [(_study_label(s), s["id"]) for s in study_list(db)]
            chosen = preferred_extractor(db)
        return (gr.update(choices=choices, value=choices[0][1] if choices else None),
                gr.update(value=chosen if chosen in ("efficientnet", "inception") else "efficientnet"))

    @user_errors
    def on_analyse(token, study_id, extractor_name, stratify_by, method_name, metric_name, outcome_name,
                   progress=gr.Progress()):
        with closing(services.db()) as db:
            require_admin(db, token)
            view = analyse_with_embedding(db, study_id, extractor_name, stratify_by, method_name,
                                          services.config.data_dir / "features", services.config.device,
                                          lambda fraction, text: progress(fraction, desc=text))
        analysis = view.analysis
        metrics = sorted({r["metric"] for r in analysis.correlations}) or ["fid"]
        chosen = metric_name if metric_name in metrics else metrics[0]
        return (_banner(analysis), view, *_outcome_views(analysis), *_agreement_views(analysis),
                gr.update(choices=metrics, value=chosen), _scatter(analysis, chosen, outcome_name),
                _rows(analysis.correlations, drop=("points",)), _frame(analysis.images),
                gr.update(choices=["all", *analysis.checkpoints], value="all"), _embedding(view, "all"),
                *_ranking_views(analysis))

    @user_errors
    def on_scatter(view, metric_name, outcome_name):
        return _scatter(_need(view).analysis, metric_name, outcome_name)

    @user_errors
    def on_embedding(view, method_name, panel):
        view = _need(view)
        allowed = ["all", *view.analysis.checkpoints]
        if panel not in allowed:
            raise ReviewError(f"checkpoint panel: choose one of {', '.join(allowed)} (got {panel!r})")
        if view.fitted.method != method_name:
            view.fitted, view.points = embedding_points(view.images, view.analysis.frame, method_name)
        return view, _embedding(view, panel)

    @user_errors
    def on_export(token, view, outcome_name, metric_name):
        with closing(services.db()) as db:
            require_admin(db, token)
        view = _need(view)
        figures = build_figures(view.analysis, view.fitted, view.points, metric_name, outcome_name)
        folder = Path(tempfile.mkdtemp(prefix="polyp-analysis-"))
        bundle, report = write_bundle(view.analysis, figures, folder, view.points)
        return [str(bundle), str(report)]

    session.change(on_studies, session, [study, extractor], api_name="analysis_studies")
    analyse.click(on_analyse, [session, study, extractor, stratify, method, metric, outcome],
                  [banner, state, outcome_plot, realism_plot, pathology_plot, outcome_table, gap_table, agreement_plot,
                   agreement_table, intra_table, attention_table, metric, scatter, correlation_table, links_table,
                   checkpoint, embedding, ranking_note, ranking_plot, ranking_table], api_name="analyse_study")
    for trigger in (metric.change, outcome.change):
        trigger(on_scatter, [state, metric, outcome], scatter, api_name=False)
    for trigger in (method.change, checkpoint.change):
        trigger(on_embedding, [state, method, checkpoint], [state, embedding], api_name=False)
    export.click(on_export, [session, state, outcome, metric], files, api_name="analysis_report")


def _need(view):
    if view is None:
        raise ReviewError("press Analyse first")
    return view


def _study_label(study: dict) -> str:
    tag = " [SIMULATED]" if study.get("simulated") else ""
    return f"#{study['id']} {study['name']} ({study['mode']}, {study['status']}){tag}"


def _banner(analysis) -> str:
    study, frame = analysis.study, analysis.frame
    lines = [f"**Study #{study['id']} {study['name']}** ({study['mode']} mode): {frame['rater'].nunique()} raters, "
             f"{frame['trial_id'].nunique()} ratings, {len(analysis.checkpoints)} checkpoints; metrics from "
             f"**{analysis.extractor}**; strata: {analysis.stratify}."]
    lines += [f"> ⚠️ **{w}**" for w in analysis.warnings]
    return "\n\n".join(lines)


def _outcome_views(analysis):
    single = analysis.study["mode"] == "single"
    realism = gr.update(value=figures_mod.realism_figure(analysis) if single else None, visible=single)
    return (figures_mod.outcome_figure(analysis), realism,
            figures_mod.pathology_figure(analysis), _rows(analysis.outcomes, keep=OUTCOME_COLUMNS),
            _rows(analysis.clinical_gap))


def _agreement_views(analysis):
    return (figures_mod.agreement_figure(analysis), _rows(analysis.agreement), _rows(analysis.intra_rater),
            _rows(analysis.attention))


def _ranking_views(analysis):
    plot = figures_mod.ranking_figure(analysis) if analysis.ranking else None
    return analysis.ranking_note, plot, _rows(analysis.ranking)


def _scatter(analysis, metric_name: str, outcome_name: str):
    found = [r for r in analysis.correlations if r["metric"] == metric_name and r["outcome"] == outcome_name]
    return figures_mod.scatter_figure(found[0], analysis.metrics, analysis) if found else None


def _embedding(view, panel: str):
    return figures_mod.embedding_figure(view.points, view.fitted, view.analysis,
                                        None if panel in (None, "all") else panel)


def _rows(rows: list[dict], keep: list[str] | None = None, drop: tuple = ()):
    import pandas as pd

    table = pd.DataFrame(rows)
    if keep is not None:
        table = table[[c for c in keep if c in table.columns]]
    return _frame(table.drop(columns=[c for c in drop if c in table.columns]))


def _frame(table):
    return table.round(4) if len(table) else None
