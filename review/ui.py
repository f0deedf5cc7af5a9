"""The Review room's tabs: the account bar (sign-in), the Rate tab (blinded trials) and the Studies tab (admin).

``app.py`` places them: ``build_account_bar`` above the tabs, ``build_rate`` and ``build_studies`` in
them, then ``connect_account`` once every tab exists. Every event carries the session token from the
account bar's hidden textbox (mirrored in the browser's local storage, so closing the browser keeps
the place) and ``review.studies`` checks it server side: the API gives a rater nothing the page does not.
Every callback runs through ``served``: domain errors become messages and a locked database is retried.

(About 550 lines: the account bar, the Rate tab and the Studies tab share the session wiring and the
error handling; the Studies tab is the candidate to move into a module of its own.)
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

from common.files import new_temporary_folder, remove_temporary_folder, write_atomic
from database import image_sets as image_set_store
from database.raters import DuplicateName
from generation.errors import USER_ERRORS
from generation.ui import checkpoint_names, checkpoint_path, user_errors_of
from review import studies, study_setup
from review.auth import WeakPassword
from review.design import DesignError, StudyDesign
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


def build_studies(services, session: gr.Textbox) -> None:
    """Build the Studies tab in the current Blocks: create, audit, open, close, follow and export studies (admins)."""
    gr.Markdown("Create a study, run its blinding audit, open it, watch progress and export the ratings. Admins only.")
    table = gr.Dataframe(headers=["id", "name", "mode", "status", "raters", "rated", "trials", "audit"], label="Studies", interactive=False)
    refresh = gr.Button("Refresh", size="sm")
    with gr.Accordion("New study", open=False):
        name = gr.Textbox(label="Study name")
        mode = gr.Radio([("Single image", "single"), ("Pair (which one is synthetic?)", "pair")], value="single", label="Mode")
        checkpoints = gr.CheckboxGroup([], label="Checkpoints (synthetic images per checkpoint and pathology)")
        image_sets_box = gr.CheckboxGroup([], label="Real images from these image sets (none ticked: every clinical "
                                                    "set; on a demo install without one, the phantom demo set)")
        with gr.Row():
            per_cell = gr.Number(4, precision=0, minimum=1, label="Synthetic images per checkpoint and pathology")
            real_per_label = gr.Number(0, precision=0, minimum=0, label="Real images per pathology (0 = as many as synthetic)")
            ratings = gr.Number(1, precision=0, minimum=1, label="Ratings per image")
        with gr.Row():
            repeats = gr.Number(1, precision=0, minimum=0, label="Repeats per rater")
            attention = gr.Number(1, precision=0, minimum=0, label="Attention checks per rater")
            size = gr.Number(256, precision=0, minimum=64, maximum=1024, label="Presentation size (px)")
            seed = gr.Number(0, precision=0, minimum=0, label="Seed")
        generate_missing = gr.Checkbox(True, label="Generate missing synthetic images now (default prompt and sampler)")
        raters = gr.Textbox(lines=4, label="Raters: one per line, `username` (invitation link) or `username,password`")
        show_masks = gr.Checkbox(False, label="Outline each image's polyp mask and ask whether it fits the lesion "
                                              "(single mode; only images with a stored mask; none generated now)")
        create = gr.Button("Create study", variant="primary")
        invitations = gr.Dataframe(headers=["rater", "trials", "invitation link (shown once)"], label="Invitations", interactive=False)
    with gr.Row():
        study_id = gr.Number(label="Study id", precision=0, minimum=1)
        override = gr.Textbox(label="Override reason (only to open a study whose audit failed; recorded)")
    with gr.Row():
        audit_btn = gr.Button("Run blinding audit")
        open_btn = gr.Button("Open")
        close_btn = gr.Button("Close")
        progress_btn = gr.Button("Progress")
        export_btn = gr.Button("Export ratings CSV")
    audit_view = gr.JSON(label="Blinding audit")
    progress_table = gr.Dataframe(headers=["rater", "profile", "rated", "trials", "last rating"], label="Progress per rater", interactive=False)
    export_file = gr.File(label="Ratings (tidy CSV)")
    export_dir = gr.State(None)
    with gr.Accordion("Accounts", open=False):
        account_name = gr.Textbox(label="Username")
        with gr.Row():
            revoke_btn = gr.Button("Revoke sessions and unused invitations")
            reissue_btn = gr.Button("Re-issue invitation for the study id above")
        account_note = gr.Markdown("")

    on = _StudiesEvents(services, table, checkpoints, invitations, audit_view, export_file, export_dir, image_sets_box)
    form = [name, mode, checkpoints, per_cell, real_per_label, ratings, repeats, attention, size, seed, generate_missing,
            raters, show_masks, image_sets_box]
    refresh.click(on.refresh, session, [table, checkpoints, image_sets_box], api_name="list_studies")
    create.click(on.create, [session, *form], [invitations, table], api_name="create_study")
    audit_btn.click(on.audit, [session, study_id], [audit_view, table], api_name="audit_study")
    open_btn.click(on.open, [session, study_id, override], table, api_name="open_study")
    close_btn.click(on.close, [session, study_id], table, api_name="close_study")
    progress_btn.click(on.progress, [session, study_id], progress_table, api_name="study_progress")
    export_btn.click(on.export, [session, study_id], [export_file, export_dir], api_name="export_ratings").then(
        on.forget_export, [session, export_dir], export_dir, api_name=False)
    revoke_btn.click(on.revoke, [session, account_name], account_note, api_name="revoke_sessions")
    reissue_btn.click(on.reissue, [session, study_id, account_name], account_note, api_name="reissue_invitation")


EXPORT_PREFIX = "polyp-export-"


class _StudiesEvents:
    """The Studies tab's callbacks; each opens its own connection, and ``review.study_setup`` checks the admin."""

    def __init__(self, services, table, checkpoints, invitations, audit_view, export_file, export_dir, image_sets_box):
        self.services, self.table, self.checkpoints, self.image_sets = services, table, checkpoints, image_sets_box
        self.invitations, self.audit_view = invitations, audit_view
        self.export_file, self.export_dir = export_file, export_dir

    @served
    def refresh(self, token):
        with self.services.db() as db:
            studies.require_admin(db, token)
            rows = study_setup.studies_table(db)
            sets = [(_set_choice(s), s["name"]) for s in image_set_store.list_sets(db)]
        return {self.table: rows, self.checkpoints: gr.update(choices=checkpoint_names(self.services)),
                self.image_sets: gr.update(choices=sets)}

    @user_errors
    def create(self, token, *values, progress=gr.Progress()):
        invitations, table = _create_study(self.services, token, *values, progress=progress)
        return {self.invitations: invitations, self.table: table}

    @served
    def audit(self, token, sid):
        with self.services.db() as db:
            return {self.audit_view: study_setup.audit_study(db, token, _admin_id(db, token, sid)), self.table: study_setup.studies_table(db)}

    @served
    def open(self, token, sid, reason):
        with self.services.db() as db:
            study_setup.open_study(db, token, _admin_id(db, token, sid), reason)
            gr.Info("Study opened.")
            return study_setup.studies_table(db)

    @served
    def close(self, token, sid):
        with self.services.db() as db:
            study_setup.close_study(db, token, _admin_id(db, token, sid))
            return study_setup.studies_table(db)

    @served
    def progress(self, token, sid):
        with self.services.db() as db:
            rows = study_setup.progress(db, token, _admin_id(db, token, sid))
        return [[r["username"], "yes" if r["profile_given"] else "no", r["rated"], r["total"], r["last_rating"] or ""]
                for r in rows]

    @served
    def export(self, token, sid):
        with self.services.db() as db:
            text = studies.export_csv(db, token, _admin_id(db, token, sid))
        out = new_temporary_folder(EXPORT_PREFIX) / f"study-{_id(sid)}-ratings.csv"
        write_atomic(out, text.encode("utf-8"))
        return {self.export_file: str(out), self.export_dir: str(out.parent)}

    @retry_locked
    def forget_export(self, token, folder):
        """Remove the temporary copy once Gradio has cached the file it serves (under a content-hash URL)."""
        if is_admin(self.services)(token):
            remove_temporary_folder(folder, EXPORT_PREFIX)
        return None

    @served
    def revoke(self, token, username):
        with self.services.db() as db:
            ended, withdrawn = studies.revoke_as_admin(db, token, username)
        return f"{username}: {ended} session(s) ended, {withdrawn} unused invitation(s) withdrawn."

    @served
    def reissue(self, token, sid, username):
        with self.services.db() as db:
            invite = study_setup.new_invitation(db, token, _admin_id(db, token, sid), (username or "").strip())
        return (f"New invitation for {username} (shown once; earlier unused links of this study stop working): "
                f"`/?invite={invite}`")


