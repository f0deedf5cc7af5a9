"""The Review room's account bar (sign-in) and Rate tab (blinded trials).

``app.py`` places them: ``build_account_bar`` above the tabs, ``build_rate`` (and
``review.studies_tab.build_studies``) in them, then ``connect_account`` once every tab exists. Every event carries the session token from the
account bar's hidden textbox (mirrored in the browser's local storage, so closing the browser keeps
the place) and ``review.studies`` checks it server side: the API gives a rater nothing the page does not.
Every callback runs through ``served``: domain errors become messages and a locked database is retried.

The Studies tab (admins) is ``review.studies_tab``; it shares ``served`` and ``is_admin`` from here.
"""

from __future__ import annotations

import functools
import logging
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from database.raters import DuplicateName
from generation.errors import USER_ERRORS
from generation.ui import user_errors_of
from review import studies
from review.auth import WeakPassword
from review.design import DesignError
from review.studies import ARTIFACTS, COLONOSCOPY_BANDS, MASK_FIT, NotSignedIn, ReviewError

logger = logging.getLogger(__name__)

SPECIALTIES = ["gastroenterology", "surgery", "pathology", "gastroenterology fellow / trainee", "endoscopy nurse", "other"]
SCALE = [str(i) for i in range(1, 6)]
PATHOLOGY = [("Adenomatous (AD)", "AD"), ("Non-adenomatous", "NonAD"), ("Cannot tell", "cannot tell")]
ANSWERS: tuple[str, ...] = ("real_or_synthetic", "source_confidence", "realism", "pathology", "pathology_confidence",
                            "artifacts", "comment", "synthetic_choice", "choice_confidence", "pathology_left",
                            "pathology_right", "mask_fit")
"""The rating's fields, in the order the Rate tab's answer widgets are inputs of ``/submit_rating``."""
_CLEARED = {"artifacts": [], "comment": ""}  # what an answer widget shows before it is answered; else None
KEYBOARD_HELP = ("**Keyboard:** digits answer the highlighted question (1 = first option) and move on; "
                 "↑/↓ move between questions; Enter submits.")
# Installed once per page by an HTML block; drives the radios of the visible rating panel.
KEYBOARD_JS = (Path(__file__).parent / "keyboard.js").read_text(encoding="utf-8")

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
    fills the Rate tab's study list and profile form. Returns the events after which a session may
    have changed, for tabs that refresh on sign-in (``.then``).
    """
    on = _AccountEvents(services, bar, rate, tabs)
    outputs = [bar.session, bar.stored_session, bar.whoami, bar.sign_in_row, bar.sign_out, bar.password, rate.profile,
               rate.study, *tabs.rater, *tabs.admin]
    events = [bar.sign_in.click(on.sign_in, [bar.username, bar.password], outputs, api_name="sign_in"),
              bar.password.submit(on.sign_in, [bar.username, bar.password], outputs, api_name=False),
              bar.sign_out.click(on.sign_out, bar.session, [*outputs, bar.stored_study], api_name=False)]
    loaded = app.load(on.load, [bar.stored_session, bar.stored_study], [*outputs, bar.stored_study], api_name=False)
    loaded.then(None, js=STRIP_INVITE_JS, api_name=False)
    rate.study.change(on.study, [bar.session, rate.study], bar.stored_study, api_name=False)
    return [*events, loaded]


class _AccountEvents:
    """The account bar's callbacks: each answers with the bar, the Rate tab's study list and the tabs' visibility."""

    def __init__(self, services, bar: AccountBar, rate: RateTab, tabs: RoleTabs):
        self.services, self.bar, self.rate, self.tabs = services, bar, rate, tabs

    def visible(self, role: str | None) -> dict:
        return {**{tab: gr.update(visible=role in ("rater", "admin")) for tab in self.tabs.rater},
                **{tab: gr.update(visible=role == "admin") for tab in self.tabs.admin}}

    # Signing in clears the typed password; signing out leaves the box alone (the page load's
    # answer would otherwise race a person typing into it).
    def signed_in(self, token, preferred_study=None) -> dict:
        bar, rate = self.bar, self.rate
        with self.services.db() as db:
            who = studies.account(db, token)
            choices = _study_choices(db, token)
        ids = [value for _, value in choices]
        chosen = preferred_study if preferred_study in ids else (ids[0] if ids else None)
        return {bar.session: token, bar.stored_session: token, bar.whoami: f"Signed in as **{who.username}** ({who.role}).",
                bar.sign_in_row: gr.update(visible=False), bar.sign_out: gr.update(visible=True), bar.password: "",
                rate.profile: gr.update(visible=who.needs_profile), rate.study: gr.update(choices=choices, value=chosen),
                **self.visible(who.role)}

    def signed_out(self, text, study) -> dict:
        bar, rate = self.bar, self.rate
        return {bar.session: "", bar.stored_session: "", bar.whoami: text, bar.sign_in_row: gr.update(visible=True),
                bar.sign_out: gr.update(visible=False), rate.profile: gr.update(visible=False),
                rate.study: gr.update(choices=[], value=None), bar.stored_study: study, **self.visible(None)}

    @served
    def sign_in(self, user, pwd, request: gr.Request):
        with self.services.db() as db:
            token = studies.sign_in(db, user, pwd, client=_client(request))
        return self.signed_in(token)

    @served
    def sign_out(self, token):
        with self.services.db() as db:
            studies.sign_out(db, token)
        return self.signed_out("Signed out.", None)

    @served
    def load(self, saved, saved_study, request: gr.Request):
        invite = request.query_params.get("invite") if request else None
        with self.services.db() as db:
            if invite:
                try:
                    saved, saved_study = studies.redeem_invitation(db, invite)
                except NotSignedIn as err:
                    gr.Warning(str(err))
            try:
                studies.account(db, saved)
            except NotSignedIn:
                return self.signed_out("Not signed in.", saved_study)
        return {**self.signed_in(saved, saved_study), self.bar.stored_study: saved_study}

    @retry_locked
    def study(self, token, value):
        """Remembers the chosen study in the browser, for signed-in callers only."""
        try:
            with self.services.db() as db:
                studies.account(db, token)
        except NotSignedIn:
            return None
        return value


