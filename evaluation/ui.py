"""The Evaluate tab (admins): compute every metric for every checkpoint, read them as a table and over steps.

The Analysis tab is ``evaluation.study.ui``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd
import plotly.graph_objects as go
from PIL import Image

from common import numbers
from common.device import resolve_device
from database.metric_results import list_results
from evaluation.cache import FeatureCache
from evaluation.errors import USER_ERRORS
from evaluation.features import get_extractor
from evaluation.metrics import MetricSettings
from evaluation.scorecard import ALL_METRICS, SCOPES, compute_scorecard
from evaluation.segmentation.scorecard import SEGMENTATION_EXTRACTOR, compute_segmentation_scorecard
from evaluation.segmentation.settings import SegmentationSettings
from generation.ui import next_step_text, user_errors_of
from review.studies import ReviewError, require_admin

TABLE = ["step", "checkpoint", "scope", "metric", "value", "CI low", "CI high", "n real", "n fake", "extractor", "note", "computed"]
LOWER_IS_BETTER = {"fid", "kid", "diversity_ms_ssim", "memorisation"}
EVALUATE_NEXT = ("press *Compute / refresh metrics* to score every checkpoint against the registered real images "
                 "(EfficientNet is the faster extractor on a CPU), then choose a metric below to follow it over "
                 "training steps; *Show stored results* reads earlier runs.")

user_errors = user_errors_of(ReviewError, *USER_ERRORS)


def build(services, session) -> None:
    """Build the tab's components in the current Blocks context; ``session`` is the signed-in token."""
    ui = _layout()
    on = _EvaluateEvents(services, ui)
    views = [ui.table, ui.plot, ui.pairs]
    ui.segment.click(on.segment, [session, ui.seg_sizes, ui.seg_steps, ui.extractor, ui.metric, ui.scope],
                     [ui.status, *views], api_name="segmentation_test")
    ui.compute.click(on.compute, [session, ui.extractor, ui.training, ui.metric, ui.scope], [ui.status, *views],
                     api_name="compute_metrics")
    for trigger in (ui.show.click, ui.metric.change, ui.scope.change):
        trigger(on.show, [session, ui.extractor, ui.metric, ui.scope], views,
                api_name="metric_results" if trigger == ui.show.click else False)


@dataclass(frozen=True)
class _Layout:
    """The tab's components: what to compute, the segmentation test, and the results (table, plot, pairs)."""

    extractor: gr.Dropdown
    training: gr.Textbox
    compute: gr.Button
    show: gr.Button
    seg_sizes: gr.Textbox
    seg_steps: gr.Number
    segment: gr.Button
    status: gr.Markdown
    table: gr.Dataframe
    metric: gr.Dropdown
    scope: gr.Radio
    plot: gr.Plot
    pairs: gr.Gallery


def _layout() -> _Layout:
    gr.Markdown(next_step_text(EVALUATE_NEXT), elem_id="evaluate-next")
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
    return _Layout(extractor, training, compute, show, seg_sizes, seg_steps, segment, status, table, metric, scope,
                   plot, pairs)


class _EvaluateEvents:
    """The tab's callbacks: each checks the admin, computes or reads metric results and returns the components' updates."""

    def __init__(self, services, ui: _Layout):
        self.services, self.ui = services, ui

    def _views(self, db, name, metric_name, scope_name) -> dict:
        rows = list_results(db, name) + list_results(db, SEGMENTATION_EXTRACTOR)
        return {self.ui.table: _table(rows), self.ui.plot: _figure(rows, metric_name, scope_name, name),
                self.ui.pairs: _pairs(rows)}

    @user_errors
    def compute(self, token, name, training_dir, metric_name, scope_name, progress=gr.Progress()):
        config = self.services.config
        with self.services.db() as db:
            require_admin(db, token)
            folder = Path(training_dir.strip()) if training_dir and training_dir.strip() else None
            model = get_extractor(name, device=resolve_device(config.device))
            rows = compute_scorecard(db, model, FeatureCache(config.data_dir / "features"), MetricSettings(),
                                     training_dir=folder, on_progress=lambda f, text: progress(f, desc=text))
            return {self.ui.status: f"Computed {len(rows)} results with {name}.",
                    **self._views(db, name, metric_name, scope_name)}

    @user_errors
    def show(self, token, name, metric_name, scope_name):
        with self.services.db() as db:
            require_admin(db, token)
            return self._views(db, name, metric_name, scope_name)

    @user_errors
    def segment(self, token, sizes_text, steps, name, metric_name, scope_name, progress=gr.Progress()):
        with self.services.db() as db:
            require_admin(db, token)
            sizes = _sizes(sizes_text)
            device = str(resolve_device(self.services.config.device))
            rows = compute_segmentation_scorecard(db, SegmentationSettings(steps=int(steps or 300)), sizes=sizes,
                                                  device=device, on_progress=lambda f, text: progress(f, desc=text))
            return {self.ui.status: f"Stored {len(rows)} segmentation results ({device}).",
                    **self._views(db, name, metric_name, scope_name)}


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


