"""The Generate tab (admins): pick a discovered checkpoint and a pathology, edit the prompt, generate, see provenance."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from common.labels import LABEL_NAMES, LABELS
from generation.errors import USER_ERRORS
from generation.library import generate_and_record
from generation.prompts import load_prompts
from generation.sampling import DEFAULT_SCHEDULER, GUIDANCE_RANGE, MAX_SEED, SCHEDULERS, STEPS_RANGE, SamplingRequest

TABLE_COLUMNS = ["seed", "label", "step", "scheduler", "steps", "guidance", "width", "height", "seconds", "sha256", "file"]
PHANTOM_NOTE = (
    "Checkpoints marked **phantom demo** were trained on procedural phantom frames drawn by "
    "`generation.phantom`, not on clinical images. Put your own checkpoints in the checkpoints folder "
    "and press *Refresh checkpoints*."
)


def user_errors_of(*errors: type[Exception]):
    """A decorator turning the given domain errors into ``gr.Error``: the user sees the message, not a traceback."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except errors as err:
                raise gr.Error(str(err)) from err

        return wrapper

    return decorate


user_errors = user_errors_of(*USER_ERRORS)


def next_step_text(text: str) -> str:
    """The "what to do next" line at the top of an admin tab (Markdown): ``text`` is one sentence."""
    return f"**What to do next:** {text}"


GENERATE_NEXT = ("pick a checkpoint, a pathology and how many images, then press *Generate*: the images and their "
                 "provenance go into the study database (for a study of checkpoints raters could obtain, let "
                 "*Create study* generate its images instead).")


NOT_ALLOWED = "Generating needs an admin account: sign in as an admin."
FAMILY_DEFAULT = "family default"
"""The Sampler choice that lets the checkpoint's family pick its scheduler (``SamplingRequest(scheduler=None)``)."""


@dataclass(frozen=True)
class GenerateTab:
    """The tab's checkpoint picker and ``show_choices(token)``, its update after a sign-in (empty unless admin)."""

    checkpoint: gr.Dropdown
    show_choices: Callable[[str], dict]


def build(services, session: gr.Textbox, is_admin: Callable[[str], bool]) -> GenerateTab:
    """Build the Generate tab in the current Blocks (admins only: ``is_admin(token)`` is the first check of every event).

    Checkpoints are picked by display name from the discovered list and mapped to their folder on
    the server; no path is typed, and none reaches the browser before an admin signs in.
    """
    book = load_prompts()
    gr.Markdown(next_step_text(GENERATE_NEXT), elem_id="generate-next")
    gr.Markdown(PHANTOM_NOTE)
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            checkpoint = gr.Dropdown(choices=[], value=None, label="Checkpoint", allow_custom_value=False,
                                     info="the checkpoints found in the demo and the checkpoints folder")
            refresh = gr.Button("Refresh checkpoints", size="sm")
            label = gr.Radio([(LABEL_NAMES[k], k) for k in LABELS], value=LABELS[0], label="Pathology")
            prompt = gr.Textbox(book.default_prompt(LABELS[0]), lines=3, label="Prompt")
            negative = gr.Textbox(book.negative, label="Negative prompt")
            count = gr.Slider(1, 16, value=4, step=1, label="Number of images")
            seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed (image i uses seed + i)")
            steps = gr.Slider(*STEPS_RANGE, value=20, step=1, label="Denoising steps")
            guidance = gr.Slider(*GUIDANCE_RANGE, value=3.0, step=0.5, label="Guidance scale")
            sampler = gr.Dropdown([(FAMILY_DEFAULT, FAMILY_DEFAULT), *((name, name) for name in SCHEDULERS)],
                                  value=FAMILY_DEFAULT, label="Sampler",
                                  info=f"the family's default is {DEFAULT_SCHEDULER} for the compact model and Stable "
                                       "Diffusion, flow-euler for SD3 and FLUX")
            run = gr.Button("Generate", variant="primary")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Generated images", columns=4, height="auto", object_fit="contain")
            table = gr.Dataframe(headers=TABLE_COLUMNS, label="Provenance (stored in the study database)", wrap=True)

    def allowed(token) -> None:
        if not is_admin(token):
            raise gr.Error(NOT_ALLOWED)

    @user_errors
    def on_generate(token, name, label, prompt, negative, count, seed, steps, guidance, sampler, progress=gr.Progress()):
        allowed(token)
        path = checkpoint_path(services, name)
        request = SamplingRequest(label=label, prompt=prompt, negative_prompt=negative, n=count, seed=seed,
                                  steps=steps, guidance=guidance, scheduler=None if sampler == FAMILY_DEFAULT else sampler)
        progress(0, desc="loading checkpoint")
        rows = generate_and_record(services, path, request, on_step=lambda done, total: progress((done, total), desc="denoising", unit="steps"))
        return {gallery: [(row["path"], _caption(row)) for row in rows], table: [[row[c] for c in TABLE_COLUMNS] for row in rows]}

    @user_errors
    def on_label(token, value):
        allowed(token)
        return book.default_prompt(value)

    def on_refresh(token):
        allowed(token)
        names = checkpoint_names(services)
        return gr.Dropdown(choices=names, value=names[-1] if names else None)

    def on_checkpoint(token, name):
        """The negative prompt box follows the family: FLUX-like families take none (they would refuse it)."""
        info = _infos_by_name(services).get(name) if is_admin(token) and isinstance(name, str) else None
        if info is None:
            return gr.update()
        takes = info.family_spec.negative_prompt
        return gr.update(value=book.negative if takes else "", interactive=takes,
                         label="Negative prompt" if takes else f"Negative prompt (the {info.family} family takes none)")

    def show_choices(token) -> dict:
        return on_refresh(token) if is_admin(token) else gr.Dropdown(choices=[], value=None)

    label.change(on_label, [session, label], prompt, api_name="default_prompt")
    refresh.click(on_refresh, session, checkpoint, api_name="list_checkpoints")
    checkpoint.change(on_checkpoint, [session, checkpoint], negative, api_name=False)
    run.click(on_generate, [session, checkpoint, label, prompt, negative, count, seed, steps, guidance, sampler],
              [gallery, table], api_name="generate")
    return GenerateTab(checkpoint, show_choices)


def checkpoint_names(services) -> list[str]:
    """The display names of every checkpoint of the demo and the checkpoints folder, by step (what the pickers show)."""
    return list(_checkpoints_by_name(services))


def checkpoint_path(services, name) -> str:
    """The folder of the discovered checkpoint shown as ``name``; no other path is ever loaded from the browser.

    Raises:
        gr.Error: If ``name`` is not one of ``checkpoint_names`` (the message names no path).
    """
    if not name:
        raise gr.Error("No checkpoint selected: pick one from the Checkpoint list (press Refresh checkpoints if it is empty).")
    path = _checkpoints_by_name(services).get(name) if isinstance(name, str) else None
    if path is None:
        raise gr.Error("Unknown checkpoint: pick one from the Checkpoint list (press Refresh checkpoints).")
    return path


def _checkpoints_by_name(services) -> dict[str, str]:
    return {name: str(info.path) for name, info in _infos_by_name(services).items()}


def _infos_by_name(services) -> dict:
    found: dict = {}
    for info in services.checkpoints():
        name, number = info.label, 2
        while name in found:  # two folders with the same step and name: keep both pickable
            name, number = f"{info.label} ({number})", number + 1
        found[name] = info
    return found


def _caption(row: dict) -> str:
    return f"{row['label']} · seed {row['seed']} · step {row['step']} · {row['scheduler']} {row['steps']} steps · guidance {row['guidance']}"
