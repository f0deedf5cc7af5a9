"""The Review room: sign-in, the Rate tab (blinded trials) and the Studies tab (admin).

Every event carries the session token from a hidden textbox (mirrored in the browser's local
storage, so closing the browser keeps the place) and ``review.studies`` checks it server side:
the HTTP API gives a rater nothing the page does not.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import gradio as gr

from database import studies as study_store
from database.raters import DuplicateName
from generation.errors import USER_ERRORS
from generation.ui import checkpoint_choices, user_errors_of
from review import studies, study_setup
from review.auth import WeakPassword
from review.design import DesignError, StudyDesign
from review.studies import ARTIFACTS, COLONOSCOPY_BANDS, MASK_FIT, NotSignedIn, ReviewError

SPECIALTIES = ["gastroenterology", "surgery", "pathology", "gastroenterology fellow / trainee", "endoscopy nurse", "other"]
SCALE = [str(i) for i in range(1, 6)]
PATHOLOGY = [("Adenomatous (AD)", "AD"), ("Non-adenomatous", "NonAD"), ("Cannot tell", "cannot tell")]
KEYBOARD_HELP = (
    "**Keyboard:** digits answer the highlighted question (1 = first option) and move on; "
    "↑/↓ move between questions; Enter submits."
)
# Installed once per page by an HTML block; drives the radios of the visible rating panel.
KEYBOARD_JS = """
if (!window.__polypKeys) {
  window.__polypKeys = true;
  window.__polypCursor = -1;
  const groups = () => {
    const panel = [...document.querySelectorAll('.rating-panel')].find(p => p.offsetParent !== null);
    return panel ? [...panel.querySelectorAll('.kbd-q')].filter(g => g.offsetParent !== null) : [];
  };
  const answered = g => g.querySelector('input:checked') !== null;
  const mark = (gs, i) => {
    gs.forEach((g, j) => { g.classList.toggle('kbd-current', j === i); g.style.outline = j === i ? '3px solid #f59e0b' : ''; });
    window.__polypCursor = i;
  };
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (t && (t.tagName === 'TEXTAREA' || (t.tagName === 'INPUT' && !['radio', 'checkbox'].includes(t.type)))) return;
    const gs = groups();
    if (!gs.length) return;
    let i = window.__polypCursor;
    if (i < 0 || i >= gs.length) { i = gs.findIndex(g => !answered(g)); if (i < 0) i = 0; }
    if (e.key === 'Enter') {
      const submit = document.querySelector('.rating-submit');
      if (submit && submit.offsetParent !== null) { (submit.tagName === 'BUTTON' ? submit : submit.querySelector('button')).click(); window.__polypCursor = -1; e.preventDefault(); }
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      mark(gs, Math.max(0, Math.min(gs.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))); e.preventDefault();
    } else if (/^[1-9]$/.test(e.key)) {
      const inputs = gs[i].querySelectorAll('input');
      const n = parseInt(e.key, 10) - 1;
      if (n >= inputs.length) return;
      inputs[n].click();
      e.preventDefault();
      if (gs[i].classList.contains('kbd-multi')) { mark(gs, i); return; }
      const next = gs.findIndex((g, j) => j > i && !answered(g) && !g.classList.contains('kbd-multi'));
      mark(gs, next < 0 ? Math.min(i + 1, gs.length - 1) : next);
    }
  });
}
"""


# Domain errors become ``gr.Error`` (a visible message), never a traceback.
user_errors = user_errors_of(ReviewError, DesignError, WeakPassword, DuplicateName, *USER_ERRORS)


def build(services, more_tabs=()) -> gr.Blocks:
    """The app's body as a Blocks: the account bar, then the Rate and Studies tabs and ``more_tabs``.

    Args:
        more_tabs: ``(title, builder)`` pairs; ``builder(session)`` builds a tab's components in
            place and may use ``session`` (the signed-in token) as an event input.
    """
    with gr.Blocks() as room:
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
        with gr.Tabs():
            with gr.Tab("Rate"):
                rate = _build_rate(services, session, stored_study)
            with gr.Tab("Studies (admin)"):
                _build_admin(services, session)
            for title, builder in more_tabs:
                with gr.Tab(title):
                    builder(session)

        account_outputs = [session, stored_session, whoami, sign_in_row, sign_out, *rate.profile_outputs, rate.studies]

        def account_view(token, preferred_study=None):
            db = services.db()
            try:
                who = studies.account(db, token)
                choices = _study_choices(db, token)
            finally:
                db.close()
            ids = [value for _, value in choices]
            chosen = preferred_study if preferred_study in ids else (ids[0] if ids else None)
            return [token, token, f"Signed in as **{who.username}** ({who.role}).", gr.update(visible=False),
                    gr.update(visible=True), gr.update(visible=who.needs_profile), gr.update(choices=choices, value=chosen)]

        @user_errors
        def on_sign_in(user, pwd):
            db = services.db()
            try:
                token = studies.sign_in(db, user, pwd)
            finally:
                db.close()
            return account_view(token)

        def on_load(saved, saved_study, request: gr.Request):
            invite = request.query_params.get("invite") if request else None
            db = services.db()
            try:
                if invite:
                    try:
                        saved, saved_study = studies.redeem_invitation(db, invite)
                    except NotSignedIn as err:
                        gr.Warning(str(err))
                studies.account(db, saved)
            except NotSignedIn:
                return ["", "", "Not signed in.", gr.update(visible=True), gr.update(visible=False),
                        gr.update(visible=False), gr.update(choices=[], value=None), saved_study]
            finally:
                db.close()
            return [*account_view(saved, saved_study), saved_study]

        sign_in.click(on_sign_in, [username, password], account_outputs, api_name="sign_in")
        password.submit(on_sign_in, [username, password], account_outputs, api_name=False)
        sign_out.click(lambda: ["", "", "Signed out.", gr.update(visible=True), gr.update(visible=False),
                                gr.update(visible=False), gr.update(choices=[], value=None), None],
                       outputs=[*account_outputs, stored_study], api_name=False)
        room.load(on_load, [stored_session, stored_study], [*account_outputs, stored_study], api_name=False)
        rate.studies.change(lambda value: value, rate.studies, stored_study, api_name=False)
    return room


class _RateTab:
    """Handles to the Rate tab's components that the account bar updates."""

    def __init__(self, profile_outputs, studies_dropdown):
        self.profile_outputs = profile_outputs
        self.studies = studies_dropdown


