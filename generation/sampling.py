"""Sampling images from a loaded pipeline, with every setting recorded as provenance."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from common.files import atomic_path, write_if_changed
from common.labels import validate_label
from generation.families import FAMILIES, Family, native_size, prompt_cuts

logger = logging.getLogger(__name__)

SCHEDULERS: dict[str, str] = {
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "flow-euler": "FlowMatchEulerDiscreteScheduler",
}
"""Sampler names offered to users, mapped to diffusers scheduler classes; which fit a checkpoint
depends on its family (``generation.families``)."""
DEFAULT_SCHEDULER = "dpm++"
STEPS_RANGE = (1, 200)
GUIDANCE_RANGE = (0.0, 30.0)
MAX_SEED = 2**32 - 1
MAX_IMAGES = 10_000
PROVENANCE_COLUMNS = (
    "file", "sha256", "checkpoint", "step", "label", "prompt", "negative_prompt", "seed", "scheduler",
    "steps", "guidance", "width", "height", "seconds", "family", "layout", "base_fingerprint", "adapter_fingerprint",
    "adapter_scale", "notes",
)


class InvalidSetting(ValueError):
    """A sampling setting outside its allowed values."""


@dataclass(frozen=True)
class SamplingRequest:
    """What to generate. Image ``i`` uses seed ``seed + i``.

    The same request gives the same pixels again. An image remade alone (``n=1``) starts from the
    same noise, but on the CPU its pixels can differ by a grey level from the same seed made inside
    a batch, since batched float sums round differently.
    """

    label: str
    prompt: str
    n: int = 8
    seed: int = 0
    steps: int = 20
    guidance: float = 3.0
    scheduler: str | None = None
    negative_prompt: str = ""
    """``scheduler`` None (the default): the checkpoint family's default (``for_family``), ``dpm++``
    for SD and the compact model."""

    def validated(self) -> "SamplingRequest":
        """This request with whole numbers as ints, if every field is in range.

        Raises:
            UnknownLabel: If the label is not one of ``LABELS``.
            InvalidSetting: Naming the field, the value received and the values allowed.
        """
        validate_label(self.label)
        _check_range("steps", self.steps, *STEPS_RANGE)
        _check_range("guidance", self.guidance, *GUIDANCE_RANGE)
        _check_range("n", self.n, 1, MAX_IMAGES)
        _check_range("seed", self.seed, 0, MAX_SEED - int(self.n) + 1)
        if self.scheduler is not None and self.scheduler not in SCHEDULERS:
            raise InvalidSetting(f"scheduler {self.scheduler!r} is not supported; choose one of {', '.join(SCHEDULERS)}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidSetting("prompt is empty; describe the image to generate (the Generate tab pre-fills a template)")
        return replace(self, n=int(self.n), seed=int(self.seed), steps=int(self.steps), guidance=float(self.guidance),
                       negative_prompt=self.negative_prompt or "")

    def for_family(self, family: Family) -> "SamplingRequest":
        """This request, validated, with the family's default scheduler when none was chosen.

        Raises:
            InvalidSetting: If the family does not take the scheduler or a negative prompt.
        """
        request = self.validated()
        if request.scheduler is None:
            request = replace(request, scheduler=family.default_scheduler)
        if request.scheduler not in family.schedulers:
            raise InvalidSetting(f"scheduler {request.scheduler!r} does not fit {family.title} checkpoints; "
                                 f"choose one of {', '.join(family.schedulers)}")
        if request.steps < family.min_steps:
            raise InvalidSetting(f"steps must be at least {family.min_steps} for {family.title} checkpoints, got {request.steps}")
        if request.negative_prompt.strip() and not family.negative_prompt:
            raise InvalidSetting(f"{family.title} takes no negative prompt (its guidance is distilled into the model); "
                                 "leave the negative prompt empty")
        return request

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.n)]


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image and its provenance row (``file`` and ``sha256`` filled when saved)."""

    image: object
    provenance: dict


def _check_range(name: str, value, low, high) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:  # NaN fails too
        raise InvalidSetting(f"{name} must be between {low} and {high}, got {value!r}")
    if isinstance(low, int) and isinstance(high, int) and not float(value).is_integer():
        raise InvalidSetting(f"{name} must be a whole number between {low} and {high}, got {value!r}")


def use_scheduler(pipe, name: str) -> None:
    """Swap the pipeline's scheduler for sampler ``name``, keeping the trained noise schedule."""
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    if type(pipe.scheduler).__name__ != cls.__name__:
        pipe.scheduler = cls.from_config(pipe.scheduler.config)