def _table(rows: list[dict]):
    """The stored results as a table: each value and CI at its metric's precision (``common.numbers``)."""
    out = []
    for r in rows:
        note = (r["details"] or {}).get("skipped") or "; ".join((r["details"] or {}).get("warnings", []))
        out.append([r["checkpoint_step"], r["checkpoint_name"], r["scope"], r["metric"], r["value"], r["ci_low"],
                    r["ci_high"], r["n_real"], r["n_fake"], r["extractor"], note[:200], (r["computed_at"] or "")[:16]])
    frame = pd.DataFrame(out, columns=TABLE)
    styler = frame.style.format({c: numbers.shower("count") for c in ("step", "n real", "n fake")}, na_rep=numbers.MISSING)
    for metric in frame["metric"].unique():
        chosen = pd.IndexSlice[frame.index[frame["metric"] == metric], ["value", "CI low", "CI high"]]
        styler = styler.format(numbers.shower(numbers.metric_kind(metric)), subset=chosen)
    return styler.hide(axis="index")


def _figure(rows: list[dict], metric: str, scope: str, extractor: str) -> go.Figure:
    chosen = sorted((r for r in rows if r["metric"] == metric and r["scope"] == scope and r["value"] is not None),
                    key=lambda r: r["checkpoint_step"])
    steps = [r["checkpoint_step"] for r in chosen]
    figure = go.Figure()
    if any(r["ci_low"] is not None for r in chosen):
        figure.add_trace(go.Scatter(x=steps + steps[::-1],
                                    y=[r["ci_high"] for r in chosen] + [r["ci_low"] for r in chosen][::-1],
                                    fill="toself", line={"width": 0}, opacity=0.25, name="CI", hoverinfo="skip"))
    shown = numbers.d3_format(numbers.metric_kind(metric))
    figure.add_trace(go.Scatter(x=steps, y=[r["value"] for r in chosen], mode="lines+markers", name=metric,
                                text=[f"{r['checkpoint_name']} · n_real {r['n_real']} · n_fake {r['n_fake']}" for r in chosen],
                                hovertemplate=f"step %{{x}}<br>{metric} %{{y:{shown}}}<br>%{{text}}<extra></extra>"))
    direction = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
    figure.update_layout(title=f"{metric} ({scope}, {extractor}; {direction})", xaxis_title="training step",
                         yaxis_title=metric, yaxis_tickformat=shown, height=380, margin={"t": 50, "b": 40})
    return figure


def _pairs(rows: list[dict]) -> list[tuple]:
    # Loaded here, not served by path: the training folder can be anywhere on disk.
    items = []
    for r in rows:
        if r["metric"] == "memorisation" and r["value"] is not None:
            for pair in (r["details"] or {}).get("pairs", [])[:4]:
                if not (Path(pair["fake"]).is_file() and Path(pair["train"]).is_file()):
                    continue
                caption = f"step {r['checkpoint_step']} · distance {numbers.show(pair['distance'], 'score')}"
                items += [(Image.open(pair["fake"]).convert("RGB"), f"synthetic · {caption}"),
                          (Image.open(pair["train"]).convert("RGB"), f"nearest training · {caption}")]
    return items
