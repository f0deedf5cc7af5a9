"""The Review room's account bar (sign-in), and what every review tab shares.

``app.py`` places them: ``build_account_bar`` above the tabs, the Rate tab (``review.rate_tab``)
and ``review.studies_tab.build_studies`` in them, then ``connect_account`` once every tab exists.
Every event carries the session token from the account bar's hidden textbox (mirrored in the
browser's local storage, so closing the browser keeps the place) and ``review.studies`` checks it
server side: the API gives a rater nothing the page does not. Every callback runs through
``served``: domain errors become messages and a locked database is retried.

Each role sees its own tabs (``RoleTabs``): nothing before sign-in, the Rate tab for raters, every
tab for admins. The Rate and Studies tabs share ``served`` and ``is_admin`` from here.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from database.raters import DuplicateName
from generation.errors import USER_ERRORS
from generation.ui import user_errors_of
from review import studies
from review.auth import WeakPassword
from review.design import DesignError
from review.studies import NotSignedIn, ReviewError

if TYPE_CHECKING:  # for annotations only: review.rate_tab imports served() from here
    from review.rate_tab import RateTab

logger = logging.getLogger(__name__)

# The Rate tab's browser side (keyboard, highlight, zoom, the submit lock) and its stylesheet, installed
# once per page by the account bar, which every page has (the Rate tab is hidden until sign-in).
RATE_CSS = (Path(__file__).parent / "rate.css").read_text(encoding="utf-8")
KEYBOARD_JS = (f"const POLYP_RATE_CSS = {json.dumps(RATE_CSS)};\n"
               + (Path(__file__).parent / "keyboard.js").read_text(encoding="utf-8"))

# Domain errors become ``gr.Error`` (a visible message), never a traceback.
user_errors = user_errors_of(ReviewError, DesignError, WeakPassword, DuplicateName, *USER_ERRORS)
LOCK_RETRIES_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)  # after SQLite's own 5 s busy wait: a restart's reconnect burst
BUSY = "The server is busy: please press the button again in a moment."
# After an invitation link is redeemed its token leaves the address bar (and so every later Referer).
STRIP_INVITE_JS = """() => { const url = new URL(window.location.href);
  if (url.searchParams.has('invite')) { url.searchParams.delete('invite');
    window.history.replaceState(window.history.state, '', url.pathname + url.search + url.hash); } }"""


def retry_locked(fn):
    """Run ``fn`` again while SQLite says the database is locked or busy; a person never sees that error."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        for pause in (*LOCK_RETRIES_S, None):
            try:
                return fn(*args, **kwargs)
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err):
                    raise
                if pause is None:
                    logger.warning("database still locked after %d retries: %s", len(LOCK_RETRIES_S), err)
                    raise gr.Error(BUSY) from err
                time.sleep(pause)

    return wrapper


def served(fn):
    """A callback's wrapper: domain errors shown as messages, a locked database retried."""
    return user_errors(retry_locked(fn))


def is_admin(services) -> Callable[[str], bool]:
    """``check(token)``: whether a session token is a live admin session (for tabs of rooms below review)."""

    def check(token) -> bool:
        try:
            with services.db() as db:
                return studies.account(db, token).role == "admin"
        except NotSignedIn:
            return False

    return retry_locked(check)


# ---------------------------------------------------------------------------------------------
# The account bar


@dataclass(frozen=True)
class AccountBar:
    """The account bar's components; ``session`` (the signed-in token) is an input of every event."""

    session: gr.Textbox
    stored_session: gr.BrowserState
    stored_study: gr.BrowserState
    whoami: gr.Markdown
    sign_out: gr.Button
    sign_in_row: gr.Row
    username: gr.Textbox
    password: gr.Textbox
    sign_in: gr.Button


def build_account_bar() -> AccountBar:
    """Build the account bar in the current Blocks: who is signed in, sign-in and sign-out, the keyboard script."""
    stored_session = gr.BrowserState("", storage_key="polypturing-session")
    stored_study = gr.BrowserState(None, storage_key="polypturing-study")
    session = gr.Textbox(visible=False, label="session")
    gr.HTML("", js_on_load=KEYBOARD_JS)
    with gr.Row():
        whoami = gr.Markdown("Not signed in.")
        sign_out = gr.Button("Sign out", size="sm", visible=False, scale=0)
    with gr.Row(visible=True) as sign_in_row:
        username = gr.Textbox(label="Username", scale=2)
        password = gr.Textbox(label="Password", type="password", scale=2)
        sign_in = gr.Button("Sign in", variant="primary", scale=1)
    return AccountBar(session, stored_session, stored_study, whoami, sign_out, sign_in_row, username, password, sign_in)