def add_sampler_arguments(parser: argparse.ArgumentParser, family_defaults: bool = False) -> None:
    """The sampler options every sampling command line offers: prompts, steps, guidance, scheduler, batch size.

    With ``family_defaults`` the scheduler defaults to the checkpoint family's and the batch size to
    8 on the CPU or what free GPU memory holds.
    """
    parser.add_argument("--prompt", default=None, help="prompt (default: the label's template from assets/prompts.json)")
    parser.add_argument("--negative-prompt", default=None, help="negative prompt (default from assets/prompts.json; none for FLUX)")
    parser.add_argument("--steps", type=int, default=20, help=f"denoising steps, {STEPS_RANGE[0]}-{STEPS_RANGE[1]} (default 20)")
    parser.add_argument("--guidance", type=float, default=3.0,
                        help=f"guidance scale, {GUIDANCE_RANGE[0]:g}-{GUIDANCE_RANGE[1]:g}: classifier-free guidance, or "
                             "FLUX's distilled guidance (default 3.0)")
    if family_defaults:
        per_family = "; ".join(f"{f.name}: {', '.join(f.schedulers)}" for f in FAMILIES.values())
        parser.add_argument("--scheduler", default=None, choices=list(SCHEDULERS),
                            help=f"sampler (default: the family's first): {per_family}")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="images per forward pass (default 8 on the CPU, picked from free memory on a GPU)")
    else:
        parser.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=list(SCHEDULERS), help=f"sampler (default {DEFAULT_SCHEDULER})")
        parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")


def batches(request: SamplingRequest, batch_size: int) -> list[list[int]]:
    """The request's seeds cut into batches at fixed places: seeds ``S + k*B`` to ``S + (k+1)*B - 1``.

    On the CPU a batch's result can differ in the last bits from the same images made in another
    batch, so an image's pixels depend on which batch it is in. Fixed batches make a request
    give the same bytes however it is split (``accelerate`` splits whole batches), as long as the
    thread count is the same: float sums also round differently across thread counts.
    """
    seeds = request.seeds
    return [seeds[start:start + batch_size] for start in range(0, len(seeds), batch_size)]


def generate(
    pipe, info, request: SamplingRequest, batch_list: list[list[int]] | None = None, batch_size: int = 8,
    on_step: Callable[[int, int], None] | None = None, condition: Callable[[list[int]], dict] | None = None,
) -> list[GeneratedImage]:
    """Generate images for ``request`` (or only the given batches of it) with their provenance.

    The one denoising loop: plain text-to-image pipelines of every family and mask-conditioned
    ControlNet pipelines (``generation.masks.sampling``) all run through it. The checkpoint's
    family decides the scheduler default and the allowed ones, the negative prompt, the size
    (native) and the extra pipeline arguments (``family_arguments``); a prompt a tokenizer cuts is
    logged and noted in the provenance.

    Args:
        pipe: A pipeline from ``generation.pipelines.load_pipeline`` (or a ControlNet pipeline).
        info: The checkpoint ``pipe`` was loaded from (its ``path``, ``step``, family and loading
            details go in the provenance).
        request: Label, prompt and settings.
        batch_list: Which of ``batches(request, batch_size)`` to make; default all.
        batch_size: Images per forward pass.
        on_step: Called with (steps done, steps in all) after every denoising step.
        condition: For a conditioned pipeline: the extra pipeline arguments for a batch of seeds
            (its condition images, height and width).

    Raises:
        UnknownLabel, InvalidSetting: If a setting is out of range or does not fit the family.
    """
    family = family_of(info)
    request = request.for_family(family)
    batch_list = batches(request, batch_size) if batch_list is None else batch_list
    use_scheduler(pipe, request.scheduler)
    notes = "; ".join(family_notes(pipe, family, request))
    if notes:
        logger.warning("%s: %s", Path(info.path).name, notes)
    total, done, results = sum(map(len, batch_list)) * request.steps, 0, []
    for chunk in batch_list:

        def step_end(_pipe, index, _timestep, kwargs, _offset=done, _size=len(chunk)):
            if on_step:
                on_step(min(total, _offset + (index + 1) * _size), total)
            return kwargs

        # 1. What conditions this batch beyond its prompt (a mask image), if anything.
        extra = {**family_arguments(pipe, family, request, step_end, len(chunk)), **(condition(chunk) if condition else {})}
        began = time.perf_counter()
        # 2. Denoise the whole batch in one pipeline call.
        with torch.inference_mode():
            images = _denoise(pipe, family, request, chunk, extra)
        # 3. Record each image's provenance, with its share of the batch's time.
        seconds = (time.perf_counter() - began) / len(chunk)
        done += len(chunk) * request.steps
        results += [GeneratedImage(image, _provenance(info, request, seed, image, seconds, notes))
                    for seed, image in zip(chunk, images)]
    return results


def _denoise(pipe, family: Family, request: SamplingRequest, chunk: list[int], extra: dict) -> list:
    # CPU generators give the same noise on every device: the seed alone fixes the noise.
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in chunk]
    if family.name == "kandinsky22":
        # Its prior stacks the negative prompt onto the batch, so a generator per image does not
        # line up: one call per seed, each with its own generator for prior and decoder.
        extra = {**extra, "negative_prompt": [request.negative_prompt]}
        return [pipe(prompt=[request.prompt], num_inference_steps=request.steps, guidance_scale=request.guidance,
                     generator=generator, output_type="pil", **extra).images[0] for generator in generators]
    return pipe(
        prompt=[request.prompt] * len(chunk),
        num_inference_steps=request.steps,
        guidance_scale=request.guidance,
        generator=generators,
        output_type="pil",
        **extra,
    ).images