def _build_rate(services, session, stored_study) -> _RateTab:
    with gr.Group(visible=False) as profile_box:
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
    with gr.Column(visible=False, elem_classes="rating-panel") as single:
        image = gr.Image(label="Image", type="filepath", interactive=False, height=420, buttons=[])
        source = gr.Radio([("Real", "real"), ("Synthetic", "synthetic")], label="Real or synthetic?", elem_classes="kbd-q")
        source_conf = gr.Radio(SCALE, label="Confidence (1 = guess, 5 = certain)", elem_classes="kbd-q")
        realism = gr.Radio(SCALE, label="Realism (1 = clearly artificial, 5 = indistinguishable from real)", elem_classes="kbd-q")
        pathology = gr.Radio(PATHOLOGY, label="Pathology", elem_classes="kbd-q")
        path_conf = gr.Radio(SCALE, label="Pathology confidence (1-5)", elem_classes="kbd-q")
        artifacts = gr.CheckboxGroup(list(ARTIFACTS), label="Artifacts seen (optional)", elem_classes=["kbd-q", "kbd-multi"])
        mask_fit = gr.Radio(list(MASK_FIT), label="Does the green outline (the polyp's mask) fit the lesion?",
                            elem_classes="kbd-q", visible=False)
        comment = gr.Textbox(label="Comment (optional)", max_lines=3)
    with gr.Column(visible=False, elem_classes="rating-panel") as pair:
        with gr.Row():
            left = gr.Image(label="Left", type="filepath", interactive=False, height=380, buttons=[])
            right = gr.Image(label="Right", type="filepath", interactive=False, height=380, buttons=[])
        choice = gr.Radio([("Left", "left"), ("Right", "right")], label="Which one is synthetic?", elem_classes="kbd-q")
        choice_conf = gr.Radio(SCALE, label="Confidence (1 = guess, 5 = certain)", elem_classes="kbd-q")
        path_left = gr.Radio(PATHOLOGY, label="Pathology of the left image", elem_classes="kbd-q")
        path_right = gr.Radio(PATHOLOGY, label="Pathology of the right image", elem_classes="kbd-q")
    submit = gr.Button("Submit", variant="primary", visible=False, elem_classes="rating-submit")
    gr.Markdown(KEYBOARD_HELP)

    answers = [source, source_conf, realism, pathology, path_conf, artifacts, comment, choice, choice_conf, path_left,
               path_right, mask_fit]
    trial_outputs = [status, progress, trial_id, key, single, pair, image, left, right, submit, *answers]

    def show_next(token, study_id):
        db = services.db()
        try:
            view = studies.next_item(db, token, int(study_id))
            summary = None if view is not None else studies.personal_summary(db, token, int(study_id))
        finally:
            db.close()
        return _trial_updates(view, summary)

    @user_errors
    def on_start(token, study_id):
        if study_id is None:
            raise gr.Error("Choose a study first (sign in to see yours).")
        return show_next(token, study_id)

    @user_errors
    def on_submit(token, study_id, trial, submit_key, real_or_synthetic, source_confidence, realism, pathology,
                  pathology_confidence, artifacts, comment, synthetic_choice, choice_confidence, pathology_left,
                  pathology_right, mask_fit=None):  # the last answer is optional for API clients
        values = (real_or_synthetic, source_confidence, realism, pathology, pathology_confidence, artifacts, comment,
                  synthetic_choice, choice_confidence, pathology_left, pathology_right, mask_fit)
        if not trial:
            raise gr.Error("There is no image to rate: press Start / resume.")
        db = services.db()
        try:
            studies.submit(db, token, int(study_id), int(trial), _answers(values), submit_key)
        finally:
            db.close()
        return show_next(token, study_id)

    @user_errors
    def on_profile(token, spec, yrs, band):
        db = services.db()
        try:
            studies.save_profile(db, token, spec, yrs, band)
        finally:
            db.close()
        return gr.update(visible=False)

    start.click(on_start, [session, study], trial_outputs, api_name="next_trial")
    submit.click(on_submit, [session, study, trial_id, key, *answers], trial_outputs, api_name="submit_rating",
                 concurrency_limit=None, concurrency_id="rating")
    save_profile.click(on_profile, [session, specialty, years, colonoscopies], profile_box, api_name="save_profile")
    return _RateTab([profile_box], study)


