"""The Studies tab (admins): create a study, run its blinding audit, open and close it, follow its
progress, export its ratings, hand out and re-issue invitation links, revoke sessions.

Every event carries the session token of the account bar (``review.ui``) and runs through its
``served`` wrapper; ``review.studies`` and ``review.study_setup`` check the admin on the server.
A sign-in (a change of the session token) fills the tab for admins: the studies, the checkpoints
and image sets of the New study form, and the line saying what to do next; anyone else gets
nothing. Invitation links are full addresses (``AppConfig.link_base``) with a copy button each.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import gradio as gr

from common.files import new_temporary_folder, remove_temporary_folder, write_atomic
from common.numbers import MISSING
from database import image_sets as image_set_store
from database import studies as study_store
from generation.ui import checkpoint_names, checkpoint_path, next_step_text
from review import studies, study_setup
from review.audit import AUC_WORDS, audit_rows, audit_verdict
from review.design import StudyDesign
from review.studies import Forbidden, NotSignedIn, ReviewError
from review.ui import is_admin, retry_locked, served, user_errors

STUDY_HEADERS = ["id", "name", "mode", "status", "raters", "rated", "trials", "audit"]
AUDIT_HEADERS = ["cue", "what it looks at", "AUC on the files", "AUC on what raters see", "verdict"]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]")
# One listener on the invitations block copies the link of the button pressed (the clipboard API
# needs https or localhost; elsewhere a selected textarea and execCommand do it).
COPY_JS = """
element.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-copy]'), text = button && button.dataset.copy;
  if (!button) return;
  try { await navigator.clipboard.writeText(text); } catch (error) {
    const area = document.createElement('textarea');
    area.value = text; document.body.appendChild(area); area.select(); document.execCommand('copy'); area.remove();
  }
  button.textContent = 'Copied'; setTimeout(() => { button.textContent = 'Copy'; }, 2000);
});
"""
INVITATIONS_CSS = """
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--border-color-primary); }
td.link code { word-break: break-all; user-select: all; }
button[data-copy] { padding: 2px 12px; font-size: 13px; font-weight: normal; border: 1px solid
  var(--border-color-primary); border-radius: 6px; background: var(--button-secondary-background-fill); cursor: pointer; }
"""
NO_INVITATIONS = "<p>Invitation links appear here when a study is created or a link is re-issued.</p>"


def build_studies(services, session: gr.Textbox) -> None:
    """Build the Studies tab in the current Blocks: create, audit, open, close, follow and export studies (admins)."""
    ui = _layout(services.config.link_base)
    on = _StudiesEvents(services, ui)
    form = [ui.name, ui.mode, ui.checkpoints, ui.per_cell, ui.real_per_label, ui.ratings, ui.repeats, ui.attention,
            ui.size, ui.seed, ui.generate_missing, ui.raters, ui.show_masks, ui.image_sets]
    lists = [ui.table, ui.checkpoints, ui.image_sets, ui.study, ui.next_step]
    session.change(on.signed_in, session, [ui.study, ui.table, ui.checkpoints, ui.image_sets, ui.next_step, ui.new_study],
                   api_name=False)
    ui.refresh.click(on.refresh, session, lists, api_name="list_studies")
    ui.create.click(on.create, [session, *form], [ui.invitations, ui.table, ui.study, ui.next_step, ui.new_study],
                    api_name="create_study")
    ui.audit.click(on.audit, [session, ui.study], [ui.audit_verdict, ui.audit_table, ui.table, ui.study, ui.next_step],
                   api_name="audit_study")
    ui.open.click(on.open, [session, ui.study, ui.override], [ui.table, ui.study, ui.next_step], api_name="open_study")
    ui.close.click(on.close, [session, ui.study], [ui.table, ui.study, ui.next_step], api_name="close_study")
    ui.progress.click(on.progress, [session, ui.study], ui.progress_table, api_name="study_progress")
    ui.export.click(on.export, [session, ui.study], [ui.export_file, ui.export_dir], api_name="export_ratings").then(
        on.forget_export, [session, ui.export_dir], ui.export_dir, api_name=False)
    ui.revoke.click(on.revoke, [session, ui.account_name], ui.account_note, api_name="revoke_sessions")
    ui.reissue.click(on.reissue, [session, ui.study, ui.reissue_name], ui.invitations, api_name="reissue_invitation")


@dataclass(frozen=True)
class _Layout:
    """The tab's components."""

    next_step: gr.Markdown
    table: gr.Dataframe
    refresh: gr.Button
    new_study: gr.Accordion
    name: gr.Textbox
    mode: gr.Radio
    checkpoints: gr.CheckboxGroup
    image_sets: gr.CheckboxGroup
    per_cell: gr.Number
    real_per_label: gr.Number
    ratings: gr.Number
    repeats: gr.Number
    attention: gr.Number
    size: gr.Number
    seed: gr.Number
    generate_missing: gr.Checkbox
    raters: gr.Textbox
    show_masks: gr.Checkbox
    create: gr.Button
    invitations: gr.HTML
    reissue_name: gr.Textbox
    reissue: gr.Button
    study: gr.Dropdown
    override: gr.Textbox
    audit: gr.Button
    open: gr.Button
    close: gr.Button
    progress: gr.Button
    export: gr.Button
    audit_verdict: gr.Markdown
    audit_table: gr.Dataframe
    progress_table: gr.Dataframe
    export_file: gr.File
    export_dir: gr.State
    account_name: gr.Textbox
    revoke: gr.Button
    account_note: gr.Markdown


