"""Sampling images from a loaded pipeline, with every setting recorded as provenance."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from common.labels import validate_label
from generation.checkpoints import CheckpointInfo

logger = logging.getLogger(__name__)

SCHEDULERS: dict[str, str] = {
    "dpm++": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "ddim": "DDIMScheduler",
}
"""Sampler names offered to users, mapped to diffusers scheduler classes."""
DEFAULT_SCHEDULER = "dpm++"
STEPS_RANGE = (1, 200)
GUIDANCE_RANGE = (0.0, 30.0)
MAX_SEED = 2**32 - 1
MAX_IMAGES = 10_000
PROVENANCE_COLUMNS = (
    "file", "sha256", "checkpoint", "step", "label", "prompt", "negative_prompt", "seed", "scheduler",
    "steps", "guidance", "width", "height", "seconds",
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
    scheduler: str = DEFAULT_SCHEDULER
    negative_prompt: str = ""

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
        if self.scheduler not in SCHEDULERS:
            raise InvalidSetting(f"scheduler {self.scheduler!r} is not supported; choose one of {', '.join(SCHEDULERS)}")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InvalidSetting("prompt is empty; describe the image to generate (the Generate tab pre-fills a template)")
        return replace(self, n=int(self.n), seed=int(self.seed), steps=int(self.steps), guidance=float(self.guidance),
                       negative_prompt=self.negative_prompt or "")

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
    pipe, info: CheckpointInfo, request: SamplingRequest, batch_list: list[list[int]] | None = None,
    batch_size: int = 8, on_step: Callable[[int, int], None] | None = None,
) -> list[GeneratedImage]:
    """Generate images for ``request`` (or only the given batches of it) with their provenance.

    Args:
        pipe: A pipeline from ``generation.pipelines.load_pipeline``.
        info: The checkpoint ``pipe`` was loaded from (recorded in the provenance).
        request: Label, prompt and settings.
        batch_list: Which of ``batches(request, batch_size)`` to make; default all.
        batch_size: Images per forward pass.
        on_step: Called with (steps done, steps in all) after every denoising step.

    Raises:
        UnknownLabel, InvalidSetting: If a setting is out of range.
    """
    request = request.validated()
    batch_list = batches(request, batch_size) if batch_list is None else batch_list
    use_scheduler(pipe, request.scheduler)
    total, done, results = sum(map(len, batch_list)) * request.steps, 0, []
    for chunk in batch_list:

        def step_end(_pipe, index, _timestep, kwargs, _offset=done, _size=len(chunk)):
            if on_step:
                on_step(min(total, _offset + (index + 1) * _size), total)
            return kwargs

        began = time.perf_counter()
        with torch.inference_mode():
            images = pipe(
                prompt=[request.prompt] * len(chunk),
                negative_prompt=[request.negative_prompt] * len(chunk),
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                # CPU generators give the same noise on every device: the seed alone fixes the noise.
                generator=[torch.Generator("cpu").manual_seed(seed) for seed in chunk],
                output_type="pil",
                callback_on_step_end=step_end,
            ).images
        seconds = (time.perf_counter() - began) / len(chunk)
        done += len(chunk) * request.steps
        results += [GeneratedImage(image, _provenance(info, request, seed, image, seconds)) for seed, image in zip(chunk, images)]
    return results


def _provenance(info: CheckpointInfo, request: SamplingRequest, seed: int, image, seconds: float) -> dict:
    return {
        "file": "", "sha256": "", "checkpoint": str(Path(info.path).resolve()), "step": info.step, "label": request.label,
        "prompt": request.prompt, "negative_prompt": request.negative_prompt, "seed": seed,
        "scheduler": request.scheduler, "steps": request.steps, "guidance": float(request.guidance),
        "width": image.width, "height": image.height, "seconds": round(seconds, 4),
    }


def save_images(generated: list[GeneratedImage], out_dir: Path, written: list[dict] | None = None) -> list[dict]:
    """Write each image as PNG under ``out_dir``; returns provenance rows with file and sha256.

    The file name holds the label, step, seed and the start of the sha256. Each PNG is written to
    a temporary name and renamed, and the sha256 is of the bytes written, so it always matches.
    A file already there with the same bytes is left as it is (``new_file`` is False in its row).
    Rows are appended to ``written`` (returned) as files are written, so a caller can remove
    them again if a later file fails.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [] if written is None else written
    for item in generated:
        buffer = io.BytesIO()
        item.image.save(buffer, format="PNG")
        data = buffer.getvalue()
        sha = hashlib.sha256(data).hexdigest()
        row = item.provenance
        path = out_dir / f"{row['label']}-step{row['step']}-seed{row['seed']}-{sha[:12]}.png"
        new_file = write_if_changed(path, data)
        rows.append({**row, "file": path.name, "sha256": sha, "new_file": new_file})
    return rows


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` through a temporary name and a rename (never a half-written file),
    unless the file already holds exactly these bytes. Returns whether it was written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def write_provenance(rows: list[dict], path: Path) -> None:
    """Write provenance rows as CSV (merging with rows already in ``path``, keyed by file), atomically."""
    path = Path(path)
    merged = {}
    if path.is_file():
        with path.open(newline="") as handle:
            merged = {row["file"]: row for row in csv.DictReader(handle)}
    merged.update({row["file"]: row for row in rows})
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PROVENANCE_COLUMNS)
        writer.writeheader()
        for row in sorted(merged.values(), key=lambda r: (r["label"], int(r["seed"]), r["file"])):
            writer.writerow({column: row[column] for column in PROVENANCE_COLUMNS})
    os.replace(tmp, path)