def _answers(values) -> dict:
    names = ["real_or_synthetic", "source_confidence", "realism", "pathology", "pathology_confidence", "artifacts",
             "comment", "synthetic_choice", "choice_confidence", "pathology_left", "pathology_right", "mask_fit"]
    return {name: value for name, value in zip(names, values) if value not in (None, "")}


def _trial_updates(view, summary) -> list:
    cleared = [None] * 5 + [[], ""] + [None] * 4 + [gr.update(value=None, visible=bool(view and view.ask_mask_fit))]
    if view is None:
        text = _summary_text(summary)
        return [text, gr.update(visible=False), "", "", gr.update(visible=False), gr.update(visible=False),
                None, None, None, gr.update(visible=False), *cleared]
    fraction = (view.position - 1) / max(view.total, 1)
    is_pair = view.mode == "pair"
    return [
        f"**Image {view.position} of {view.total}**", gr.update(value=round(fraction, 3), visible=True),
        str(view.trial_id), secrets.token_urlsafe(16),
        gr.update(visible=not is_pair), gr.update(visible=is_pair),
        None if is_pair else view.image_paths[0], view.image_paths[0] if is_pair else None,
        view.image_paths[1] if is_pair else None, gr.update(visible=True), *cleared,
    ]


def _summary_text(summary: dict) -> str:
    lines = ["### All done: thank you!", f"You rated {summary['trials']} images."]
    if summary["trials"]:
        lines.append(f"Real vs synthetic: {summary['source_correct']} of {summary['trials']} correct "
                     f"({summary['source_correct'] / summary['trials']:.0%}).")
    if summary["pathology_called"]:
        lines.append(f"Pathology: {summary['pathology_correct']} of {summary['pathology_called']} calls matched the label.")
    return "\n\n".join(lines)


def _study_choices(db, token) -> list[tuple[str, int]]:
    return [(f"{row['name']} · {row['rated']}/{row['total']} rated" + ("" if row["status"] == "open" else f" · {row['status']}"), row["id"])
            for row in studies.rater_studies(db, token)]


# ---------------------------------------------------------------------------------------------
# Studies (admin)