def _client(request: gr.Request | None) -> str | None:
    """The caller's address, for throttling failed sign-ins per client."""
    client = getattr(request, "client", None)
    return getattr(client, "host", None)


def _study_choices(db, token) -> list[tuple[str, int]]:
    return [(f"{row['name']} · {row['rated']}/{row['total']} rated" + ("" if row["status"] == "open" else f" · {row['status']}"), row["id"])
            for row in studies.rater_studies(db, token)]


# ---------------------------------------------------------------------------------------------
# Rate


@dataclass(frozen=True)
class RateTab:
    """The Rate tab's components; ``answers`` holds the answer widgets by ``ANSWERS`` name."""

    profile: gr.Group
    specialty: gr.Dropdown
    years: gr.Number
    colonoscopies: gr.Radio
    save_profile: gr.Button
    study: gr.Dropdown
    start: gr.Button
    status: gr.Markdown
    progress: gr.Slider
    trial_id: gr.Textbox
    key: gr.Textbox
    single: gr.Column
    image: gr.Image
    pair: gr.Column
    left: gr.Image
    right: gr.Image
    submit: gr.Button
    answers: dict


def build_rate(services, session: gr.Textbox) -> RateTab:
    """Build the Rate tab in the current Blocks and wire ``/next_trial``, ``/submit_rating`` and ``/save_profile``."""
    tab = _rate_layout()

    def show_next(token, study_id) -> dict:
        with services.db() as db:
            view = studies.next_item(db, token, int(study_id))
            summary = None if view is not None else studies.personal_summary(db, token, int(study_id))
        return _trial_updates(tab, view, summary)

    @served
    def on_start(token, study_id):
        with services.db() as db:
            studies.account(db, token)  # who asks comes first, whatever else is wrong
        if study_id is None:
            raise gr.Error("Choose a study first (sign in to see yours).")
        return show_next(token, study_id)

    @served
    def on_submit(token, study_id, trial, submit_key, real_or_synthetic, source_confidence, realism, pathology,
                  pathology_confidence, artifacts, comment, synthetic_choice, choice_confidence, pathology_left,
                  pathology_right, mask_fit=None):  # the last answer is optional for API clients
        values = (real_or_synthetic, source_confidence, realism, pathology, pathology_confidence, artifacts, comment,
                  synthetic_choice, choice_confidence, pathology_left, pathology_right, mask_fit)
        with services.db() as db:
            studies.account(db, token)  # who asks comes first, whatever else is wrong
        if not trial or study_id is None:
            raise gr.Error("There is no image to rate: press Start / resume.")
        with services.db() as db:
            studies.submit(db, token, int(study_id), int(trial), _answers(values), submit_key)
        return show_next(token, study_id)

    @served
    def on_profile(token, spec, yrs, band):
        with services.db() as db:
            studies.save_profile(db, token, spec, yrs, band)
        return gr.update(visible=False)

    trial_outputs = [tab.status, tab.progress, tab.trial_id, tab.key, tab.single, tab.pair, tab.image, tab.left,
                     tab.right, tab.submit, *tab.answers.values()]
    tab.start.click(on_start, [session, tab.study], trial_outputs, api_name="next_trial")
    tab.submit.click(on_submit, [session, tab.study, tab.trial_id, tab.key, *tab.answers.values()], trial_outputs,
                     api_name="submit_rating", concurrency_limit=None, concurrency_id="rating")
    tab.save_profile.click(on_profile, [session, tab.specialty, tab.years, tab.colonoscopies], tab.profile,
                           api_name="save_profile")
    return tab