def _create_study(services, token, name, mode, checkpoint_list, per_cell, real_per_label, ratings, repeats, attention,
                  size, seed, generate_missing, raters_text, show_masks=False, image_set_names=None,
                  progress=None) -> tuple[list, list]:
    """Create a study from the tab's form; returns the invitation rows and the refreshed studies table."""
    with services.db() as db:
        studies.require_admin(db, token)
        # Chosen by display name from the discovered list; only those folders are ever loaded.
        checkpoint_paths = [checkpoint_path(services, choice) for choice in checkpoint_list or []]
        # Images generated here would have no mask: a mask study uses stored image+mask pairs only.
        ids = study_setup.ensure_images(services, checkpoint_paths, int(per_cell or 0), int(seed or 0),
                                        generate=bool(generate_missing) and not show_masks, progress=progress)
        design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=int(per_cell or 0),
                             real_per_label=int(real_per_label) if real_per_label else None, ratings_per_image=int(ratings or 1),
                             repeats=int(repeats or 0), attention_checks=int(attention or 0), size=int(size or 256), seed=int(seed or 0),
                             show_masks=bool(show_masks), image_sets=tuple(image_set_names or ()))
        created = study_setup.create_study(db, services.config.data_dir, token, name, design, study_setup.parse_raters(raters_text))
        rows = [[user, created.trials_per_rater[user], f"/?invite={invite}"] for user, invite in created.invitations.items()]
        return rows, study_setup.studies_table(db)


def _set_choice(image_set: dict) -> str:
    """How the New study form shows an image set: name, kind, public or not, and its images per label."""
    counts = ", ".join(f"{label} {n}" for label, n in image_set["counts"].items())
    return f"{image_set['name']} ({image_set_store.describe(image_set)}; {counts})"


def _admin_id(db, token, value) -> int:
    """The study id typed in the tab, read only after the caller is known to be an admin."""
    studies.require_admin(db, token)
    return _id(value)


def _id(value) -> int:
    if value is None or int(value) < 1:
        raise ReviewError("enter the study's id (from the Studies table)")
    return int(value)
