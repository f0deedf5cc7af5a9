"""PolypTuring's front door: ``create_app(config)`` builds the Gradio app; run this file to serve it.

    python app.py [--port 7860] [--host 127.0.0.1] [--data-dir DIR] [--checkpoints DIR] [--device auto] [--demo-project]

While the database has no admin, the server prints a one-time setup link at start
(``review.setup``); ``--demo-project`` builds the demo project in the background
(``evaluation.demo_project``).
"""

from __future__ import annotations

if __name__ == "__main__":
    # Serving only, and before gradio and torch are imported below (they read these once): no usage
    # reports, no Hub downloads, idle OpenMP threads that sleep. Importing this module changes no
    # environment (tests/conftest.py sets the same for the tests).
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import logging

import gradio as gr
from starlette.middleware import Middleware

from appconfig import AppConfig, Services, build_config
from evaluation import demo_tab
from evaluation import ui as evaluation_ui
from evaluation.demo_project import DemoBuild, DemoBusy, demo_summary
from evaluation.study import ui as analysis_ui
from generation import ui as generation_ui
from review import ui as review_ui
from review.headers import SecurityHeaders
from review.kiosk import ui as kiosk_ui
from review.kiosk.pools import PoolsError
from review.rate_tab import build_rate
from review.setup import FirstRun, setup_url
from review.setup_tab import build_setup, connect_setup
from review.studies_tab import build_studies

TITLE = "PolypTuring"
FOOTER_LINKS = ["settings"]
MAX_UPLOAD = "1mb"
CACHE_LIFETIME_S = 3600  # Gradio's copies of served files (exports, presented images) are deleted after an hour


class Workbench(gr.Blocks):
    """The workbench's Blocks, launched with its safety defaults whoever launches it (the tests too).

    Security headers on every response (``review.headers``); no run history, which would keep
    every call's inputs, a sign-in password included, in the browser's local storage; small
    uploads only (Gradio's upload route is open to anyone, and no tab takes a file).
    """

    def launch(self, *args, **kwargs):
        kwargs.setdefault("run_history", False)
        kwargs.setdefault("footer_links", FOOTER_LINKS)
        kwargs.setdefault("max_file_size", MAX_UPLOAD)  # nothing in the workbench takes an upload
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(SecurityHeaders)]
        return super().launch(*args, app_kwargs=app_kwargs, **kwargs)


def create_app(config: AppConfig, services: Services | None = None, first_run: FirstRun | None = None,
               demo: DemoBuild | None = None) -> gr.Blocks:
    """The whole app as one Blocks: the first-run panel (``review.setup_tab``) and the account bar
    above the admin's demo-project panel (``evaluation.demo_tab``) and the Rate (``review.ui``),
    Studies (``review.studies_tab``), Evaluate (``evaluation.ui``), Analysis (``evaluation.study.ui``)
    and Generate (``generation.ui``) tabs.

    Before sign-in no tab is shown; raters see Rate, admins every tab and the demo panel. Each event
    checks the session's role on the server as well.

    Args:
        config: The app's configuration.
        services: Shared services (database, model cache); by default made from ``config``.
        first_run: The setup token that lets its holder create the first admin (``FirstRun.draw``);
            None: no setup form (the first admin is made with ``python -m review.accounts``).
        demo: The server's background demo build; by default a new one.
    """
    services = services or Services(config)
    demo = demo or DemoBuild(services)
    with Workbench(title=TITLE, delete_cache=(CACHE_LIFETIME_S // 4, CACHE_LIFETIME_S)) as app:
        gr.Markdown(f"# {TITLE}\nA clinical Turing-test workbench for generated colonoscopy polyp images.")
        setup = build_setup()
        account = review_ui.build_account_bar()
        connect_setup(app, services, first_run, setup, account.stored_session)
        demo_panel = demo_tab.build_demo_panel(services, account.session, demo)
        with gr.Tabs():
            with gr.Tab("Rate", visible=False) as rate_tab:
                rate = build_rate(services, account.session)
            with gr.Tab("Studies (admin)", visible=False) as studies_tab:
                build_studies(services, account.session)
            with gr.Tab("Evaluate (admin)", visible=False) as evaluate_tab:
                evaluation_ui.build(services, account.session)
            with gr.Tab("Analysis (admin)", visible=False) as analysis_tab:
                analysis_ui.build_analysis(services, account.session)
            with gr.Tab("Generate", visible=False) as generate_tab:
                generate = generation_ui.build(services, account.session, review_ui.is_admin(services))
        tabs = review_ui.RoleTabs(rater=[rate_tab], admin=[studies_tab, evaluate_tab, analysis_tab, generate_tab])
        for event in review_ui.connect_account(app, services, account, rate, tabs):
            event.then(generate.show_choices, account.session, generate.checkpoint, api_name=False)
            event.then(demo_panel.show, account.session, demo_panel.outputs, api_name=False)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the app (or, with ``--kiosk``, the conference kiosk) until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = build_config(argv)
    if config.kiosk:
        _serve_kiosk(config)
        return
    services = Services(config)
    with services.db() as db:
        drawn = FirstRun.draw(db)
        built = demo_summary(db)["ready"]
    first_run, token = drawn if drawn else (None, None)
    demo = DemoBuild(services)
    app = create_app(config, services, first_run, demo)
    if config.demo_project and not built:
        try:
            demo.start()  # in the background; the admin's demo panel shows its progress
        except DemoBusy as busy:
            logging.getLogger(__name__).warning("--demo-project: %s", busy)
    print(f"PolypTuring serving at http://{config.host}:{config.port}", flush=True)
    if token:
        print(f"PolypTuring first run: open {setup_url(token, config.host, config.port, config.public_url)} "
              "to create the admin account", flush=True)
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
