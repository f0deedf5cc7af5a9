"""The Analysis tab (admins): one study's ratings against its checkpoints' metrics and features."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import pandas as pd

from common import numbers
from common.files import new_temporary_folder, remove_temporary_folder
from evaluation.errors import USER_ERRORS
from evaluation.study import figures as figures_mod
from evaluation.study.analysis import analyse_with_embedding, embedding_points, preferred_extractor, study_list
from evaluation.study.concordance import OUTCOMES
from evaluation.study.outcomes import STRATA
from evaluation.study.report import build_figures, write_bundle
from generation.ui import next_step_text, user_errors_of
from review.studies import Forbidden, NotSignedIn, ReviewError, require_admin

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
                   "pathology_accuracy_called_only", "pathology_auc", "auc_low", "auc_high",
                   "pathology_auc_called_only", "pathology_cannot_tell", "mask_fits", "mask_fits_low",
                   "mask_fits_high", "response_ms_median", "note"]
EXTRACTOR_CHOICES = ("efficientnet", "inception")
EXPORT_PREFIX = "polyp-analysis-"
ANALYSIS_NEXT = ("choose a study (the newest is chosen) and press *Analyse*; read the sub-tabs, then download every "
                 "table and the HTML report under *Export*.")
ANALYSIS_EMPTY = ("no study yet: create and open one in **Studies (admin)**, or run `make demo-analysis` "
                  "for a study rated by a simulated panel.")

user_errors = user_errors_of(ReviewError, *USER_ERRORS)


def build_analysis(services, session) -> None:
    """Build the Analysis tab's components in the current Blocks context; ``session`` is the signed-in token."""
    ui = _layout()
    on = _AnalysisEvents(services, ui)
    session.change(on.studies, session, [ui.study, ui.extractor, ui.next_step], api_name="analysis_studies")
    ui.analyse.click(on.analyse, [session, ui.study, ui.extractor, ui.stratify, ui.method, ui.metric, ui.outcome],
                     ui.analysis_outputs(), api_name="analyse_study")
    for trigger in (ui.metric.change, ui.outcome.change):
        trigger(on.scatter, [session, ui.state, ui.metric, ui.outcome], ui.scatter, api_name=False)
    for trigger in (ui.method.change, ui.checkpoint.change):
        trigger(on.embedding, [session, ui.state, ui.method, ui.checkpoint], [ui.state, ui.embedding], api_name=False)
    ui.export.click(on.export, [session, ui.state, ui.outcome, ui.metric], [ui.files, ui.export_dir],
                    api_name="analysis_report").then(on.forget_export, [session, ui.export_dir], ui.export_dir,
                                                     api_name=False)


@dataclass(frozen=True)
class _Layout:
    """The tab's components: the study chooser, the kept ``StudyView`` (``state``) and one sub-tab per view."""

    next_step: gr.Markdown
    study: gr.Dropdown
    extractor: gr.Dropdown
    stratify: gr.Dropdown
    analyse: gr.Button
    banner: gr.Markdown
    state: gr.State
    outcome_plot: gr.Plot
    realism_plot: gr.Plot
    pathology_plot: gr.Plot
    outcome_table: gr.Dataframe
    gap_table: gr.Dataframe
    agreement_plot: gr.Plot
    agreement_table: gr.Dataframe
    intra_table: gr.Dataframe
    attention_table: gr.Dataframe
    metric: gr.Dropdown
    outcome: gr.Dropdown
    scatter: gr.Plot
    correlation_table: gr.Dataframe
    links_table: gr.Dataframe
    method: gr.Radio
    checkpoint: gr.Dropdown
    embedding: gr.Plot
    ranking_note: gr.Markdown
    ranking_plot: gr.Plot
    ranking_table: gr.Dataframe
    export: gr.Button
    files: gr.File
    export_dir: gr.State

    def analysis_outputs(self) -> list:
        """Everything that analysing a study fills, in the order of the ``/analyse_study`` API's outputs."""
        return [self.banner, self.state, self.outcome_plot, self.realism_plot, self.pathology_plot, self.outcome_table,
                self.gap_table, self.agreement_plot, self.agreement_table, self.intra_table, self.attention_table,
                self.metric, self.scatter, self.correlation_table, self.links_table, self.checkpoint, self.embedding,
                self.ranking_note, self.ranking_plot, self.ranking_table]


def _layout() -> _Layout:
    next_step = gr.Markdown(next_step_text(ANALYSIS_NEXT), elem_id="analysis-next")
    gr.Markdown(
        "Expert outcomes per checkpoint and pathology, agreement, expert-vs-metric correlations, the joint "
        "t-SNE/UMAP view and the ranking, for one study. Every figure has a download button (camera icon); "
        "**Export** writes every table as CSV and one self-contained HTML report.")
    with gr.Row():
        study = gr.Dropdown([], label="Study", scale=3, allow_custom_value=True)
        extractor = gr.Dropdown(list(EXTRACTOR_CHOICES), value="efficientnet", label="Feature extractor")
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
            export_dir = gr.State(None)
    return _Layout(next_step, study, extractor, stratify, analyse, banner, state, outcome_plot, realism_plot, pathology_plot,
                   outcome_table, gap_table, agreement_plot, agreement_table, intra_table, attention_table, metric,
                   outcome, scatter, correlation_table, links_table, method, checkpoint, embedding, ranking_note,
                   ranking_plot, ranking_table, export, files, export_dir)


