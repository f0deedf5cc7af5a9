"""The Studies tab (admins): create a study, run its blinding audit, open and close it, follow its
progress, export its ratings, revoke sessions and re-issue invitations.

Every event carries the session token of the account bar (``review.ui``) and runs through its
``served`` wrapper; ``review.studies`` and ``review.study_setup`` check the admin on the server.
"""

from __future__ import annotations

import gradio as gr

from common.files import new_temporary_folder, remove_temporary_folder, write_atomic
from database import image_sets as image_set_store
from generation.ui import checkpoint_names, checkpoint_path
from review import studies, study_setup
from review.design import StudyDesign
from review.studies import ReviewError
from review.ui import is_admin, retry_locked, served, user_errors


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
