"""The admin's *Demo project* panel, above the tabs: build the demo project in the background and watch it.

``app.py`` places it under the account bar and refreshes it after every sign-in (``show``). Every
event checks for an admin first: anyone else gets the panel hidden and nothing else. The build's
progress is read from the server (``evaluation.demo_project.DemoBuild``) every two seconds while it
runs, so a reloaded page finds it again; a second start is refused with a message, a failure is
shown with its reason.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from evaluation.demo_project import DemoBuild, DemoBusy, DemoState, demo_summary
from review import studies
from review.studies import NotSignedIn
from review.ui import served

POLL_S = 2.0
ABOUT = ("Phantom frames (drawn by the program, no patient images) in their own public image set `demo`, a "
         "single-image and a pair study rated by a seeded **simulated** panel, and the demo checkpoints' metrics, "
         "so that every tab has something real to show. About 5 minutes on 2 CPU cores, in the background. "
         "It is a demo: nothing of it is clinical data or evidence about a model, and it never mixes with "
         "clinical image sets or studies.")


@dataclass(frozen=True)
class DemoPanel:
    """The panel's components; ``outputs`` is what ``show`` answers."""

    box: gr.Accordion
    text: gr.Markdown
    bar: gr.HTML
    start: gr.Button
    timer: gr.Timer
    show: object

    @property
    def outputs(self) -> list:
        return [self.box, self.text, self.bar, self.start, self.timer]


def build_demo_panel(services, session: gr.Textbox, demo: DemoBuild) -> DemoPanel:
    """Build the panel in the current Blocks and wire ``/demo_project_start`` and its progress.

    Args:
        services: The app's services (the database).
        session: The account bar's session token (an input of every event).
        demo: The server's one background build.
    """
    with gr.Accordion("Demo project (phantom data, simulated raters)", open=True, visible=False) as box:
        text = gr.Markdown("")
        bar = gr.HTML("", visible=False)
        start = gr.Button("Build demo project", variant="primary", size="sm")
    timer = gr.Timer(POLL_S, active=False)

    def view(token) -> dict:
        try:
            with services.db() as db:
                studies.require_admin(db, token)  # who asks comes first
                summary = demo_summary(db)
        except (NotSignedIn, studies.Forbidden):
            return {box: gr.update(visible=False), timer: gr.Timer(active=False)}
        return _shown(panel, demo.state, summary)

    @served
    def on_start(token):
        with services.db() as db:
            studies.require_admin(db, token)  # who asks comes first
        try:
            demo.start()
        except DemoBusy as error:
            gr.Warning(str(error))
        return view(token)

    panel = DemoPanel(box, text, bar, start, timer, served(view))
    start.click(on_start, session, panel.outputs, api_name="demo_project_start")
    timer.tick(panel.show, session, panel.outputs, api_name=False)
    return panel


def _shown(panel: DemoPanel, state: DemoState, summary: dict) -> dict:
    """The panel for an admin: what exists, the build's progress or failure, the button when there is work."""
    running = state.phase == "running"
    if running:
        lines = [f"**Building the demo project: {state.fraction:.0%}**, {state.text} "
                 f"(started {_clock(state.started_at)}). You may leave or reload this page: the build goes on."]
    elif summary["ready"]:
        lines = [_ready(summary)]
    else:
        lines = [ABOUT]
        if state.phase == "failed":
            lines.insert(0, f"**The demo project build failed:** {state.error} (details in the server's log). "
                            "Press the button to try again: what was built is kept.")
        elif summary["studies"] or any(summary["images"].values()):
            lines.append("Part of it exists already: building completes it.")
    label = "Building…" if running else ("Try again" if state.phase == "failed" else "Build demo project")
    return {panel.box: gr.update(visible=True, open=running or not summary["ready"]),
            panel.text: "\n\n".join(lines),
            panel.bar: gr.update(value=_bar(state.fraction), visible=running),
            panel.start: gr.update(value=label, interactive=not running, visible=running or not summary["ready"]),
            panel.timer: gr.Timer(active=running)}


def _ready(summary: dict) -> str:
    images = summary["images"]
    listed = "; ".join(f"#{s['id']} {s['name']} ({s['status']})" for s in summary["studies"])
    return (f"**Demo project ready** (phantom data and simulated raters: a demo, not evidence). Image set `demo`: "
            f"{images.get('AD', 0)} AD and {images.get('NonAD', 0)} Non-AD phantom frames. Studies: {listed}. "
            f"{summary['metric_results']} metric results against the demo set. See **Studies (admin)** for the "
            "studies, **Analysis (admin)** for the panel's results and **Evaluate (admin)** for the metrics.")


def _bar(fraction: float) -> str:
    percent = round(100 * min(max(fraction, 0.0), 1.0))
    return (f'<progress value="{percent}" max="100" aria-label="demo project build" style="width:100%">'
            f"{html.escape(str(percent))} %</progress>")


def _clock(stamp: str | None) -> str:
    """``2026-12-01T11:52:03Z`` as ``11:52 UTC``."""
    return f"{stamp[11:16]} UTC" if stamp and len(stamp) >= 16 else "just now"
