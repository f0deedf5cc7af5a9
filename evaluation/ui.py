"""The Evaluate tab (admins): compute every metric for every checkpoint, read them as a table and over steps."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import plotly.graph_objects as go
from PIL import Image

from evaluation.cache import CacheError
from evaluation.features import ExtractorUnavailable
from evaluation.images import ImageSetError
from evaluation.scorecard import (
    ALL_METRICS,
    SCOPES,
    NothingToEvaluate,
    ScorecardSettings,
    compute_scorecard,
)
from generation.ui import user_errors_of
from review.studies import ReviewError

TABLE = ["step", "checkpoint", "scope", "metric", "value", "CI low", "CI high", "n real", "n fake", "extractor", "note", "computed"]
LOWER_IS_BETTER = {"fid", "kid", "diversity_ms_ssim", "memorisation"}


user_errors = user_errors_of(ReviewError, NothingToEvaluate, ExtractorUnavailable, ImageSetError, CacheError)


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
    status = gr.Markdown("")
    table = gr.Dataframe(headers=TABLE, label="Metric results", interactive=False, wrap=True)
    with gr.Row():
        metric = gr.Dropdown(list(ALL_METRICS), value="fid", label="Metric")
        scope = gr.Radio(list(SCOPES), value="pooled", label="Scope")
    plot = gr.Plot(label="Metric over training steps")
    with gr.Accordion("Memorisation: nearest training image of each synthetic image", open=False):
        pairs = gr.Gallery(label="synthetic | nearest training image", columns=4, height="auto")

    def view(db, name, metric_name, scope_name):
        from review.metric_store import list_results

        rows = list_results(db, name)
        return _table(rows), _figure(rows, metric_name, scope_name, name), _pairs(rows)

    @user_errors
    def on_compute(token, name, training_dir, metric_name, scope_name, progress=gr.Progress()):
        from evaluation.cache import FeatureCache
        from evaluation.features import get_extractor, resolve_device
        from review.studies import require_admin

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
        from review.studies import require_admin

        db = services.db()
        try:
            require_admin(db, token)
            return view(db, name, metric_name, scope_name)
        finally:
            db.close()

    compute.click(on_compute, [session, extractor, training, metric, scope], [status, table, plot, pairs], api_name="compute_metrics")
    for trigger in (show.click, metric.change, scope.change):
        trigger(on_show, [session, extractor, metric, scope], [table, plot, pairs],
                api_name="metric_results" if trigger == show.click else False)


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
