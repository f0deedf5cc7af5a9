"""Generation speed, printed as a Markdown report.

    python benchmarks/generation.py [--checkpoint PATH] [--repeats 3] [--device auto|cpu|cuda] [--skip-gpu]

Part 1 times the demo checkpoint on this device: our sampling path (``generation.sampling.generate``)
with two samplers at batch 1 and 8, against diffusers' default pipeline call on the same loaded
pipeline (its scheduler as saved), plus the end-to-end time of 8 images with default settings.

Part 2, on a CUDA machine only, times a Stable-Diffusion-1.5-sized UNet (random weights) at 512 px:
a plain denoising loop in fp32 and fp16 against a ``StableDiffusionPipeline`` default call assembled
offline from configs (SD-1.5 VAE, a one-layer CLIP text encoder, no downloads).

Each configuration is run once untimed (warm-up), then ``--repeats`` times; rows show the median.
"""

from __future__ import annotations

import os

from common.device import resolve_device
from common.labels import LABELS
from generation.checkpoints import CheckpointNotFound, NotACheckpoint, discover_checkpoints, inspect_checkpoint
from generation.pipelines import load_pipeline
from generation.prompts import load_prompts
from generation.sampling import DEFAULT_SCHEDULER, SCHEDULERS, SamplingRequest, generate

# torch's OpenMP spin-waiting makes CPU work several times slower on small machines (STACK-NOTES).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import logging
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
# `python benchmarks/generation.py` puts benchmarks/ first on sys.path, where this file would shadow
# the `generation` package; the repository root takes its place.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)

import torch

logger = logging.getLogger("benchmarks.generation")

DEMO_DIR = REPO / "assets" / "demo"
STEPS = 20
GUIDANCE = 3.0
SAMPLERS = ("dpm++", "euler")
CPU_BATCHES = (1, 8)
GPU_BATCHES = (1, 4, 8)
PROMISED_SECONDS = 10.0
"""The project's promise for 8 images with default settings on a 2-core CPU."""

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
"""Stable Diffusion 1.5's UNet config (860 M parameters; 64x64x4 latents for 512 px images)."""
SD15_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
    "sample_size": 512,
}
"""Stable Diffusion 1.5's VAE config."""
SD15_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1,
}
"""Stable Diffusion 1.5's saved scheduler (PNDM) config."""
TEXT_TOKENS = 77


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
        "device, our sampling path against diffusers' default pipeline call. Part 2 (CUDA only): a "
        "Stable-Diffusion-1.5-sized UNet at 512 px, fp32 and fp16, against a StableDiffusionPipeline call.",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None,
        help=f"checkpoint folder to time in part 1 (default: the highest-step checkpoint under {DEMO_DIR.relative_to(REPO)}/)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per configuration after one warm-up; the median is reported (default 3)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="device for part 1 (default cpu: the demo promise is about the CPU; auto picks cuda when present)")
    parser.add_argument("--skip-gpu", action="store_true", help="skip part 2 (the SD-1.5-sized UNet) even when a GPU is present")
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
        print(f"error: {err}", file=sys.stderr)
        return 2

    out = [*_machine_header(device, args.repeats), ""]
    out += _demo_section(info, device, args.repeats)
    out.append("")
    if args.skip_gpu:
        out.append("## Part 2: Stable-Diffusion-1.5-sized UNet at 512 px\n\nSkipped: --skip-gpu was given.")
    elif not torch.cuda.is_available():
        out.append("## Part 2: Stable-Diffusion-1.5-sized UNet at 512 px\n\nSkipped: no GPU is present (CUDA is not available).")
    else:
        out += _sd_section(torch.device("cuda"), args.repeats)
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

    cpu = _cpu_model()
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


def _cpu_model() -> str:
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


# ---------------------------------------------------------------------------------------------
# Part 2: a Stable-Diffusion-1.5-sized UNet on the GPU