def _rate_layout() -> RateTab:
    with gr.Group(visible=False) as profile:
        gr.Markdown("### About you (asked once; kept for stratified analysis)")
        specialty = gr.Dropdown(SPECIALTIES, label="Specialty", allow_custom_value=True)
        years = gr.Number(label="Years of practice", precision=0, minimum=0, maximum=70)
        colonoscopies = gr.Radio(list(COLONOSCOPY_BANDS), label="Colonoscopies performed (approximately)")
        save_profile = gr.Button("Save")
    with gr.Row():
        study = gr.Dropdown([], label="Study", scale=3)
        start = gr.Button("Start / resume", variant="primary", scale=1)
    status = gr.Markdown("")
    progress = gr.Slider(0, 1, value=0, label="Progress", interactive=False, visible=False)
    trial_id = gr.Textbox(visible=False, label="trial")
    key = gr.Textbox(visible=False, label="key")
    answers = {}
    with gr.Column(visible=False, elem_classes="rating-panel") as single:
        image = gr.Image(label="Image", type="filepath", interactive=False, height=420, buttons=[])
        answers["real_or_synthetic"] = gr.Radio([("Real", "real"), ("Synthetic", "synthetic")],
                                                label="Real or synthetic?", elem_classes="kbd-q")
        answers["source_confidence"] = gr.Radio(SCALE, label="Confidence (1 = guess, 5 = certain)", elem_classes="kbd-q")
        answers["realism"] = gr.Radio(SCALE, label="Realism (1 = clearly artificial, 5 = indistinguishable from real)",
                                      elem_classes="kbd-q")
        answers["pathology"] = gr.Radio(PATHOLOGY, label="Pathology", elem_classes="kbd-q")
        answers["pathology_confidence"] = gr.Radio(SCALE, label="Pathology confidence (1-5)", elem_classes="kbd-q")
        answers["artifacts"] = gr.CheckboxGroup(list(ARTIFACTS), label="Artifacts seen (optional)",
                                                elem_classes=["kbd-q", "kbd-multi"])
        answers["mask_fit"] = gr.Radio(list(MASK_FIT), label="Does the green outline (the polyp's mask) fit the lesion?",
                                       elem_classes="kbd-q", visible=False)
        answers["comment"] = gr.Textbox(label="Comment (optional)", max_lines=3)
    with gr.Column(visible=False, elem_classes="rating-panel") as pair:
        with gr.Row():
            left = gr.Image(label="Left", type="filepath", interactive=False, height=380, buttons=[])
            right = gr.Image(label="Right", type="filepath", interactive=False, height=380, buttons=[])
        answers["synthetic_choice"] = gr.Radio([("Left", "left"), ("Right", "right")], label="Which one is synthetic?",
                                               elem_classes="kbd-q")
        answers["choice_confidence"] = gr.Radio(SCALE, label="Confidence (1 = guess, 5 = certain)", elem_classes="kbd-q")
        answers["pathology_left"] = gr.Radio(PATHOLOGY, label="Pathology of the left image", elem_classes="kbd-q")
        answers["pathology_right"] = gr.Radio(PATHOLOGY, label="Pathology of the right image", elem_classes="kbd-q")
    submit = gr.Button("Submit", variant="primary", visible=False, elem_classes="rating-submit")
    gr.Markdown(KEYBOARD_HELP)
    return RateTab(profile, specialty, years, colonoscopies, save_profile, study, start, status, progress, trial_id,
                   key, single, image, pair, left, right, submit, {name: answers[name] for name in ANSWERS})


def _answers(values) -> dict:
    return {name: value for name, value in zip(ANSWERS, values) if value not in (None, "")}


def _trial_updates(tab: RateTab, view: studies.TrialView | None, summary: dict | None) -> dict:
    """Show ``view`` with every answer cleared, or the rater's ``summary`` when no trial is left."""
    answers = {widget: _CLEARED.get(name) for name, widget in tab.answers.items()}
    answers[tab.answers["mask_fit"]] = gr.update(value=None, visible=bool(view and view.ask_mask_fit))
    if view is None:
        return {**answers, tab.status: _summary_text(summary), tab.progress: gr.update(visible=False),
                tab.trial_id: "", tab.key: "", tab.single: gr.update(visible=False), tab.pair: gr.update(visible=False),
                tab.image: None, tab.left: None, tab.right: None, tab.submit: gr.update(visible=False)}
    is_pair = view.mode == "pair"
    fraction = (view.position - 1) / max(view.total, 1)
    return {**answers, tab.status: f"**Image {view.position} of {view.total}**",
            tab.progress: gr.update(value=round(fraction, 3), visible=True),
            tab.trial_id: str(view.trial_id), tab.key: secrets.token_urlsafe(16),
            tab.single: gr.update(visible=not is_pair), tab.pair: gr.update(visible=is_pair),
            tab.image: None if is_pair else view.image_paths[0], tab.left: view.image_paths[0] if is_pair else None,
            tab.right: view.image_paths[1] if is_pair else None, tab.submit: gr.update(visible=True)}


def _summary_text(summary: dict) -> str:
    lines = ["### All done: thank you!", f"You rated {summary['trials']} images."]
    if summary["trials"]:
        lines.append(f"Real vs synthetic: {summary['source_correct']} of {summary['trials']} correct "
                     f"({summary['source_correct'] / summary['trials']:.0%}).")
    if summary["pathology_called"]:
        lines.append(f"Pathology: {summary['pathology_correct']} of {summary['pathology_called']} calls matched the label.")
    return "\n\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Studies (admin)