def _layout(link_base: str) -> _Layout:
    next_step = gr.Markdown(next_step_text("press *Refresh* to list the studies."), elem_id="studies-next")
    table = gr.Dataframe(headers=STUDY_HEADERS, label="Studies", interactive=False)
    refresh = gr.Button("Refresh", size="sm")
    with gr.Accordion("New study", open=False) as new_study:
        name = gr.Textbox(label="Study name")
        mode = gr.Radio([("Single image", "single"), ("Pair (which one is synthetic?)", "pair")], value="single", label="Mode")
        checkpoints = gr.CheckboxGroup([], label="Checkpoints (synthetic images per checkpoint and pathology)")
        image_sets = gr.CheckboxGroup([], label="Real images from these image sets (none ticked: every clinical "
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
    with gr.Group():
        gr.Markdown(_links_note(link_base), padding=True)
        invitations = gr.HTML(NO_INVITATIONS, label="Invitations", js_on_load=COPY_JS, css_template=INVITATIONS_CSS,
                              elem_id="studies-invitations", padding=True)
        with gr.Row(equal_height=True):
            reissue_name = gr.Textbox(label="Rater", placeholder="username", scale=2)
            reissue = gr.Button("Re-issue invitation for the chosen study", size="md", scale=1)
    with gr.Row():
        study = gr.Dropdown([], value=None, label="Study id", allow_custom_value=True, scale=2,
                            info="the study the buttons below act on")
        override = gr.Textbox(label="Override reason (only to open a study whose audit failed; recorded)", scale=3)
    with gr.Row():
        audit = gr.Button("Run blinding audit")
        open_ = gr.Button("Open")
        close = gr.Button("Close")
        progress = gr.Button("Progress")
        export = gr.Button("Export ratings CSV")
    audit_verdict_md = gr.Markdown("", elem_id="studies-audit-verdict")
    audit_table = gr.Dataframe(headers=AUDIT_HEADERS, label=f"Blinding audit per cue ({AUC_WORDS})",
                               interactive=False, wrap=True, max_height=900,
                               column_widths=["14%", "40%", "12%", "12%", "22%"])
    progress_table = gr.Dataframe(headers=["rater", "profile", "rated", "trials", "last rating"], label="Progress per rater", interactive=False)
    export_file = gr.File(label="Ratings (tidy CSV)")
    export_dir = gr.State(None)
    with gr.Accordion("Accounts", open=False):
        account_name = gr.Textbox(label="Username")
        revoke = gr.Button("Revoke sessions and unused invitations")
        account_note = gr.Markdown("")
    return _Layout(next_step, table, refresh, new_study, name, mode, checkpoints, image_sets, per_cell, real_per_label,
                   ratings, repeats, attention, size, seed, generate_missing, raters, show_masks, create, invitations,
                   reissue_name, reissue, study, override, audit, open_, close, progress, export, audit_verdict_md,
                   audit_table, progress_table, export_file, export_dir, account_name, revoke, account_note)


EXPORT_PREFIX = "polyp-export-"


class _StudiesEvents:
    """The Studies tab's callbacks; each opens its own connection, and ``review.study_setup`` checks the admin."""

    def __init__(self, services, ui: _Layout):
        self.services, self.ui = services, ui

    def _lists(self, db, chosen=None) -> dict:
        """The studies table, the study chooser (``chosen`` selected) and the next-step line."""
        ui = self.ui
        return {ui.table: study_setup.studies_table(db), ui.study: _study_choices(db, chosen),
                ui.next_step: next_step_text(next_step(db, lambda: bool(checkpoint_names(self.services))))}

    def _form(self, db) -> dict:
        """The New study form's checkpoints and image sets."""
        sets = [(_set_choice(s), s["name"]) for s in image_set_store.list_sets(db)]
        return {self.ui.checkpoints: gr.update(choices=checkpoint_names(self.services)),
                self.ui.image_sets: gr.update(choices=sets)}

    @retry_locked
    def signed_in(self, token):
        """After a sign-in or sign-out: the tab filled for an admin, nothing for anyone else (no error either)."""
        ui = self.ui
        with self.services.db() as db:
            try:
                studies.require_admin(db, token)
            except (Forbidden, NotSignedIn):
                return {ui.study: gr.update(choices=[], value=None), ui.table: gr.update(), ui.checkpoints: gr.update(),
                        ui.image_sets: gr.update(), ui.next_step: gr.update(), ui.new_study: gr.update()}
            lists = self._lists(db)
            none_yet = not study_store.list_studies(db)
            return {**lists, **self._form(db), ui.new_study: gr.update(open=none_yet)}

    @served
    def refresh(self, token):
        with self.services.db() as db:
            studies.require_admin(db, token)
            return {**self._lists(db), **self._form(db)}

    @user_errors
    def create(self, token, *values, progress=gr.Progress()):
        created = _create_study(self.services, token, *values, progress=progress)
        links = [(user, created.trials_per_rater[user], self.link(invite)) for user, invite in created.invitations.items()]
        with self.services.db() as db:
            return {self.ui.invitations: invitations_html(links, f"Study #{created.study_id} created"),
                    **self._lists(db, created.study_id), self.ui.new_study: gr.update(open=False)}

    @served
    def audit(self, token, sid):
        with self.services.db() as db:
            study_id = _admin_id(db, token, sid)
            result = study_setup.audit_study(db, token, study_id)
            return {self.ui.audit_verdict: audit_verdict(result), self.ui.audit_table: audit_rows(result),
                    **self._lists(db, study_id)}

    @served
    def open(self, token, sid, reason):
        with self.services.db() as db:
            study_id = _admin_id(db, token, sid)
            study_setup.open_study(db, token, study_id, reason)
            gr.Info("Study opened.")
            return self._lists(db, study_id)

    @served
    def close(self, token, sid):
        with self.services.db() as db:
            study_id = _admin_id(db, token, sid)
            study_setup.close_study(db, token, study_id)
            return self._lists(db, study_id)

    @served
    def progress(self, token, sid):
        with self.services.db() as db:
            rows = study_setup.progress(db, token, _admin_id(db, token, sid))
        return [[r["username"], "yes" if r["profile_given"] else "no", r["rated"], r["total"], r["last_rating"] or MISSING]
                for r in rows]

    @served
    def export(self, token, sid):
        with self.services.db() as db:
            study_id = _admin_id(db, token, sid)
            text = studies.export_csv(db, token, study_id)
        out = new_temporary_folder(EXPORT_PREFIX) / f"study-{study_id}-ratings.csv"
        write_atomic(out, text.encode("utf-8"))
        return {self.ui.export_file: str(out), self.ui.export_dir: str(out.parent)}

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
            study_id = _admin_id(db, token, sid)
            user = (username or "").strip()
            if not user:
                raise ReviewError("rater: type the username of a rater of the chosen study")
            invite = study_setup.new_invitation(db, token, study_id, user)
        return invitations_html([(user, None, self.link(invite))],
                                f"New link for {user}, study #{study_id}: earlier unused links of this study stop working")

    def link(self, invite: str) -> str:
        """The full invitation link for a token: the configured public address, ``/?invite=TOKEN``."""
        return f"{self.services.config.link_base}/?invite={invite}"


def invitations_html(links: list[tuple[str, int | None, str]], heading: str) -> str:
    """The invitation links as an HTML table, one Copy button each (``links``: rater, trials or None, full link)."""
    rows = "".join(
        f"<tr><td>{html.escape(user)}</td><td>{MISSING if trials is None else trials}</td>"
        f"<td class='link'><code>{html.escape(url)}</code></td>"
        f"<td><button type='button' data-copy='{html.escape(url, quote=True)}' "
        f"aria-label='Copy the link for {html.escape(user, quote=True)}'>Copy</button></td></tr>"
        for user, trials, url in links)
    return (f"<p><strong>{html.escape(heading)}.</strong> Each link signs its rater in once and is shown only now: "
            "copy it and send it to that rater (valid 30 days).</p>"
            "<table aria-label='Invitation links'><thead><tr><th>rater</th><th>trials</th><th>invitation link</th>"
            f"<th></th></tr></thead><tbody>{rows}</tbody></table>")


def next_step(db, has_checkpoints: Callable[[], bool]) -> str:
    """What the admin does next on this tab, from what the study database holds (one sentence, Markdown).

    ``has_checkpoints()`` is asked only while there is no study (it scans the checkpoint folders).
    """
    real = sum(sum(s["counts"].values()) for s in image_set_store.list_sets(db))
    rows = study_store.list_studies(db)
    if not real:
        return ("no real images are registered yet: run `python -m review.register --data DIR --set NAME` "
                "(the phantom demo: `make demo-data`), then press *Refresh*.")
    if not rows:
        if not has_checkpoints():
            return "no checkpoints found: put checkpoints in the checkpoints folder, then press *Refresh*."
        return ("open **New study**, tick the checkpoints, name the raters and press *Create study*; then copy each "
                "rater's invitation link.")
    drafts = [s for s in rows if s["status"] == "draft"]
    if drafts:
        draft = drafts[-1]
        where = f"study #{draft['id']} {draft['name']} is a draft: choose it under *Study id*, "
        if draft["audit"] is None:
            return where + "press *Run blinding audit*, then *Open*, and send the raters their links."
        if draft["audit"].get("passed"):
            return where + "its audit passed: press *Open* and send the raters their links."
        return where + "its audit failed: fix the images, or give an override reason and press *Open*."
    open_count = sum(s["status"] == "open" for s in rows)
    if open_count:
        return (f"{open_count} {'study is' if open_count == 1 else 'studies are'} open: follow *Progress*, "
                "re-issue a rater's link if needed, and *Close* a study when its raters are done.")
    return "every study is closed: export its ratings, analyse it in **Analysis (admin)**, or create a new study."


def _links_note(link_base: str) -> str:
    """Where the invitation links point, and a warning when only this computer can open that address."""
    note = f"**Invitation links** start with `{link_base}/`."
    if urlsplit(link_base).hostname in {host.strip("[]") for host in LOCAL_HOSTS}:
        note += (" Only this computer opens that address: for raters elsewhere, serve with `--public-url` "
                 "(e.g. `https://review.example.org` behind a TLS proxy; see README).")
    return note


def _study_choices(db, chosen=None):
    """The study chooser: every study, newest first, as ``#id name (mode, status)``; ``chosen`` selected."""
    choices = [(f"#{s['id']} {s['name']} ({s['mode']}, {s['status']})", s["id"])
               for s in reversed(study_store.list_studies(db))]
    return gr.update(choices=choices, value=chosen) if chosen is not None else gr.update(choices=choices)


def _create_study(services, token, name, mode, checkpoint_list, per_cell, real_per_label, ratings, repeats, attention,
                  size, seed, generate_missing, raters_text, show_masks=False, image_set_names=None,
                  progress=None) -> study_setup.CreatedStudy:
    """Create a study from the tab's form."""
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
        return study_setup.create_study(db, services.config.data_dir, token, name, design,
                                        study_setup.parse_raters(raters_text))


def _set_choice(image_set: dict) -> str:
    """How the New study form shows an image set: name, kind, public or not, and its images per label."""
    counts = ", ".join(f"{label} {n}" for label, n in image_set["counts"].items())
    return f"{image_set['name']} ({image_set_store.describe(image_set)}; {counts})"


def _admin_id(db, token, value) -> int:
    """The study chosen in the tab, read only after the caller is known to be an admin."""
    studies.require_admin(db, token)
    return _id(value)


def _id(value) -> int:
    """A study id from the chooser: its value (an int), or an id typed into it (``3`` or ``#3 ...``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip().lstrip("#").split(" ", 1)[0] if value is not None else ""
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        shown = "nothing" if value in (None, "") else repr(value)
        raise ReviewError(f"study id: choose a study from the list (got {shown}); its id is the first column of "
                          "the Studies table")
    return int(text)
