"""The Rate tab: a gastroenterologist's screen, from the profile to the last trial.

One screen at a time: the profile (asked once, before the first trial), the rater's own studies
with their progress (read afresh whenever the list is shown), and the rating screen. The rating
screen covers the page (``#rate-screen``, styled by ``review/rate.css``) so that it fits a
1280x720 laptop without scrolling: progress as "Image 7 of 18", the image as large as the
viewport allows with the questions beside it, Submit. ``review/keyboard.js`` answers with one key
per answer, marks the current question, zooms the image, and locks the answers from a submit
until the next image is on screen; the next trial's images are preloaded in hidden image boxes.

An incomplete submit leaves the image and every answer on screen and names every missing answer
(a notice, not ``gr.Error``). The server accepts a submit only for the trial it showed last
(``review.studies``). A reload resumes the study being rated (``RateTab.rating``, kept in the
browser) without pressing Start.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import gradio as gr

from review import studies
from review.studies import ARTIFACTS, COLONOSCOPY_BANDS, MASK_FIT
from review.ui import served

SPECIALTIES = ["gastroenterology", "surgery", "pathology", "gastroenterology fellow / trainee", "endoscopy nurse", "other"]
SCALE = [str(i) for i in range(1, 6)]
PATHOLOGY = [("Adenomatous (AD)", "AD"), ("Non-adenomatous", "NonAD"), ("Cannot tell", "cannot tell")]
ANSWERS: tuple[str, ...] = ("real_or_synthetic", "source_confidence", "realism", "pathology", "pathology_confidence",
                            "artifacts", "comment", "synthetic_choice", "choice_confidence", "pathology_left",
                            "pathology_right", "mask_fit")
"""The rating's fields, in the order the Rate tab's answer widgets are inputs of ``/submit_rating``."""
_CLEARED = {"artifacts": [], "comment": ""}  # what an answer widget shows before it is answered; else None
KEYBOARD_HELP = "Keys: **1–6** answer the marked question · **↑ ↓** move · **Enter** submits · **Z** zooms"
BACK = "Back to my studies"
NO_TRIAL = "There is no image to rate: press Start / resume."
# After a submit's answer: keyboard.js unlocks the answers once the next image is on screen.
UNLOCK_JS = "() => { window.__polypUnlock && window.__polypUnlock(); }"


@dataclass(frozen=True)
class RateTab:
    """The Rate tab's components (``answers``: the answer widgets by ``ANSWERS`` name) and its screens.

    ``rating`` (the study being rated, kept in the browser) is made unrendered: ``review.ui.connect_account``
    places it at the page's top level, so that it is read at page load even while the tab is hidden.
    """

    profile: gr.Group
    specialty: gr.Dropdown
    years: gr.Number
    colonoscopies: gr.Radio
    save_profile: gr.Button
    chooser: gr.Column
    study: gr.Dropdown
    start: gr.Button
    rating: gr.BrowserState
    screen: gr.Column
    status: gr.Markdown
    progress: gr.HTML
    back: gr.Button
    trial_id: gr.Textbox
    key: gr.Textbox
    body: gr.Row
    image: gr.Image
    left: gr.Image
    right: gr.Image
    preload: tuple
    single: gr.Column
    pair: gr.Column
    notice: gr.Markdown
    submit: gr.Button
    answers: dict

    @property
    def submit_outputs(self) -> list:
        """What a submit writes: only what changes from one trial of a study to the next (its first four and
        its last, the mask question, are the API's reply order).

        A study's mode, and so which images and questions show, is set when its screen opens
        (``trial_outputs``); each output of an event costs the server time, an update far more than a value.
        """
        return [self.status, self.progress, self.trial_id, self.key, self.notice, self.image, self.left, self.right,
                *self.preload, *self.answers.values()]

    @property
    def account_outputs(self) -> list:
        """What signing in, signing out and the page load write in this tab."""
        return [self.profile, self.chooser, self.study, self.rating, *self.trial_outputs]

    @property
    def trial_outputs(self) -> list:
        """What showing a trial writes; the first four and the last (the mask question) are the API's reply order."""
        return [self.status, self.progress, self.trial_id, self.key, self.screen, self.body, self.notice, self.image,
                self.left, self.right, *self.preload, self.single, self.pair, *self.answers.values()]

    def signed_in(self, db, token: str, who: studies.Account, study_id: int | None, resume: bool) -> dict:
        """The tab for a signed-in account: the profile if not given yet, else the study list, or with
        ``resume`` and a study being rated, its next trial."""
        chooser = {**_chooser(self, db, token, study_id), self.profile: gr.update(visible=who.needs_profile)}
        if who.needs_profile:  # the list is filled, and shown once the profile is saved
            return {**self.closed(), **chooser, self.chooser: gr.update(visible=False), self.rating: None}
        if resume and study_id is not None and chooser[self.study]["value"] == study_id:
            try:
                return {**chooser, **_show_next(self, db, token, study_id), self.chooser: gr.update(visible=False)}
            except studies.ReviewError as err:  # closed meanwhile, say: the list, and why
                gr.Warning(str(err))
        return {**self.closed(), **chooser, self.rating: None}

    def signed_out(self) -> dict:
        """Nothing of the tab shown: no profile, no studies, no image."""
        return {**self.closed(), self.profile: gr.update(visible=False), self.chooser: gr.update(visible=False),
                self.study: gr.update(choices=[], value=None), self.rating: None}

    def closed(self) -> dict:
        """The rating screen closed and emptied (the trial's images leave the page)."""
        blank = {widget: _CLEARED.get(name) for name, widget in self.answers.items()}
        return {**blank, self.screen: gr.update(visible=False), self.status: "", self.progress: "", self.trial_id: "",
                self.key: "", self.notice: "", self.image: None, self.left: None, self.right: None,
                **{box: None for box in self.preload}}


def build_rate(services, session: gr.Textbox) -> RateTab:
    """Build the Rate tab in the current Blocks and wire ``/next_trial``, ``/submit_rating`` and ``/save_profile``.

    Args:
        services: The app's services (``services.db()``).
        session: The account bar's session token, an input of every event.
    """
    tab = _rate_layout()

    @served
    def on_start(token, study_id):
        with services.db() as db:
            studies.account(db, token)  # who asks comes first, whatever else is wrong
            if study_id is None:
                raise gr.Error("Choose a study first (sign in to see yours).")
            return {**_show_next(tab, db, token, int(study_id)), tab.chooser: gr.update(visible=False),
                    tab.rating: int(study_id)}

    @served
    def on_submit(token, study_id, trial, submit_key, real_or_synthetic, source_confidence, realism, pathology,
                  pathology_confidence, artifacts, comment, synthetic_choice, choice_confidence, pathology_left,
                  pathology_right, mask_fit=None):  # the last answer is optional for API clients
        values = (real_or_synthetic, source_confidence, realism, pathology, pathology_confidence, artifacts, comment,
                  synthetic_choice, choice_confidence, pathology_left, pathology_right, mask_fit)
        with services.db() as db:
            studies.account(db, token)  # who asks comes first, whatever else is wrong
            if not trial or study_id is None:
                raise gr.Error(NO_TRIAL)
            try:  # in a commit shared with the raters submitting at the same moment
                _, view = studies.submit_and_next_shared(services.pool, token, int(study_id), int(trial),
                                                         _answers(values), submit_key)
            except studies.MissingAnswers as missing:  # everything stays on screen; the notice names what is left
                return {tab.notice: _missing_text(tab, missing.names)}
            return _next_values(tab, db, token, int(study_id), view)

    @served
    def on_profile(token, spec, yrs, band):
        with services.db() as db:
            studies.save_profile(db, token, spec, yrs, band)
        return {tab.profile: gr.update(visible=False), tab.chooser: gr.update(visible=True)}  # filled at sign-in

    @served
    def on_back(token, study_id):
        with services.db() as db:
            studies.account(db, token)
            return {**tab.closed(), **_chooser(tab, db, token, study_id), tab.rating: None}

    answers = list(tab.answers.values())
    start_outputs = [*tab.trial_outputs[:4], tab.rating, tab.chooser, *tab.trial_outputs[4:]]
    tab.start.click(on_start, [session, tab.study], start_outputs, api_name="next_trial")
    tab.submit.click(on_submit, [session, tab.study, tab.trial_id, tab.key, *answers], tab.submit_outputs,
                     api_name="submit_rating", concurrency_limit=None, concurrency_id="rating",
                     show_progress="hidden").then(None, js=UNLOCK_JS, api_name=False)
    tab.save_profile.click(on_profile, [session, tab.specialty, tab.years, tab.colonoscopies],
                           [tab.profile, tab.chooser], api_name="save_profile")
    tab.back.click(on_back, [session, tab.study], [tab.chooser, tab.study, tab.rating, *tab.trial_outputs],
                   api_name=False)
    return tab


def _show_next(tab: RateTab, db, token: str, study_id: int) -> dict:
    """The rating screen with the rater's next trial, its response clock started."""
    return _trial_screen(tab, db, token, study_id, studies.next_item(db, token, study_id))


def _trial_screen(tab: RateTab, db, token: str, study_id: int, view: studies.TrialView | None) -> dict:
    """The rating screen opened on ``view`` (answers cleared, its successor preloaded), or on the rater's summary."""
    if view is None:
        summary = studies.personal_summary(db, token, study_id)
        return {**tab.closed(), tab.screen: gr.update(visible=True), tab.body: gr.update(visible=False),
                tab.status: _summary_text(summary)}
    is_pair = view.mode == "pair"
    values = _trial_values(tab, view)
    return {**values, tab.screen: gr.update(visible=True), tab.body: gr.update(visible=True),
            tab.answers["mask_fit"]: gr.update(value=None, visible=view.ask_mask_fit),
            tab.image: gr.update(value=values[tab.image], visible=not is_pair),
            tab.left: gr.update(value=values[tab.left], visible=is_pair),
            tab.right: gr.update(value=values[tab.right], visible=is_pair),
            tab.single: gr.update(visible=not is_pair), tab.pair: gr.update(visible=is_pair)}


def _next_values(tab: RateTab, db, token: str, study_id: int, view: studies.TrialView | None) -> dict:
    """A submit's reply (``RateTab.submit_outputs``): ``view``'s values on the open screen, or the summary.

    Plain values: the screen's layout stays as ``_trial_screen`` set it, but for the mask question of a
    study that outlines masks (hidden on its attention checks). After the last trial the images and
    answers are emptied and the status holds the summary; rate.css then hides the screen's body.
    """
    if view is None:
        closed = tab.closed()
        summary = studies.personal_summary(db, token, study_id)
        return {**{output: closed[output] for output in tab.submit_outputs}, tab.status: _summary_text(summary)}
    values = _trial_values(tab, view)
    if view.masks_shown:
        values[tab.answers["mask_fit"]] = gr.update(value=None, visible=view.ask_mask_fit)
    return values


def _trial_values(tab: RateTab, view: studies.TrialView) -> dict:
    """The values of ``submit_outputs`` that show ``view``: answers cleared, its images, its successor's preloaded."""
    is_pair = view.mode == "pair"
    upcoming = (*view.upcoming, None, None)[:2]
    return {**{widget: _CLEARED.get(name) for name, widget in tab.answers.items()}, tab.notice: "",
            tab.status: f"**Image {view.position} of {view.total}**",
            tab.progress: f'<progress max="{view.total}" value="{view.position - 1}" aria-label="Progress"></progress>',
            tab.trial_id: str(view.trial_id), tab.key: secrets.token_urlsafe(16),
            tab.image: None if is_pair else view.image_paths[0], tab.left: view.image_paths[0] if is_pair else None,
            tab.right: view.image_paths[1] if is_pair else None, **dict(zip(tab.preload, upcoming))}


def _chooser(tab: RateTab, db, token: str, preferred: int | None) -> dict:
    """The study list, read now (so its progress is never stale), with ``preferred`` chosen if it is the rater's."""
    choices = [(f"{row['name']} · {row['rated']} of {row['total']} rated"
                + ("" if row["status"] == "open" else f" · {row['status']}"), row["id"])
               for row in studies.rater_studies(db, token)]
    ids = [value for _, value in choices]
    chosen = preferred if preferred in ids else (ids[0] if ids else None)
    return {tab.chooser: gr.update(visible=True), tab.study: gr.update(choices=choices, value=chosen)}


def _answers(values) -> dict:
    return {name: value for name, value in zip(ANSWERS, values) if value not in (None, "")}


def _missing_text(tab: RateTab, names) -> str:
    """The notice of an incomplete submit: every missing answer, by its question's title."""
    titles = [tab.answers[name].label.split(" (")[0] for name in sorted(names, key=ANSWERS.index)]
    return f"**Not sent yet: please answer {len(titles)} more.** Missing: " + "; ".join(titles) + "."


def _summary_text(summary: dict) -> str:
    lines = ["### All done: thank you!", f"You rated {summary['trials']} images."]
    if summary["trials"]:
        lines.append(f"Real vs synthetic: {summary['source_correct']} of {summary['trials']} correct "
                     f"({summary['source_correct'] / summary['trials']:.0%}).")
    if summary["pathology_called"]:
        lines.append(f"Pathology: {summary['pathology_correct']} of {summary['pathology_called']} calls matched the label.")
    return "\n\n".join(lines)


def _question(kind, choices, label: str, **kwargs):
    """One keyboard-driven question: ``kbd-q`` for keyboard.js, ``kbd-required`` unless it is optional."""
    classes = ["kbd-q", *(["kbd-multi"] if kind is gr.CheckboxGroup else ["kbd-required"])]
    return kind(choices, label=label, elem_classes=classes, **kwargs)


def _rate_layout() -> RateTab:
    """The tab's components; pure layout."""
    with gr.Group(visible=False, elem_id="rate-profile") as profile:
        gr.Markdown("### About you\nAsked once, before your first image; kept for the analysis by experience.")
        specialty = gr.Dropdown(SPECIALTIES, label="Specialty", allow_custom_value=True)
        years = gr.Number(label="Years of practice", precision=0, minimum=0, maximum=70)
        colonoscopies = gr.Radio(list(COLONOSCOPY_BANDS), label="Colonoscopies performed (approximately)")
        save_profile = gr.Button("Save and continue", variant="primary")
    with gr.Column(visible=False, elem_id="rate-chooser") as chooser:
        gr.Markdown("### Your studies")
        with gr.Row():
            study = gr.Dropdown([], label="Study", scale=3)
            start = gr.Button("Start / resume", variant="primary", scale=1)
    rating = gr.BrowserState(None, storage_key="polypturing-rating", render=False)
    trial_id = gr.Textbox(visible=False, label="trial")
    key = gr.Textbox(visible=False, label="key")
    answers = {}
    with gr.Column(visible=False, elem_id="rate-screen") as screen:
        with gr.Row(elem_id="rate-header", equal_height=True):
            status = gr.Markdown("", elem_id="rate-status")
            progress = gr.HTML("", elem_id="rate-progress")
            gr.Markdown(KEYBOARD_HELP, elem_id="rate-help")
            back = gr.Button(BACK, size="sm", scale=0, elem_id="rate-back")
        with gr.Row(elem_id="rate-body", equal_height=False) as body:
            with gr.Row(elem_id="rate-images"):
                image_box = {"type": "filepath", "interactive": False, "buttons": [], "show_label": False,
                             "elem_classes": "rate-image"}
                image = gr.Image(label="Image", **image_box)
                left = gr.Image(label="Left", visible=False, **image_box)
                right = gr.Image(label="Right", visible=False, **image_box)
            with gr.Column(elem_classes="rating-panel", elem_id="rate-questions"):
                with gr.Column(elem_classes="rate-group") as single:
                    answers["real_or_synthetic"] = _question(gr.Radio, [("Real", "real"), ("Synthetic", "synthetic")],
                                                             "Real or synthetic?")
                    answers["source_confidence"] = _question(gr.Radio, SCALE, "Confidence (1 = guess, 5 = certain)")
                    answers["realism"] = _question(gr.Radio, SCALE, "Realism (1 = clearly artificial, 5 = as real)")
                    answers["pathology"] = _question(gr.Radio, PATHOLOGY, "Pathology")
                    answers["pathology_confidence"] = _question(gr.Radio, SCALE, "Pathology confidence (1 = guess, 5 = certain)")
                    answers["artifacts"] = _question(gr.CheckboxGroup, list(ARTIFACTS), "Artifacts seen (optional)")
                    answers["mask_fit"] = _question(gr.Radio, list(MASK_FIT),
                                                    "Does the green outline fit the lesion? (the polyp's mask)",
                                                    visible=False)
                    answers["comment"] = gr.Textbox(label="Comment (optional)", show_label=False, max_lines=2,
                                                    placeholder="Comment (optional)", elem_id="rate-comment")
                with gr.Column(visible=False, elem_classes="rate-group") as pair:
                    answers["synthetic_choice"] = _question(gr.Radio, [("Left", "left"), ("Right", "right")],
                                                            "Which one is synthetic?")
                    answers["choice_confidence"] = _question(gr.Radio, SCALE, "Confidence (1 = guess, 5 = certain)")
                    answers["pathology_left"] = _question(gr.Radio, PATHOLOGY, "Pathology of the left image")
                    answers["pathology_right"] = _question(gr.Radio, PATHOLOGY, "Pathology of the right image")
                with gr.Row(elem_id="rate-actions"):
                    notice = gr.Markdown("", elem_id="rate-notice")
                    submit = gr.Button("Submit (Enter)", variant="primary", elem_id="rate-submit", elem_classes="rating-submit")
        with gr.Row(elem_id="rate-preload"):  # the next trial's images, loaded before they are needed
            preload = tuple(gr.Image(type="filepath", interactive=False, buttons=[], show_label=False,
                                     label=f"Next {n}", elem_classes="rate-preload") for n in (1, 2))
    return RateTab(profile, specialty, years, colonoscopies, save_profile, chooser, study, start, rating, screen,
                   status, progress, back, trial_id, key, body, image, left, right, preload, single, pair, notice,
                   submit, {name: answers[name] for name in ANSWERS})