class _AnalysisEvents:
    """The tab's callbacks: each checks the admin, calls ``evaluation.study`` and returns its components' updates."""

    def __init__(self, services, ui: _Layout):
        self.services, self.ui = services, ui

    @user_errors
    def studies(self, token):
        ui = self.ui
        with self.services.db() as db:
            try:
                require_admin(db, token)
            except (Forbidden, NotSignedIn):
                return {ui.study: gr.update(choices=[], value=None), ui.extractor: gr.update(), ui.next_step: gr.update()}
            choices = [(_study_label(s), s["id"]) for s in study_list(db)]
            chosen = preferred_extractor(db)
        return {ui.study: gr.update(choices=choices, value=choices[0][1] if choices else None),
                ui.extractor: gr.update(value=chosen if chosen in EXTRACTOR_CHOICES else "efficientnet"),
                ui.next_step: next_step_text(ANALYSIS_NEXT if choices else ANALYSIS_EMPTY)}

    @user_errors
    def analyse(self, token, study_id, extractor_name, stratify_by, method_name, metric_name, outcome_name,
                progress=gr.Progress()):
        config = self.services.config
        with self.services.db() as db:
            require_admin(db, token)
            view = analyse_with_embedding(db, study_id, extractor_name, stratify_by, method_name,
                                          config.data_dir / "features", config.device,
                                          lambda fraction, text: progress(fraction, desc=text))
        return _analysis_views(self.ui, view, metric_name, outcome_name)

    @user_errors
    def scatter(self, token, view, metric_name, outcome_name):
        with self.services.db() as db:
            require_admin(db, token)
        return _scatter(_need(view).analysis, metric_name, outcome_name)

    @user_errors
    def embedding(self, token, view, method_name, panel):
        with self.services.db() as db:
            require_admin(db, token)
        view = _need(view)
        allowed = ["all", *view.analysis.checkpoints]
        if panel not in allowed:
            raise ReviewError(f"checkpoint panel: choose one of {', '.join(allowed)} (got {panel!r})")
        if view.fitted.method != method_name:
            view.fitted, view.points = embedding_points(view.images, view.analysis.frame, method_name)
        return {self.ui.state: view, self.ui.embedding: _embedding(view, panel)}

    @user_errors
    def export(self, token, view, outcome_name, metric_name):
        with self.services.db() as db:
            require_admin(db, token)
        view = _need(view)
        figures = build_figures(view.analysis, view.fitted, view.points, metric_name, outcome_name)
        folder = new_temporary_folder(EXPORT_PREFIX)
        bundle, report = write_bundle(view.analysis, figures, folder, view.points)
        return {self.ui.files: [str(bundle), str(report)], self.ui.export_dir: str(folder)}

    def forget_export(self, token, folder):
        """Remove the temporary copies once Gradio has cached the files it serves (admins' exports only)."""
        with self.services.db() as db:
            try:
                require_admin(db, token)
            except (Forbidden, NotSignedIn):
                return None
        remove_temporary_folder(folder, EXPORT_PREFIX)
        return None


def _analysis_views(ui: _Layout, view, metric_name: str, outcome_name: str) -> dict:
    """Every sub-tab's figures and tables for a freshly analysed study."""
    analysis = view.analysis
    metrics = sorted({r["metric"] for r in analysis.correlations}) or ["fid"]
    chosen = metric_name if metric_name in metrics else metrics[0]
    single = analysis.study["mode"] == "single"
    return {
        ui.banner: _banner(analysis), ui.state: view,
        ui.outcome_plot: figures_mod.outcome_figure(analysis),
        ui.realism_plot: gr.update(value=figures_mod.realism_figure(analysis) if single else None, visible=single),
        ui.pathology_plot: figures_mod.pathology_figure(analysis),
        ui.outcome_table: _rows(analysis.outcomes, keep=OUTCOME_COLUMNS), ui.gap_table: _rows(analysis.clinical_gap),
        ui.agreement_plot: figures_mod.agreement_figure(analysis), ui.agreement_table: _rows(analysis.agreement),
        ui.intra_table: _rows(analysis.intra_rater), ui.attention_table: _rows(analysis.attention),
        ui.metric: gr.update(choices=metrics, value=chosen), ui.scatter: _scatter(analysis, chosen, outcome_name),
        ui.correlation_table: _rows(analysis.correlations, drop=("points",)), ui.links_table: _frame(analysis.images),
        ui.checkpoint: gr.update(choices=["all", *analysis.checkpoints], value="all"),
        ui.embedding: _embedding(view, "all"),
        ui.ranking_note: analysis.ranking_note,
        ui.ranking_plot: figures_mod.ranking_figure(analysis) if analysis.ranking else None,
        ui.ranking_table: _rows(analysis.ranking),
    }


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


def _scatter(analysis, metric_name: str, outcome_name: str):
    found = [r for r in analysis.correlations if r["metric"] == metric_name and r["outcome"] == outcome_name]
    return figures_mod.scatter_figure(found[0], analysis.metrics, analysis) if found else None


def _embedding(view, panel: str):
    return figures_mod.embedding_figure(view.points, view.fitted, view.analysis,
                                        None if panel in (None, "all") else panel)


def _rows(rows: list[dict], keep: list[str] | None = None, drop: tuple = ()):
    table = pd.DataFrame(rows)
    if keep is not None:
        table = table[[c for c in keep if c in table.columns]]
    return _frame(table.drop(columns=[c for c in drop if c in table.columns]))


def _frame(table):
    """A table as shown: every column at its kind's precision (``common.numbers``), the numbers kept."""
    return numbers.styled(table) if len(table) else None
