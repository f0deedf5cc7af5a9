"""PolypTuring's front door: ``create_app(config)`` builds the Gradio app; run this file to serve it.

    python app.py [--port 7860] [--host 127.0.0.1] [--data-dir DIR] [--checkpoints DIR] [--device auto]
"""

from __future__ import annotations

import os

from evaluation import ui as evaluation_ui
from generation import ui as generation_ui
from review import ui as review_ui
from review.kiosk import ui as kiosk_ui
from review.kiosk.pools import PoolsError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gradio as gr

from appconfig import AppConfig, Services, build_config

TITLE = "PolypTuring"


def create_app(config: AppConfig, services: Services | None = None) -> gr.Blocks:
    """The whole app as one Blocks: the account bar and the Rate and Studies tabs (``review.ui``),
    then the Evaluate and Analysis (``evaluation.ui``) and Generate (``generation.ui``) tabs."""
    services = services or Services(config)
    # Built outside the app's Blocks: a Blocks created inside another is inlined there already,
    # and .render() would then place its components a second time.
    generate_tab = generation_ui.build(services)
    body = review_ui.build(services, more_tabs=[
        ("Evaluate (admin)", lambda session: evaluation_ui.build(services, session)),
        ("Analysis (admin)", lambda session: evaluation_ui.build_analysis(services, session)),
        ("Generate", lambda session: generate_tab.render()),
    ])
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nA clinical Turing-test workbench for generated colonoscopy polyp images.")
        body.render()
    return app


def main(argv: list[str] | None = None) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = build_config(argv)
    if config.kiosk:
        _serve_kiosk(config)
        return
    app = create_app(config)
    print(f"PolypTuring serving at http://{config.host}:{config.port}", flush=True)
    app.queue(default_concurrency_limit=2).launch(
        server_name=config.host, server_port=config.port, show_error=True,
        # Generated and presented (study) images are served from the data folder, wherever that is.
        allowed_paths=[str(config.generated_dir), str(config.data_dir / "presented")],
    )


def _serve_kiosk(config: AppConfig) -> None:
    """The conference kiosk (``--kiosk``): a separate app with its own database; see ``review.kiosk.ui``."""
    try:
        kiosk = kiosk_ui.build(config)
    except PoolsError as error:
        raise SystemExit(f"error: {error}") from None
    print(f"PolypTuring kiosk at http://{config.host}:{config.port} (presenter view: /{kiosk_ui.PRESENTER_PATH}); "
          f"games go to {config.kiosk_db_path}", flush=True)
    kiosk.queue(default_concurrency_limit=4).launch(**kiosk_ui.launch_options(config))


if __name__ == "__main__":
    main()
