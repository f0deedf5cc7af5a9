"""Generate images from one checkpoint on the command line, with a provenance CSV.

    python -m generation.sample --checkpoint PATH --label {AD,NonAD} --n N --seed S --out DIR

Bulk runs across several GPUs: ``accelerate launch --num_processes K -m generation.sample ...``
splits whole batches of seeds across processes (the same images however many processes run,
byte for byte when the threads per process match); the main process merges one ``provenance.csv``.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Only the command line sets this, before torch is imported: OpenMP reads its wait policy when
    # torch loads, and passive waiting makes sampling 3-7x faster on small CPUs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import csv  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402

from common.device import resolve_device  # noqa: E402
from common.labels import LABELS, validate_label  # noqa: E402
from generation.checkpoints import inspect_checkpoint  # noqa: E402
from generation.errors import run_cli  # noqa: E402
from generation.pipelines import load_pipeline  # noqa: E402
from generation.prompts import load_prompts  # noqa: E402
from generation.sampling import (  # noqa: E402
    PROVENANCE_COLUMNS,
    InvalidSetting,
    SamplingRequest,
    add_sampler_arguments,
    batches,
    generate,
    save_images,
    write_provenance,
)
from generation.speed import pick_batch_size  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.sample",
        description=(
            "Generate N images of one pathology from a diffusers checkpoint. Writes PNGs and provenance.csv "
            "(file, sha256, checkpoint, step, label, prompt, negative_prompt, seed, scheduler, steps, guidance, "
            "width, height, seconds, family, layout, base_fingerprint, adapter_fingerprint, adapter_scale, notes) "
            "into --out. Image i uses seed S+i. Run under `accelerate launch` to split the seeds across processes "
            "(one merged provenance.csv). Everything is read from local files; nothing is downloaded."
        ),
    )
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="pipeline folder of any supported family (SD, SDXL, SD3, FLUX, PixArt, Kandinsky 2.2), training "
                             "output checkpoint-<N>/ holding unet/ or unet_ema/ (with --base), LoRA folder holding "
                             "pytorch_lora_weights.safetensors (with --base unless its metadata names a local base), or "
                             "a single .safetensors/.ckpt file (with --config)")
    parser.add_argument("--base", type=Path, default=None, help="base pipeline folder for a training output or a LoRA")
    parser.add_argument("--config", type=Path, default=None,
                        help="for a single file: a local diffusers pipeline folder of its family (configs and tokenizers)")
    parser.add_argument("--lora-scale", type=float, default=1.0, help="scale a LoRA is fused with, 0-2 (default 1)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser (GPU; slow first batch)")
    parser.add_argument("--label", required=True, help=f"pathology to generate: {' or '.join(LABELS)}")
    parser.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    add_sampler_arguments(parser, family_defaults=True)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="ignored under accelerate launch, which assigns devices")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Generate and write the images described by ``args``; returns 0."""
    validate_label(args.label)
    if args.batch_size is not None and args.batch_size < 1:
        raise InvalidSetting(f"--batch-size must be at least 1, got {args.batch_size}")
    info = inspect_checkpoint(args.checkpoint.resolve(), args.base, args.config, args.lora_scale)
    family = info.family_spec
    logger.info("checkpoint %s: %s", info.path, info.label)
    book = load_prompts()
    negative = args.negative_prompt if args.negative_prompt is not None else (book.negative if family.negative_prompt else "")
    request = SamplingRequest(
        label=args.label, prompt=args.prompt if args.prompt is not None else book.default_prompt(args.label),
        negative_prompt=negative, n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance,
        scheduler=args.scheduler,
    ).for_family(family)
    # cpu=True lets accelerate form a gloo process group when there is no GPU (tests, laptops).
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    device = state.device if state.num_processes > 1 else resolve_device(args.device)
    pipe = load_pipeline(info, device, compile_denoiser=args.compile)
    args.batch_size = pick_batch_size(pipe, family, device, args.batch_size)
    if state.is_main_process:
        for stale in args.out.glob(".provenance.part-*.csv"):  # left by a run that crashed
            stale.unlink()
    state.wait_for_everyone()
    # Whole batches go to each process, so the bytes do not depend on the number of processes
    # (given the same threads per process).
    with state.split_between_processes(batches(request, args.batch_size)) as my_batches:
        logger.info("process %d/%d: %d images on %s", state.process_index + 1, state.num_processes, sum(map(len, my_batches)), device)
        generated = generate(pipe, info, request, batch_list=my_batches, batch_size=args.batch_size)
        rows = save_images(generated, args.out)
        _write_part(rows, args.out / f".provenance.part-{state.process_index}.csv")
    state.wait_for_everyone()
    if state.is_main_process:
        parts = sorted(args.out.glob(".provenance.part-*.csv"))
        write_provenance([row for p in parts for row in _read_part(p)], args.out / "provenance.csv")
        for p in parts:
            p.unlink()
        logger.info("wrote %d images and %s", request.n, args.out / "provenance.csv")
    return 0


def _write_part(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PROVENANCE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _read_part(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def cli(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, run, report user errors as ``error: ...`` with exit status 2."""
    return run_cli(parse_args, main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