def _build_admin(services, session) -> None:
    gr.Markdown("Create a study, run its blinding audit, open it, watch progress and export the ratings. Admins only.")
    studies_table = gr.Dataframe(headers=["id", "name", "mode", "status", "raters", "rated", "trials", "audit"], label="Studies", interactive=False)
    refresh = gr.Button("Refresh", size="sm")
    with gr.Accordion("New study", open=False):
        name = gr.Textbox(label="Study name")
        mode = gr.Radio([("Single image", "single"), ("Pair (which one is synthetic?)", "pair")], value="single", label="Mode")
        checkpoints = gr.CheckboxGroup([], label="Checkpoints (synthetic images per checkpoint and pathology)")
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

    def with_db(fn):
        # Not functools.wraps: Gradio reads the wrapper's own signature (token, *args) for the API.
        @user_errors
        def wrapper(token, *args):
            db = services.db()
            try:
                return fn(db, token, *args)
            finally:
                db.close()

        wrapper.__name__ = fn.__name__
        return wrapper

    @with_db
    def on_refresh(db, token):
        studies.require_admin(db, token)
        return _studies_rows(db), gr.update(choices=checkpoint_choices(services))

    @user_errors
    def on_create(token, *values, progress=gr.Progress()):
        return _create_study(services, token, *values, progress=progress)

    @with_db
    def on_audit(db, token, sid):
        return study_setup.audit_study(db, token, _id(sid)), _studies_rows(db)

    @with_db
    def on_open(db, token, sid, reason):
        study_setup.open_study(db, token, _id(sid), reason)
        gr.Info("Study opened.")
        return _studies_rows(db)

    @with_db
    def on_close(db, token, sid):
        study_setup.close_study(db, token, _id(sid))
        return _studies_rows(db)

    @with_db
    def on_progress(db, token, sid):
        rows = study_setup.progress(db, token, _id(sid))
        return [[r["username"], "yes" if r["profile_given"] else "no", r["rated"], r["total"], r["last_rating"] or ""] for r in rows]

    @with_db
    def on_export(db, token, sid):
        text = studies.export_csv(db, token, _id(sid))
        out = Path(tempfile.mkdtemp(prefix="polyp-export-")) / f"study-{_id(sid)}-ratings.csv"
        out.write_text(text)
        return str(out)

    refresh.click(on_refresh, session, [studies_table, checkpoints], api_name="list_studies")
    create.click(on_create, [session, name, mode, checkpoints, per_cell, real_per_label, ratings, repeats, attention, size, seed,
                             generate_missing, raters, show_masks], [invitations, studies_table], api_name="create_study")
    audit_btn.click(on_audit, [session, study_id], [audit_view, studies_table], api_name="audit_study")
    open_btn.click(on_open, [session, study_id, override], studies_table, api_name="open_study")
    close_btn.click(on_close, [session, study_id], studies_table, api_name="close_study")
    progress_btn.click(on_progress, [session, study_id], progress_table, api_name="study_progress")
    export_btn.click(on_export, [session, study_id], export_file, api_name="export_ratings")


def _create_study(services, token, name, mode, checkpoint_paths, per_cell, real_per_label, ratings, repeats, attention,
                  size, seed, generate_missing, raters_text, show_masks=False, progress=None):
    db = services.db()
    try:
        studies.require_admin(db, token)
        # Images generated here would have no mask: a mask study uses stored image+mask pairs only.
        ids = study_setup.ensure_images(services, checkpoint_paths or [], int(per_cell or 0), int(seed or 0),
                                        generate=bool(generate_missing) and not show_masks, progress=progress)
        design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=int(per_cell or 0),
                             real_per_label=int(real_per_label) if real_per_label else None, ratings_per_image=int(ratings or 1),
                             repeats=int(repeats or 0), attention_checks=int(attention or 0), size=int(size or 256), seed=int(seed or 0),
                             show_masks=bool(show_masks))
        created = study_setup.create_study(db, services.config.data_dir, token, name, design, _rater_specs(raters_text))
        rows = [[user, created.trials_per_rater[user], f"/?invite={invite}"] for user, invite in created.invitations.items()]
        return rows, _studies_rows(db)
    finally:
        db.close()


def _rater_specs(text: str) -> list[study_setup.RaterSpec]:
    specs = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if not line.strip():
            continue
        user, _, pwd = line.partition(",")
        if not user.strip():
            raise ReviewError(f"raters line {number}: expected `username` or `username,password`, got {line!r}")
        specs.append(study_setup.RaterSpec(user.strip(), pwd.strip() or None))
    return specs


def _studies_rows(db) -> list[list]:
    rows = []
    for study in study_store.list_studies(db):
        progress = study_store.study_progress(db, study["id"])
        audit = study["audit"]
        verdict = "not run" if audit is None else ("passed" if audit.get("passed") else "FAILED") + (
            " (overridden)" if study["audit_override"] else "")
        rows.append([study["id"], study["name"], study["mode"], study["status"], len(progress),
                     sum(r["rated"] for r in progress), sum(r["total"] for r in progress), verdict])
    return rows


def _id(value) -> int:
    if value is None or int(value) < 1:
        raise ReviewError("enter the study's id (from the Studies table)")
    return int(value)