def _sd_section(device: torch.device, repeats: int, unet_config: dict = SD15_UNET, vae_config: dict = SD15_VAE,
                batches: tuple[int, ...] = GPU_BATCHES) -> list[str]:
    """Time the SD-1.5 UNet loop (fp32, fp16) against a StableDiffusionPipeline default call.

    The configs are arguments so that a smoke test can run the same code with tiny ones.
    """
    from diffusers import DPMSolverMultistepScheduler

    pipe = _random_sd_pipeline(device, unet_config, vae_config)
    latent_size = unet_config["sample_size"]
    text_dim = unet_config["cross_attention_dim"]
    image_px = latent_size * 2 ** (len(vae_config["block_out_channels"]) - 1)
    params = sum(p.numel() for p in pipe.unet.parameters()) / 1e6
    prompt = "colonoscopy image of an adenomatous polyp"
    loop_scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)

    def pipeline_call(batch: int, output_type: str):
        return lambda: pipe(
            prompt=[prompt] * batch, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
            generator=torch.Generator("cpu").manual_seed(0), output_type=output_type,
        )

    def loop_call(batch: int, dtype: torch.dtype):
        generator = torch.Generator("cpu").manual_seed(0)
        latents = torch.randn((batch, 4, latent_size, latent_size), generator=generator).to(device, dtype)
        embeddings = torch.randn((2 * batch, TEXT_TOKENS, text_dim), generator=generator).to(device, dtype)
        return lambda: denoise(pipe.unet, loop_scheduler, latents, embeddings)

    # fp32 first, then the same modules cast to fp16 (one copy of the 860 M weights in memory).
    timings: dict[tuple[str, str, int], float] = {}
    for dtype in (torch.float32, torch.float16):
        _cast(pipe, device, dtype)
        bits = "fp32" if dtype == torch.float32 else "fp16"
        for batch in batches:
            timings["pipe", bits, batch] = median_seconds(pipeline_call(batch, "pil"), repeats, device)
            if dtype == torch.float32:
                timings["pipe-latent", bits, batch] = median_seconds(pipeline_call(batch, "latent"), repeats, device)
            timings["loop", bits, batch] = median_seconds(loop_call(batch, dtype), repeats, device)
            logger.info("SD-1.5 UNet %s batch %d: %s", bits, batch,
                        {k[0]: round(v, 3) for k, v in timings.items() if k[1:] == (bits, batch)})

    pipe_name = type(pipe.scheduler).__name__
    loop_name = type(loop_scheduler).__name__
    rows = []
    for batch in batches:
        baseline = Row("StableDiffusionPipeline default call, fp32", pipe_name, batch, timings["pipe", "fp32", batch],
                       note=f"text encoder + UNet loop + VAE decode to {image_px} px PIL")
        ips = baseline.images_per_second
        rows += [
            baseline,
            Row("StableDiffusionPipeline, fp32, `output_type=\"latent\"`", pipe_name, batch, timings["pipe-latent", "fp32", batch], ips,
                "the denoising loop through the pipeline, no VAE decode"),
            Row("UNet loop alone, fp32, inference mode", loop_name, batch, timings["loop", "fp32", batch], ips),
            Row("UNet loop alone, fp16, inference mode", loop_name, batch, timings["loop", "fp16", batch], ips),
            Row("StableDiffusionPipeline default call, fp16", pipe_name, batch, timings["pipe", "fp16", batch], ips,
                f"same pipeline cast to fp16; the fp16 UNet loop alone is "
                f"{timings['pipe', 'fp16', batch] / timings['loop', 'fp16', batch]:.2f}x its speed"),
        ]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return [
        f"## Part 2: Stable-Diffusion-1.5-sized UNet at {image_px} px on {gpu}",
        "",
        f"- UNet: `UNet2DConditionModel` with SD-1.5's config ({params:.0f} M parameters), random weights "
        "(speed does not depend on their values); latents "
        f"4x{latent_size}x{latent_size}, {STEPS} steps, classifier-free guidance doubling the batch, guidance {GUIDANCE}.",
        f"- UNet loop alone: random text embeddings {TEXT_TOKENS}x{text_dim}, `torch.inference_mode()`, {loop_name}; "
        "no text encoder and no VAE decode.",
        f"- Baseline: a `StableDiffusionPipeline` assembled offline with random weights: the same UNet, SD-1.5's VAE config, "
        f"a one-layer CLIP text encoder (hidden size {text_dim}, {TEXT_TOKENS} tokens) and SD-1.5's saved scheduler "
        f"({pipe_name}); called as `pipe(prompt=[p] * batch, num_inference_steps={STEPS}, guidance_scale={GUIDANCE}, "
        "generator=...)`, progress bar off. `vs baseline` divides images/s by the fp32 default call at the same batch.",
        "",
        *_table(rows),
    ]


@torch.inference_mode()
def denoise(unet, scheduler, latents: torch.Tensor, embeddings: torch.Tensor,
            steps: int = STEPS, guidance: float = GUIDANCE) -> torch.Tensor:
    """The plain classifier-free-guided denoising loop; ``embeddings`` holds unconditional then conditional rows."""
    # 1. Set the timesteps and scale the initial noise
    scheduler.set_timesteps(steps, device=latents.device)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        # 2. Predict the noise for the unconditional and conditional halves in one batch
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2), t)
        noise = unet(model_input, t, encoder_hidden_states=embeddings).sample
        # 3. Guide: move from the unconditional prediction towards the conditional one
        uncond, cond = noise.chunk(2)
        noise = uncond + guidance * (cond - uncond)
        # 4. One scheduler step to the previous, less noisy latents
        latents = scheduler.step(noise, t, latents).prev_sample
    return latents


def _cast(pipe, device: torch.device, dtype: torch.dtype) -> None:
    """Cast every module of ``pipe``, without diffusers' warning that casting is better done at load time."""
    from diffusers.utils import logging as diffusers_logging

    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        pipe.to(device=device, dtype=dtype, silence_dtype_warnings=True)
    finally:
        diffusers_logging.set_verbosity(verbosity)


def _random_sd_pipeline(device: torch.device, unet_config: dict, vae_config: dict):
    """A StableDiffusionPipeline with random weights built from configs: no downloads."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    text_dim = unet_config["cross_attention_dim"]
    # A character-level CLIP vocabulary: the tokenizer needs files, and prompt text hardly matters here.
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789-,.")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [f"{c}</w>" for c in letters]
    with tempfile.TemporaryDirectory() as vocab_dir:
        vocab, merges = Path(vocab_dir) / "vocab.json", Path(vocab_dir) / "merges.txt"
        vocab.write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
        merges.write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=TEXT_TOKENS)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokens), hidden_size=text_dim, intermediate_size=4 * text_dim, num_hidden_layers=1,
        num_attention_heads=max(1, text_dim // 64), max_position_embeddings=TEXT_TOKENS,
        bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    # Initialising 860 M parameters on the GPU takes seconds; on the CPU, most of a minute.
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


if __name__ == "__main__":
    raise SystemExit(main())
