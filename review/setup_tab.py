"""The first-run panel: the setup link's form that creates the admin (``review.setup``), above the account bar.

``app.py`` places it: ``build_setup()`` where the panel goes, then ``connect_setup(...)`` once the
account bar exists. Opened with ``?setup=TOKEN`` (the link the server printed at start) while no
admin exists, the page shows the form; the token is checked on the server (throttled like
sign-in), kept in server-side state (``gr.State``, never sent back to the browser nor stored in
it) and removed from the address bar. Creating the admin spends the token, stores the new
session like a sign-in does, and reloads the page, which the account bar then signs in.

While no admin exists and the page was opened without a valid token, a short line says where the
setup link is; it offers nothing a visitor could use.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from review import setup
from review.auth import MIN_PASSWORD
from review.setup import INVALID, FirstRun
from review.studies import NotSignedIn
from review.ui import client_address, served

HINT = ("**First run: no admin account exists yet.** Open the setup link that the server printed on its console "
        "when it started (`PolypTuring first run: open http://…/?setup=…`), or make the admin on the server with "
        "`.venv/bin/python -m review.accounts add NAME --role admin`.")
FORM_TEXT = ("### First run: create the admin account\n"
             "The admin creates studies, invites raters and sees every tab. This link works once; "
             f"the password needs at least {MIN_PASSWORD} characters. You are signed in as the admin afterwards.")
RELOAD_JS = "() => { window.location.reload(); }"


def strip_query_js(name: str) -> str:
    """Browser code that removes the query parameter ``name`` from the address bar (and so from every later Referer)."""
    return f"""() => {{ const url = new URL(window.location.href);
  if (url.searchParams.has('{name}')) {{ url.searchParams.delete('{name}');
    window.history.replaceState(window.history.state, '', url.pathname + url.search + url.hash); }} }}"""


@dataclass(frozen=True)
class SetupPanel:
    """The first-run panel's components; ``token`` is server-side state."""

    hint: gr.Markdown
    form: gr.Column
    username: gr.Textbox
    password: gr.Textbox
    again: gr.Textbox
    create: gr.Button
    token: gr.State


def build_setup() -> SetupPanel:
    """Lay out the first-run panel (hidden until the page load shows it) in the current Blocks."""
    hint = gr.Markdown(HINT, visible=False)
    with gr.Column(visible=False) as form:
        gr.Markdown(FORM_TEXT)
        with gr.Row(equal_height=True):
            username = gr.Textbox(label="Admin username", scale=2)
            password = gr.Textbox(label=f"Password (at least {MIN_PASSWORD} characters)", type="password", scale=2)
            again = gr.Textbox(label="Password again", type="password", scale=2)
            create = gr.Button("Create admin and sign in", variant="primary", scale=1)
    return SetupPanel(hint, form, username, password, again, create, gr.State(""))


def connect_setup(app: gr.Blocks, services, first_run: FirstRun | None, panel: SetupPanel,
                  stored_session: gr.BrowserState) -> None:
    """Wire the page load (``?setup=TOKEN``) and ``/create_admin``; call it inside ``app``.

    Args:
        app: The workbench's Blocks.
        services: The app's services (the database).
        first_run: The server's setup token, or None when the server started with an admin.
        panel: ``build_setup``'s components.
        stored_session: The account bar's session in the browser's storage, where the new admin's goes.
    """

    @served
    def on_load(request: gr.Request):
        offered = request.query_params.get(setup.QUERY_PARAMETER) if request else None
        with services.db() as db:
            pending = setup.needs_admin(db)
            if offered is not None:
                try:
                    if first_run is None:
                        raise NotSignedIn(INVALID)
                    first_run.check(db, offered, client_address(request))
                    return {panel.hint: gr.update(visible=False), panel.form: gr.update(visible=True),
                            panel.token: offered}
                except NotSignedIn as error:  # the same words for a wrong, spent or late token
                    gr.Warning(str(error))
        return {panel.hint: gr.update(visible=pending), panel.form: gr.update(visible=False), panel.token: ""}

    @served
    def on_create(token, username, password, again, request: gr.Request):
        if first_run is None:
            raise NotSignedIn(INVALID)
        with services.db() as db:
            session = first_run.create_admin(db, token, username, password, again, client=client_address(request))
        return {stored_session: session, panel.token: "", panel.password: "", panel.again: "",
                panel.form: gr.update(visible=False), panel.hint: gr.update(visible=False)}

    loaded = app.load(on_load, None, [panel.hint, panel.form, panel.token], api_name=False)
    loaded.then(None, js=strip_query_js(setup.QUERY_PARAMETER), api_name=False)
    outputs = [stored_session, panel.token, panel.password, panel.again, panel.form, panel.hint]
    created = panel.create.click(on_create, [panel.token, panel.username, panel.password, panel.again], outputs,
                                 api_name="create_admin")
    # The account bar signs the stored session in on load, showing the admin's tabs.
    created.success(None, js=RELOAD_JS, api_name=False)
