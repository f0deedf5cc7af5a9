"""Plotly figures of a study analysis (used by the Analysis tab and the HTML report).

Every figure says in its title or axis what it counts, with n, and draws the intervals the
tables report; its caption (below the plot) says what it rests on: raters, ratings, items, study
status and share rated, and flags n too small to conclude (points resting on too few ratings or
raters, by the rule of ``evaluation.study.notes``, are drawn hollow). Embedding points carry ``customdata = [thumbnail data URI, ratings summary, name]``
so the tab and the report can show the image on hover.
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from common.numbers import MISSING, column_kind, d3_format, metric_kind, show
from evaluation.study.notes import SMALL_RATERS, SMALL_RATINGS, WIDE_INTERVAL, interval_width, is_small
from evaluation.study.outcomes import SCOPES

COLOURS = {"AD": "#c0392b", "NonAD": "#2471a3", "pooled": "#444444"}
STRATUM_COLOURS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]
HEIGHT = 440
HOLLOW = (f"hollow markers: fewer than {SMALL_RATINGS} ratings or {SMALL_RATERS} raters, or a 95 % interval "
          f"wider than {WIDE_INTERVAL}: too few to conclude")
SVG_MAX_POINTS = 3000
SIMULATED_TAG = " [SIMULATED PANEL]"


def outcome_figure(analysis) -> go.Figure:
    """Single mode: share judged real per group (Wilson CI); pair mode: 2AFC accuracy (exact CI)."""
    single = analysis.study["mode"] == "single"
    key = "judged_real" if single else "accuracy_2afc"
    prefix = "judged_real" if single else "accuracy"
    figure = go.Figure()
    for name, rows, colour in _series(analysis):
        rows = [r for r in rows if r[key] is not None]
        figure.add_trace(go.Scatter(
            x=[r["group"] for r in rows], y=[r[key] for r in rows], mode="markers", name=name,
            marker={"color": colour, "size": 10, "symbol": _symbols(rows, "circle", prefix)},
            error_y=_error_bars(rows, key, prefix),
            hovertemplate="%{x}<br>%{y:.1%}<br>%{text}<extra>" + name + "</extra>",
            text=[f"n ratings {r['n_ratings']}, images {r['n_images']}, raters {r['n_raters']}" for r in rows]))
    if single:
        title, axis = "Judged real (synthetic groups: fooling rate)", "share judged real"
    else:
        title, axis = "Two-alternative accuracy (synthetic image found); 0.5 = chance", "accuracy"
        figure.add_hline(y=0.5, line_dash="dot", annotation_text="chance")
    title += "<br><sup>95 % CI: bootstrap over raters and images (the tables also give Wilson / exact intervals)</sup>"
    return _layout(figure, analysis, title, "group (checkpoints by training step)", axis, y_range=(0, 1),
                   caption=_basis(analysis, key) + "; " + HOLLOW)


def realism_figure(analysis) -> go.Figure:
    """Single mode: distribution of realism scores (1 clearly artificial ... 5 indistinguishable) per group."""
    rows = [r for r in analysis.outcomes if r["scope"] == "pooled" and r["stratum"] == _first_stratum(analysis)
            and r["realism_mean"] is not None]
    figure = go.Figure()
    for score in range(1, 6):
        totals = [sum(r[f"realism_{k}"] for k in range(1, 6)) or 1 for r in rows]
        figure.add_trace(go.Bar(x=[r["group"] for r in rows], y=[r[f"realism_{score}"] / t for r, t in zip(rows, totals)],
                                name=f"realism {score}", marker={"color": _realism_colour(score)},
                                hovertemplate="%{x}<br>%{y:.1%} of ratings<extra>realism " + str(score) + "</extra>"))
    figure.update_layout(barmode="stack")
    stratum = "" if analysis.stratify == "none" else f" (raters: {_first_stratum(analysis)}; stratum 'none' for all)"
    return _layout(figure, analysis, f"Realism scores per group (share of ratings){stratum}", "group", "share",
                   y_range=(0, 1), caption=_basis(analysis, "realism_mean"))


def pathology_figure(analysis) -> go.Figure:
    """Pathology accuracy (Wilson CI) per group; the clinical gap is real minus synthetic."""
    figure = go.Figure()
    for name, rows, colour in _series(analysis):
        rows = [r for r in rows if r["pathology_accuracy"] is not None]
        figure.add_trace(go.Scatter(
            x=[r["group"] for r in rows], y=[r["pathology_accuracy"] for r in rows], mode="markers", name=name,
            marker={"color": colour, "size": 10, "symbol": _symbols(rows, "diamond", "pathology")},
            error_y=_error_bars(rows, "pathology_accuracy", "pathology"),
            text=[f"called {r['pathology_called']}, cannot tell {r['pathology_cannot_tell']} (left out: accuracy "
                  f"{show(r['pathology_accuracy_called_only'], 'percent')}, AUC "
                  f"{show(r['pathology_auc_called_only'], 'statistic')}); AUC {show(r['pathology_auc'], 'statistic')} "
                  f"[{show(r['auc_low'], 'statistic')}, {show(r['auc_high'], 'statistic')}]" for r in rows],
            hovertemplate="%{x}<br>accuracy %{y:.1%}<br>%{text}<extra>" + name + "</extra>"))
    return _layout(figure, analysis, "Experts' pathology accuracy, real vs synthetic<br><sup>95 % CI: bootstrap "
                   "over raters and images; 'cannot tell' counts as not correct (hover: the other reading)</sup>",
                   "group", "share of pathology answers right", y_range=(0, 1),
                   caption=_basis(analysis, "pathology_accuracy") + "; " + HOLLOW)


def scatter_figure(correlation: dict, metric_rows: list[dict], analysis) -> go.Figure:
    """Checkpoints: a metric (x, with its CI) against an expert outcome (y), with rho and tau."""
    ci = {r["group"]: r for r in metric_rows if r["metric"] == correlation["metric"] and r["scope"] == "pooled"}
    points = correlation["points"]
    figure = go.Figure(go.Scatter(
        x=[p[1] for p in points], y=[p[2] for p in points], mode="markers+text", text=[p[0] for p in points],
        textposition="top center", marker={"size": 12, "color": "#7d3c98"},
        error_x={"type": "data", "symmetric": False,
                 "array": [_gap(ci.get(p[0], {}).get("ci_high"), p[1]) for p in points],
                 "arrayminus": [_gap(p[1], ci.get(p[0], {}).get("ci_low")) for p in points]},
        hovertemplate=(f"%{{text}}<br>{correlation['metric']} %{{x:{d3_format(metric_kind(correlation['metric']))}}}"
                       f"<br>{correlation['outcome']} %{{y:{d3_format(column_kind(correlation['outcome']))}}}"
                       "<extra></extra>")))
    c = correlation
    title = (f"{c['metric']} vs {c['outcome']}: Spearman {_stat(c['spearman'])} [{_stat(c['spearman_low'])}, "
             f"{_stat(c['spearman_high'])}] p {_p(c['spearman_p'])}; Kendall {_stat(c['kendall'])} "
             f"[{_stat(c['kendall_low'])}, {_stat(c['kendall_high'])}]<br><sup>{c['note']}</sup>")
    figure = _layout(figure, analysis, title, f"{c['metric']} ({analysis.extractor})", c["outcome"],
                     caption=f"{c['n_checkpoints']} checkpoints; Holm-adjusted p {_p(c.get('spearman_p_holm'))}")
    figure.update_xaxes(tickformat=d3_format(metric_kind(c["metric"])))
    return figure.update_yaxes(tickformat=d3_format(column_kind(c["outcome"])))


def embedding_figure(points: pd.DataFrame, fitted, analysis=None, checkpoint: str | None = None) -> go.Figure:
    """One panel per checkpoint (or the one chosen): real points and that checkpoint's synthetic points,
    colour by pathology, symbol by source, on coordinates fitted jointly to all images."""
    checkpoints = [c for c in pd.unique(points["checkpoint"].dropna())]
    panels = [checkpoint] if checkpoint else checkpoints
    cols = min(len(panels), 2) or 1
    rows = math.ceil(len(panels) / cols) or 1
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=[str(p) for p in panels],
                           horizontal_spacing=0.06, vertical_spacing=0.12)
    real = points[points["source"] == "real"]
    # SVG markers up to a few thousand points (hover and browser tests can find them), WebGL beyond.
    scatter = go.Scatter if len(points) <= SVG_MAX_POINTS else go.Scattergl
    for i, panel in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        synthetic = points[points["checkpoint"] == panel]
        for label in ("AD", "NonAD"):
            for part, symbol, source in ((real, "circle", "real"), (synthetic, "x", "synthetic")):
                chosen = part[part["label"] == label]
                figure.add_trace(scatter(
                    x=chosen["x"], y=chosen["y"], mode="markers", name=f"{source} {label}",
                    legendgroup=f"{source} {label}", showlegend=i == 0,
                    marker={"color": COLOURS[label], "symbol": symbol, "size": 8 if source == "synthetic" else 6,
                            "opacity": 0.9 if source == "synthetic" else 0.45},
                    customdata=list(zip(chosen["thumbnail"], chosen["ratings"],
                                        [f"{source} {label} · {c if isinstance(c, str) else 'real'}" for c in chosen["checkpoint"]])),
                    hovertemplate="%{customdata[2]}<br>%{customdata[1]}<extra></extra>"), row=row, col=col)
    title = (f"{fitted.describe()}; {len(points)} images ({analysis.extractor if analysis else 'features'}), "
             "fitted jointly: panels share coordinates")
    if analysis is not None:  # the caption goes in the title: the panels' own titles are its annotations
        rated = int(points["ratings"].ne("not rated in this study").sum())
        title += f"<br><sup><i>Rests on: {analysis.caption()}; {rated} of {len(points)} images rated in this study</i></sup>"
    figure.update_layout(title=title + (SIMULATED_TAG if analysis is not None and analysis.simulated else ""),
                         height=max(HEIGHT, 360 * rows), margin={"t": 100, "b": 30}, hovermode="closest")
    return figure


def ranking_figure(analysis) -> go.Figure:
    """Bradley-Terry strength of each checkpoint against real (0), with bootstrap intervals."""
    rows = sorted(analysis.ranking, key=lambda r: r["strength"])
    figure = go.Figure(go.Scatter(
        x=[r["strength"] for r in rows], y=[f"{r['checkpoint']} (rank {r['rank_label']})" for r in rows],
        mode="markers", marker={"size": 11, "color": "#117a65"},
        error_x={"type": "data", "symmetric": False, "array": [_gap(r["ci_high"], r["strength"]) for r in rows],
                 "arrayminus": [_gap(r["strength"], r["ci_low"]) for r in rows]},
        text=[f"P(fools a rater) {show(r['p_fool'], 'percent')}, {r['fooled']} of {r['n_trials']} trials" for r in rows],
        hovertemplate="%{y}<br>strength %{x:.2f}<br>%{text}<extra></extra>"))
    figure.add_vline(x=0, line_dash="dot", annotation_text="as convincing as real")
    bound = [r["checkpoint"] for r in rows if r.get("ci_low_prior_bound") or r.get("ci_high_prior_bound")]
    caption = (f"{sum(r['n_trials'] for r in rows)} pair trials; "
               + (f"interval bounds set by the prior, not the data: {', '.join(bound)}" if bound
                  else "no interval bound set by the prior"))
    return _layout(figure, analysis, "Bradley-Terry ranking from pairs (bootstrap over raters, 95 %); equal "
                   "records share a rank", "log-strength vs real", "", caption=caption)


def agreement_figure(analysis) -> go.Figure:
    """Forest plot of the agreement statistics per question (bootstrap CIs over items)."""
    rows = [r for r in analysis.agreement if r["value"] is not None]
    stratified = analysis.stratify != "none"
    figure = go.Figure(go.Scatter(
        x=[r["value"] for r in rows], mode="markers",
        y=[(f"{r['stratum']} · " if stratified else "") + f"{r['question']} · {r['statistic']}" for r in rows],
        marker={"size": 10, "color": "#2e4053"},
        error_x={"type": "data", "symmetric": False,
                 "array": [(r["ci_high"] if r["ci_high"] is not None else r["value"]) - r["value"] for r in rows],
                 "arrayminus": [r["value"] - (r["ci_low"] if r["ci_low"] is not None else r["value"]) for r in rows]},
        text=[f"{r['n_items']} items, {r['n_raters']} raters. {r.get('note') or ''}" for r in rows],
        hovertemplate="%{y}<br>%{x:.2f}<br>%{text}<extra></extra>"))
    figure.add_vline(x=0, line_dash="dot")
    items = max((r["n_items"] for r in rows), default=0)
    return _layout(figure, analysis, "Inter-rater agreement (95 % bootstrap CI over items with >= 2 ratings)",
                   "agreement", "", height=max(HEIGHT, 28 * len(rows) + 160),
                   caption=f"up to {items} items rated twice or more" + ("; n too small to conclude"
                                                                          if items < SMALL_RATINGS else ""))


def _series(analysis):
    """(legend name, pooled-or-scope rows, colour): per scope, or per stratum when stratified."""
    rows = analysis.outcomes
    if analysis.stratify == "none":
        return [(scope, [r for r in rows if r["scope"] == scope], COLOURS[scope]) for scope in SCOPES]
    strata = sorted({r["stratum"] for r in rows})
    return [(stratum, [r for r in rows if r["stratum"] == stratum and r["scope"] == "pooled"],
             STRATUM_COLOURS[i % len(STRATUM_COLOURS)]) for i, stratum in enumerate(strata)]


def _bounds(r: dict, prefix: str) -> tuple:
    """The interval a figure draws: the cluster bootstrap one, or the Wilson/exact one without it."""
    if r.get(f"{prefix}_boot_low") is not None:
        return r[f"{prefix}_boot_low"], r[f"{prefix}_boot_high"]
    return r[f"{prefix}_low"], r[f"{prefix}_high"]


def _error_bars(rows: list[dict], key: str, prefix: str) -> dict:
    """Asymmetric error bars from ``_bounds``."""
    return {"type": "data", "symmetric": False, "array": [_gap(_bounds(r, prefix)[1], r[key]) for r in rows],
            "arrayminus": [_gap(r[key], _bounds(r, prefix)[0]) for r in rows]}


def _first_stratum(analysis) -> str:
    return "all" if analysis.stratify == "none" else sorted({r["stratum"] for r in analysis.outcomes} or {"all"})[0]


def _layout(figure: go.Figure, analysis, title: str, x: str, y: str, y_range=None, height: int = HEIGHT,
            caption: str = "") -> go.Figure:
    tag = SIMULATED_TAG if analysis is not None and analysis.simulated else ""
    figure.update_layout(title=title + tag, xaxis_title=x, yaxis_title=y, height=height,
                         margin={"t": 80, "b": 110}, legend={"orientation": "h", "y": -0.2})
    if y_range is not None:  # every 0-1 axis here is a share of ratings: shown as a percentage
        figure.update_yaxes(range=[y_range[0] - 0.02, y_range[1] + 0.02], tickformat=".0%")
    if analysis is not None:
        _caption(figure, "; ".join(part for part in (analysis.caption(), caption) if part))
    return figure


def _caption(figure: go.Figure, text: str) -> None:
    """The figure's caption under the plot (kept when the figure is downloaded as PNG)."""
    figure.add_annotation(text=f"<i>Rests on: {text}</i>", xref="paper", yref="paper", x=0, y=-0.34,
                          xanchor="left", yanchor="top", showarrow=False, align="left", font={"size": 11})