@dataclass(frozen=True)
class RoleTabs:
    """The tabs each role sees: ``rater`` tabs for raters and admins, ``admin`` tabs for admins; none before sign-in."""

    rater: list = field(default_factory=list)
    admin: list = field(default_factory=list)


def connect_account(app: gr.Blocks, services, bar: AccountBar, rate: RateTab, tabs: RoleTabs) -> list:
    """Wire signing in (``/sign_in``), signing out and the page load (invitation links, a stored session).

    Call it inside ``app`` once the tabs exist: signing in shows the tabs of the account's role and
    the Rate tab's first screen (the profile if not given yet, else the rater's studies); the page
    load resumes the study being rated. Returns the events after which a session may have changed,
    for tabs that refresh on sign-in (``.then``).
    """
    rate.rating.render()  # the page's top level: read at load even while the Rate tab is hidden
    on = _AccountEvents(services, bar, rate, tabs)
    outputs = [bar.session, bar.stored_session, bar.whoami, bar.sign_in_row, bar.sign_out, bar.password,
               *rate.account_outputs, *tabs.rater, *tabs.admin]
    events = [bar.sign_in.click(on.sign_in, [bar.username, bar.password], outputs, api_name="sign_in"),
              bar.password.submit(on.sign_in, [bar.username, bar.password], outputs, api_name=False),
              bar.sign_out.click(on.sign_out, bar.session, [*outputs, bar.stored_study], api_name=False)]
    loaded = app.load(on.load, [bar.stored_session, bar.stored_study, rate.rating], [*outputs, bar.stored_study],
                      api_name=False)
    loaded.then(None, js=STRIP_INVITE_JS, api_name=False)
    rate.study.change(on.study, [bar.session, rate.study], bar.stored_study, api_name=False)
    return [*events, loaded]


class _AccountEvents:
    """The account bar's callbacks: each answers with the bar, the Rate tab's screens and the tabs' visibility."""

    def __init__(self, services, bar: AccountBar, rate: RateTab, tabs: RoleTabs):
        self.services, self.bar, self.rate, self.tabs = services, bar, rate, tabs

    def visible(self, role: str | None) -> dict:
        return {**{tab: gr.update(visible=role in ("rater", "admin")) for tab in self.tabs.rater},
                **{tab: gr.update(visible=role == "admin") for tab in self.tabs.admin}}

    # Signing in clears the typed password; signing out leaves the box alone (the page load's
    # answer would otherwise race a person typing into it).
    def signed_in(self, db, token, preferred_study=None, rating=None) -> dict:
        bar = self.bar
        who = studies.account(db, token)
        study = rating if rating is not None else preferred_study
        return {bar.session: token, bar.stored_session: token, bar.whoami: f"Signed in as **{who.username}** ({who.role}).",
                bar.sign_in_row: gr.update(visible=False), bar.sign_out: gr.update(visible=True), bar.password: "",
                **self.rate.signed_in(db, token, who, study, resume=rating is not None), **self.visible(who.role)}

    def signed_out(self, text, study) -> dict:
        bar = self.bar
        return {bar.session: "", bar.stored_session: "", bar.whoami: text, bar.sign_in_row: gr.update(visible=True),
                bar.sign_out: gr.update(visible=False), **self.rate.signed_out(), bar.stored_study: study,
                **self.visible(None)}

    @served
    def sign_in(self, user, pwd, request: gr.Request):
        with self.services.db() as db:
            token = studies.sign_in(db, user, pwd, client=client_address(request))
            return self.signed_in(db, token)

    @served
    def sign_out(self, token):
        with self.services.db() as db:
            studies.sign_out(db, token)
        return self.signed_out("Signed out.", None)

    @served
    def load(self, saved, saved_study, rating, request: gr.Request):
        invite = request.query_params.get("invite") if request else None
        with self.services.db() as db:
            if invite:
                try:
                    saved, saved_study = studies.redeem_invitation(db, invite)
                    rating = None  # a new link opens on the rater's studies, with its study chosen
                except NotSignedIn as err:
                    gr.Warning(str(err))
            try:
                studies.account(db, saved)
            except NotSignedIn:
                return self.signed_out("Not signed in.", saved_study)
            return {**self.signed_in(db, saved, saved_study, rating if isinstance(rating, int) else None),
                    self.bar.stored_study: saved_study}

    @retry_locked
    def study(self, token, value):
        """Remembers the chosen study in the browser, for signed-in callers only."""
        try:
            with self.services.db() as db:
                studies.account(db, token)
        except NotSignedIn:
            return None
        return value


def client_address(request: gr.Request | None) -> str | None:
    """The caller's address, for throttling failed sign-ins (and setup tokens) per client."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None)
