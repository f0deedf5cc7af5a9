"""Generation speed, printed as a Markdown report.

    python benchmarks/generation.py [--checkpoint PATH] [--repeats 3] [--device auto|cpu|cuda] [--skip-gpu]

Part 1 times the demo checkpoint on this device: our sampling path (``generation.sampling.generate``)
with two samplers at batch 1 and 8, against diffusers' default pipeline call on the same loaded
pipeline (its scheduler as saved), plus the end-to-end time of 8 images with default settings.

Part 2, on a CUDA machine only, times SD-1.5-, SDXL- and FLUX-sized pipelines (random weights at
the real configs, built offline in ``benchmarks/generation_models.py``) at their native resolution:
our path (``generate`` after ``speed_up``, batch from free memory) against the family's plain
pipeline call on the same weights, in images/s and as a share of the GPU's measured bf16 peak.

Each configuration is run once untimed (warm-up), then ``--repeats`` times; rows show the median.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Only the command line sets these, before torch is imported: OpenMP reads its wait policy when
    # torch loads, and spin-waiting makes CPU work several times slower on small machines (STACK-NOTES).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
# `python benchmarks/generation.py` puts benchmarks/ first on sys.path, where this file would shadow
# the `generation` package; the repository root takes its place (before the project imports below).
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from common.cli import refuse  # noqa: E402
from common.device import resolve_device  # noqa: E402
from common.labels import LABELS  # noqa: E402
from generation.checkpoints import (  # noqa: E402
    CheckpointInfo,
    CheckpointNotFound,
    NotACheckpoint,
    discover_checkpoints,
    inspect_checkpoint,
)
from generation.families import FAMILIES  # noqa: E402
from generation.pipelines import family_dtype, load_pipeline  # noqa: E402
from generation.prompts import load_prompts  # noqa: E402
from generation.sampling import DEFAULT_SCHEDULER, SCHEDULERS, SamplingRequest, generate  # noqa: E402
from generation.speed import pick_batch_size, speed_up  # noqa: E402

logger = logging.getLogger("benchmarks.generation")

DEMO_DIR = REPO / "assets" / "demo"
STEPS = 20
GUIDANCE = 3.0
SAMPLERS = ("dpm++", "euler")
CPU_BATCHES = (1, 8)
PROMISED_SECONDS = 5.0
"""The project's promise for 8 images with default settings on a 2-core CPU (issue 15: at most 5 s)."""

PART2_TITLE = "## Part 2: SD-1.5-, SDXL- and FLUX-sized random models on the GPU"


@dataclass(frozen=True)
class Row:
    """One timed configuration."""

    what: str
    scheduler: str
    batch: int
    seconds: float
    baseline: float | None = None
    """Images per second of the row this one is compared with (None for a baseline row)."""
    note: str = ""

    @property
    def images_per_second(self) -> float:
        return self.batch / self.seconds

    @property
    def ratio(self) -> str:
        return "1.00 (baseline)" if self.baseline is None else f"{self.images_per_second / self.baseline:.2f}x"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/generation.py",
        description="Benchmark image generation and print a Markdown report. Part 1: the demo checkpoint on this "
        "device, our sampling path against diffusers' default pipeline call. Part 2 (CUDA only): SD-1.5-, SDXL- and "
        "FLUX-sized random models at native resolution, ours against each family's plain pipeline call.",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help=f"checkpoint folder to time in part 1 (default: the highest-step checkpoint under {DEMO_DIR.relative_to(REPO)}/)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration after one warm-up; the median is reported (default 3)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="device for part 1 (default cpu: the demo promise is about the CPU; auto picks cuda when present)")
    parser.add_argument("--skip-gpu", action="store_true", help="skip part 2 (SD-1.5-, SDXL- and FLUX-sized models) even when a GPU is present")
    parser.add_argument("--gpu-steps", type=int, default=GPU_STEPS, help=f"denoising steps in part 2 (default {GPU_STEPS})")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    try:
        device = resolve_device(args.device)
        info = _checkpoint(args.checkpoint)
    except (ValueError, CheckpointNotFound, NotACheckpoint) as err:
        return refuse(str(err))

    out = [*_machine_header(device, args.repeats), ""]
    out += _demo_section(info, device, args.repeats)
    out.append("")
    if args.skip_gpu:
        out.append(f"{PART2_TITLE}\n\nSkipped: --skip-gpu was given.")
    elif not torch.cuda.is_available():
        out.append(f"{PART2_TITLE}\n\nSkipped: no GPU is present (CUDA is not available).")
    else:
        out += _gpu_section(torch.device("cuda"), args.repeats, steps=args.gpu_steps)
    print("\n".join(out))
    return 0