def _basis(analysis, key: str) -> str:
    """``N images of G groups``: the pooled rows behind a figure's points."""
    rows = [r for r in analysis.outcomes if r["scope"] == "pooled" and r.get(key) is not None]
    small = sum(is_small(r["n_ratings"], r["n_raters"]) for r in rows)
    return (f"{sum(r['n_images'] for r in rows if r['stratum'] == _first_stratum(analysis))} images in "
            f"{len({r['group'] for r in rows})} groups" + (f"; {small} of {len(rows)} pooled rows too small to conclude"
                                                          if small else ""))


def _symbols(rows: list[dict], shape: str, prefix: str) -> list[str]:
    """Hollow where the small-n rule of ``evaluation.study.notes`` flags the point."""
    def small(r):
        width = interval_width(_bounds(r, prefix))
        return is_small(r["n_ratings"], r["n_raters"]) or (width is not None and width > WIDE_INTERVAL)

    return [f"{shape}-open" if small(r) else shape for r in rows]


def _realism_colour(score: int) -> str:
    return ["#922b21", "#e59866", "#d5d8dc", "#7fb3d5", "#1f618d"][score - 1]


def _gap(a, b):
    return None if a is None or b is None else max(0.0, float(a) - float(b))


def _stat(value) -> str:
    return show(value, "statistic")


def _p(value) -> str:
    """A p-value after "p": ``p 0.33``, ``p <0.001`` (``common.numbers``)."""
    text = show(value, "p")
    return text if text.startswith("<") or text == MISSING else f"= {text}"
