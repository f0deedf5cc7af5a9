"""The Generate tab: pick a checkpoint and a pathology, edit the prompt, generate, see provenance."""

from __future__ import annotations

import functools

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


def build(services) -> gr.Blocks:
    """The Generate tab as a Blocks, to be placed with ``.render()``."""
    book = load_prompts()
    choices = checkpoint_choices(services)
    with gr.Blocks() as tab:
        gr.Markdown(PHANTOM_NOTE)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                checkpoint = gr.Dropdown(
                    choices=choices, value=choices[-1][1] if choices else None, label="Checkpoint",
                    allow_custom_value=True, info="pick one, or paste the path of a checkpoint folder",
                )
                refresh = gr.Button("Refresh checkpoints", size="sm")
                label = gr.Radio([(LABEL_NAMES[k], k) for k in LABELS], value=LABELS[0], label="Pathology")
                prompt = gr.Textbox(book.default_prompt(LABELS[0]), lines=3, label="Prompt")
                negative = gr.Textbox(book.negative, label="Negative prompt")
                count = gr.Slider(1, 16, value=4, step=1, label="Number of images")
                seed = gr.Number(0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed (image i uses seed + i)")
                steps = gr.Slider(*STEPS_RANGE, value=20, step=1, label="Denoising steps")
                guidance = gr.Slider(*GUIDANCE_RANGE, value=3.0, step=0.5, label="Guidance scale")
                sampler = gr.Dropdown(list(SCHEDULERS), value=DEFAULT_SCHEDULER, label="Sampler")
                run = gr.Button("Generate", variant="primary")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="Generated images", columns=4, height="auto", object_fit="contain")
                table = gr.Dataframe(headers=TABLE_COLUMNS, label="Provenance (stored in the study database)", wrap=True)

        @user_errors
        def on_generate(path, label, prompt, negative, count, seed, steps, guidance, sampler, progress=gr.Progress()):
            if not path:
                raise gr.Error("No checkpoint selected: pick one from the Checkpoint list (press Refresh checkpoints if it is empty).")
            request = SamplingRequest(label=label, prompt=prompt, negative_prompt=negative, n=count, seed=seed,
                                      steps=steps, guidance=guidance, scheduler=sampler)
            progress(0, desc="loading checkpoint")
            rows = generate_and_record(services, path, request, on_step=lambda done, total: progress((done, total), desc="denoising", unit="steps"))
            return [(row["path"], _caption(row)) for row in rows], [[row[c] for c in TABLE_COLUMNS] for row in rows]

        label.change(user_errors(book.default_prompt), inputs=label, outputs=prompt, api_name="default_prompt")
        refresh.click(lambda: gr.Dropdown(choices=checkpoint_choices(services)), outputs=checkpoint, api_name="list_checkpoints")
        run.click(on_generate, [checkpoint, label, prompt, negative, count, seed, steps, guidance, sampler], [gallery, table], api_name="generate")
    return tab


def checkpoint_choices(services) -> list[tuple[str, str]]:
    """(label, path) of every checkpoint of the demo and the checkpoints folder, by step."""
    return [(info.label, str(info.path)) for info in services.checkpoints()]


def _caption(row: dict) -> str:
    return f"{row['label']} · seed {row['seed']} · step {row['step']} · {row['scheduler']} {row['steps']} steps · guidance {row['guidance']}"