def _checkpoint(path: Path | None):
    """The checkpoint to time: ``path``, else the highest-step one under assets/demo/."""
    if path is not None:
        return inspect_checkpoint(path)
    try:
        return discover_checkpoints(DEMO_DIR)[-1]
    except (CheckpointNotFound, ValueError) as err:
        raise CheckpointNotFound(
            f"no demo checkpoint under {DEMO_DIR} ({err}); create them with `make demo-assets` "
            "(about 40 minutes on a 2-core CPU) or pass --checkpoint PATH"
        ) from err


# ---------------------------------------------------------------------------------------------
# Timing and formatting


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(call: Callable[[], object], repeats: int, device: torch.device, warm_up: bool = True) -> float:
    """Median wall-clock seconds of ``repeats`` calls, after one untimed warm-up call."""
    if warm_up:
        call()
    times = []
    for _ in range(repeats):
        _synchronize(device)
        began = time.perf_counter()
        call()
        _synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def _machine_header(device: torch.device, repeats: int) -> list[str]:
    import diffusers

    cpu = cpu_model()
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    gpu = "none"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
    return [
        "# Generation benchmark",
        "",
        f"- Machine: {cpu}; {usable} usable cores of {cores}; torch threads {torch.get_num_threads()}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}",
        f"- GPU: {gpu}",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}",
        f"- Date (UTC): {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S')}",
        f"- Command: `{shlex.join(getattr(sys, 'orig_argv', [sys.executable, *sys.argv]))}`",
        f"- Method: one untimed warm-up per configuration, then the median of {repeats} timed run(s); "
        f"{STEPS} steps, guidance {GUIDANCE}; part 1 runs on {device.type}.",
    ]


def cpu_model() -> str:
    try:
        fields = dict(
            (key.strip().lower(), value.strip())
            for key, _, value in (line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines())
            if value
        )
    except OSError:
        fields = {}
    if "model name" not in fields:
        return platform.processor() or platform.machine() or "unknown CPU"
    # Virtual machines often show a bare "AMD EPYC"; family and model tell the generation apart.
    return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"