def family_of(info) -> Family:
    """The family of a checkpoint (a ControlNet's is its base's; the compact model is SD)."""
    spec = getattr(info, "family_spec", None) or getattr(getattr(info, "base", None), "family_spec", None)
    return spec or FAMILIES["sd"]


def family_arguments(pipe, family: Family, request: SamplingRequest, step_end: Callable, batch: int) -> dict:
    """The pipeline arguments beyond prompt, steps, guidance and noise that ``family`` takes.

    SD gets exactly what it always got (its pipeline's default size is its native one); the other
    families get their native size explicitly, their T5 length, and their progress hook.
    """
    arguments: dict = {"negative_prompt": [request.negative_prompt] * batch} if family.negative_prompt else {}
    if family.legacy_callback:
        arguments.update(callback=lambda index, _t, _latents: step_end(pipe, index, None, {}), callback_steps=1)
    else:
        arguments["callback_on_step_end"] = step_end
    if family.name == "sd":
        return arguments
    width, height = native_size(pipe, family)
    arguments.update(width=width, height=height)
    if family.max_sequence_length:
        arguments["max_sequence_length"] = family.max_sequence_length
    if family.name == "pixart":
        arguments.update(use_resolution_binning=False, clean_caption=False)
    if family.name == "kandinsky22":
        arguments["prior_num_inference_steps"] = request.steps
    return arguments


def family_notes(pipe, family: Family, request: SamplingRequest) -> list[str]:
    """What the user should know about how the family treats this request: a cut prompt, ignored guidance."""
    notes = prompt_cuts(pipe, family, request.prompt)
    if family.negative_prompt and request.negative_prompt:
        notes += [n.replace("prompt cut", "negative prompt cut") for n in prompt_cuts(pipe, family, request.negative_prompt)]
    transformer = getattr(pipe, "transformer", None)
    if family.guidance == "distilled" and transformer is not None and not transformer.config.get("guidance_embeds"):
        notes.append("guidance ignored: this FLUX model has no guidance embedding (a timestep-distilled one, e.g. schnell)")
    if family.name == "kandinsky22":
        notes.append(f"prior: {request.steps} steps, guidance 4")
    return notes


def _provenance(info, request: SamplingRequest, seed: int, image, seconds: float, notes: str = "") -> dict:
    loading = {"family": family_of(info).name, **(getattr(info, "loading", None) or {})}
    return {
        "file": "", "sha256": "", "checkpoint": str(Path(info.path).resolve()), "step": info.step, "label": request.label,
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "seed": seed,
        "scheduler": request.scheduler, "steps": request.steps, "guidance": float(request.guidance),
        "width": image.width, "height": image.height, "seconds": round(seconds, 4),
        "family": loading["family"], "layout": loading.get("layout", "pipeline"),
        "base_fingerprint": loading.get("base_fingerprint", ""), "adapter_fingerprint": loading.get("adapter_fingerprint", ""),
        "adapter_scale": loading.get("adapter_scale", ""), "notes": notes,
    }


def save_images(generated: list[GeneratedImage], out_dir: Path, new_files: list[Path] | None = None) -> list[dict]:
    """Write each image as PNG under ``out_dir``; returns provenance rows with file and sha256.

    The file name holds the label, step, seed and the start of the sha256. Each PNG is written
    atomically (``common.files.write_if_changed``), and the sha256 is of the bytes written, so it
    always matches. A file already there with the same bytes is left as it is (``new_file`` is
    False in its row). Files newly written are appended to ``new_files`` as they are written, so
    a caller can remove them again if a later step fails.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for item in generated:
        data = png_bytes(item.image)
        sha = hashlib.sha256(data).hexdigest()
        row = item.provenance
        path = out_dir / f"{row['label']}-step{row['step']}-seed{row['seed']}-{sha[:12]}.png"
        new_file = write_if_changed(path, data)
        if new_file and new_files is not None:
            new_files.append(path)
        rows.append({**row, "file": path.name, "sha256": sha, "new_file": new_file})
    return rows


def png_bytes(image) -> bytes:
    """The PNG encoding of a PIL image (what ``save_images`` writes and hashes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_provenance(rows: list[dict], path: Path) -> None:
    """Write provenance rows as CSV (merging with rows already in ``path``, keyed by file), atomically."""
    path = Path(path)
    merged = {}
    if path.is_file():
        with path.open(newline="") as handle:
            merged = {row["file"]: row for row in csv.DictReader(handle)}
    merged.update({row["file"]: row for row in rows})
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PROVENANCE_COLUMNS)
        writer.writeheader()
        for row in sorted(merged.values(), key=lambda r: (r["label"], int(r["seed"]), r["file"])):
            writer.writerow({column: row.get(column, "") for column in PROVENANCE_COLUMNS})