def _table(rows: list[Row]) -> list[str]:
    lines = [
        "| configuration | scheduler | batch | median s / call | images / s | vs baseline | note |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.what} | {row.scheduler} | {row.batch} | {row.seconds:.3f} | {row.images_per_second:.2f} | "
            f"{row.ratio} | {row.note} |"
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Part 1: the demo checkpoint


def _demo_section(info, device: torch.device, repeats: int) -> list[str]:
    label = LABELS[0]
    prompt = load_prompts().default_prompt(label)
    began = time.perf_counter()
    pipe = load_pipeline(info, device)
    load_seconds = time.perf_counter() - began
    saved_scheduler = pipe.scheduler  # generate() swaps it; the baseline runs with the one saved
    saved_name = type(saved_scheduler).__name__
    logger.info("loaded %s on %s in %.1f s; saved scheduler %s", info.path, device, load_seconds, saved_name)

    # 1. End to end: 8 images, every setting at its default. The first call of the process is its warm-up.
    default_request = SamplingRequest(label=label, prompt=prompt)
    began = time.perf_counter()
    generate(pipe, info, default_request)
    cold = time.perf_counter() - began
    end_to_end = median_seconds(lambda: generate(pipe, info, default_request), repeats, device, warm_up=False)
    logger.info("8 images end to end: %.2f s (first call %.2f s)", end_to_end, cold)

    # 2. Per batch size: diffusers' default call on the saved scheduler, then our path per sampler.
    rows, baselines = _batch_rows(pipe, info, saved_scheduler, label, prompt, repeats, device)

    verdict = ""
    if device.type == "cpu":
        verdict = (
            f"promise for the demo checkpoint: at most {PROMISED_SECONDS:.0f} s on a 2-core CPU: "
            f"{'met' if end_to_end <= PROMISED_SECONDS else 'NOT met'} here"
        )
    rows.append(Row(
        "8 images, default sampler, end-to-end seconds", SCHEDULERS[DEFAULT_SCHEDULER], 8, end_to_end,
        baselines[8],
        f"first call of the process (cold) {cold:.2f} s; {verdict}".rstrip("; "),
    ))
    size = info.metadata.get("image_size", "?")
    return [
        f"## Part 1: checkpoint {info.name} (step {info.step}) on {device.type}",
        "",
        f"- Checkpoint: `{info.path}`, {size} px images, loaded with `load_pipeline` in {load_seconds:.2f} s "
        f"as {next(pipe.unet.parameters()).dtype}",
        f"- Prompt: the default prompt of label {label}: \"{prompt}\"",
        f"- Baseline: the same loaded pipeline called directly, `pipe(prompt=[p] * batch, num_inference_steps={STEPS}, "
        f"guidance_scale={GUIDANCE}, generator=torch.Generator(\"cpu\").manual_seed(0))`, with the scheduler saved in the "
        f"checkpoint ({saved_name}) and the progress bar off. Ours: `generate(pipe, info, SamplingRequest(...), "
        "batch_size=batch)` (inference mode, the named sampler, one CPU generator per image, negative prompt \"\").",
        "- Both produce PIL images; both run classifier-free guidance (2 x batch UNet inputs per step).",
        "",
        *_table(rows),
    ]


def _batch_rows(pipe, info, saved_scheduler, label: str, prompt: str, repeats: int,
                device: torch.device) -> tuple[list[Row], dict[int, float]]:
    """Rows per batch size: diffusers' default call on the saved scheduler, then ``generate`` per sampler."""
    saved_name = type(saved_scheduler).__name__
    rows, baselines = [], {}
    for batch in CPU_BATCHES:
        def baseline_call(batch=batch):
            pipe.scheduler = saved_scheduler
            return pipe(
                prompt=[prompt] * batch, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                generator=torch.Generator("cpu").manual_seed(0),
            ).images

        pipe.set_progress_bar_config(disable=True)
        seconds = median_seconds(baseline_call, repeats, device)
        baseline = Row("diffusers default `pipe(...)` call", f"{saved_name} (as saved)", batch, seconds)
        rows.append(baseline)
        baselines[batch] = baseline.images_per_second
        logger.info("baseline batch %d: %.2f s", batch, seconds)
        for sampler in SAMPLERS:
            request = SamplingRequest(label=label, prompt=prompt, n=batch, seed=0, steps=STEPS, guidance=GUIDANCE, scheduler=sampler)
            seconds = median_seconds(lambda request=request, batch=batch: generate(pipe, info, request, batch_size=batch), repeats, device)
            rows.append(Row(f"ours: `generate` ({sampler})", SCHEDULERS[sampler], batch, seconds, baselines[batch]))
            logger.info("%s batch %d: %.2f s", sampler, batch, seconds)
    return rows, baselines


# ---------------------------------------------------------------------------------------------
# Part 2: SD-1.5-, SDXL- and FLUX-sized random models on the GPU

GPU_STEPS = 20
PROMPT = "colonoscopy image of an adenomatous polyp"


def _gpu_section(device: torch.device, repeats: int, families: dict | None = None, steps: int = GPU_STEPS,
                 batch: int | None = None) -> list[str]:
    """Per family: our path (``generate`` after ``speed_up``, batch from free memory) against the
    family's plain pipeline call, in images/s, and the share of the GPU's measured bf16 matmul peak.

    ``families`` maps a name to a builder of a random pipeline (default: the full-size configs);
    a smoke test passes tiny ones (and a ``batch``, instead of the one picked from free memory) and
    runs the same code on the CPU.
    """
    from benchmarks.generation_models import FULL_SIZE  # part 2 only: the full-size configs are not needed for part 1

    peak = bf16_peak_flops(device)
    rows, notes = [], []
    for name, build in (families or FULL_SIZE).items():
        family_rows, note = _family_rows(name, build, device, repeats, steps, peak, batch)
        rows += family_rows
        notes.append(note)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    header = ["## Part 2: SD-1.5-, SDXL- and FLUX-sized random models at their native resolution on " + gpu, "",
              f"- Random weights at the real configs (speed does not depend on their values), built in memory at the "
              f"family's dtype (`family_dtype`); {steps} steps, guidance {GUIDANCE}, the family's default scheduler.",
              "- Baseline: the family's plain pipeline call on the same weights at the family's dtype "
              "(`pipe(prompt=[p] * batch, num_inference_steps=..., guidance_scale=...)`, no other settings).",
              "- Ours: `generation.sampling.generate` after `generation.speed.speed_up` (SDPA, channels-last UNet, "
              "VAE slicing/tiling) at the batch `pick_batch_size` takes from free memory.",
              f"- Peak: a bf16 8192x8192 matmul loop measured on this GPU, {peak / 1e12:.0f} TFLOP/s; the share counts the "
              "denoiser and text encoders' FLOPs (torch's FlopCounterMode on one step) over the measured time.",
              *notes, ""]
    return header + _table(rows)


def _family_rows(name: str, build: Callable, device: torch.device, repeats: int, steps: int,
                 peak: float, batch: int | None) -> tuple[list[Row], str]:
    family = FAMILIES[name]
    pipe = build(device, family_dtype(device, family))
    pipe.set_progress_bar_config(disable=True)
    info = CheckpointInfo(Path(f"random-{name}"), f"random-{name}", 0, None, "pipeline", "random", family=name)
    batch = pick_batch_size(pipe, family, device, batch)
    request = SamplingRequest(label="AD", prompt=PROMPT, n=batch, steps=steps, guidance=GUIDANCE, scheduler=None)
    extra = {"max_sequence_length": family.max_sequence_length} if family.max_sequence_length else {}

    def plain(size: int):
        return lambda: pipe(prompt=[PROMPT] * size, num_inference_steps=steps, guidance_scale=GUIDANCE, **extra)

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        pipe(prompt=[PROMPT], num_inference_steps=1, guidance_scale=GUIDANCE, output_type="latent", **extra)
    flops_per_image = counter.get_total_flops() * steps
    plain_one = median_seconds(plain(1), repeats, device)
    try:
        plain_batch, plain_note = median_seconds(plain(batch), repeats, device), ""
    except torch.cuda.OutOfMemoryError:  # without VAE slicing a large batch's decode may not fit
        plain_batch, plain_note = float("inf"), "out of GPU memory; "
        torch.cuda.empty_cache()
    speed_up(pipe, family, device)  # what load_pipeline does on cuda; the plain calls above ran without it
    ours = median_seconds(lambda: generate(pipe, info, request, batch_size=batch), repeats, device)
    share = lambda seconds, size: f"{100 * flops_per_image * size / seconds / peak:.0f} % of bf16 peak"  # noqa: E731
    base = Row(f"{family.title}: plain pipeline call", type(pipe.scheduler).__name__, 1, plain_one, note=share(plain_one, 1))
    same_batch = Row(f"{family.title}: plain pipeline call", type(pipe.scheduler).__name__, batch, plain_batch,
                     base.images_per_second, plain_note + share(plain_batch, batch))
    ours_row = Row(f"{family.title}: ours (`generate`)", request.for_family(family).scheduler, batch, ours,
                   same_batch.images_per_second if plain_batch != float("inf") else base.images_per_second,
                   "vs the plain call at the same batch; " + share(ours, batch))
    rows = [base, same_batch, ours_row]
    params = sum(p.numel() for p in getattr(pipe, family.denoiser).parameters()) / 1e9
    note = (f"- {family.title}: {params:.2f} B-parameter {family.denoiser}, {str(pipe.dtype).removeprefix('torch.')}, "
            f"{flops_per_image / 1e12:.1f} TFLOP per image.")
    return rows, note


def bf16_peak_flops(device: torch.device, n: int = 8192, repeats: int = 20) -> float:
    """Measured bf16 matmul FLOP/s on ``device`` (fp32 and a small n on the CPU, for smoke tests)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n if device.type == "cuda" else 256
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    seconds = median_seconds(lambda: [a @ b for _ in range(repeats)], 3, device)
    return 2 * n**3 * repeats / seconds


if __name__ == "__main__":
    raise SystemExit(main())
