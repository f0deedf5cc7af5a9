"""Generate images from one checkpoint on the command line, with a provenance CSV.

    python -m generation.sample --checkpoint PATH --label {AD,NonAD} --n N --seed S --out DIR

Bulk runs across several GPUs: ``accelerate launch --num_processes K -m generation.sample ...``
splits whole batches of seeds across processes (the same images however many processes run,
byte for byte when the threads per process match); the main process merges one ``provenance.csv``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
from pathlib import Path

from common.device import resolve_device
from common.labels import validate_label
from generation.checkpoints import inspect_checkpoint
from generation.errors import run_cli
from generation.pipelines import load_pipeline
from generation.prompts import load_prompts
from generation.sampling import (
    DEFAULT_SCHEDULER,
    PROVENANCE_COLUMNS,
    SCHEDULERS,
    InvalidSetting,
    SamplingRequest,
    batches,
    generate,
    save_images,
    write_provenance,
)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from common.labels import LABELS

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.sample",
        description=(
            "Generate N images of one pathology from a diffusers checkpoint. Writes PNGs and provenance.csv "
            "(file, sha256, checkpoint, step, label, prompt, negative_prompt, seed, scheduler, steps, guidance, "
            "width, height, seconds) into --out. Image i uses seed S+i. Run under `accelerate launch` to split "
            "the seeds across processes (one merged provenance.csv)."
        ),
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="pipeline folder, or training output checkpoint-<N>/ (with --base)")
    parser.add_argument("--base", type=Path, default=None, help="base pipeline for a training output checkpoint-<N>/")
    parser.add_argument("--label", required=True, help=f"pathology to generate: {' or '.join(LABELS)}")
    parser.add_argument("--n", type=int, default=8, help="number of images (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--prompt", default=None, help="prompt (default: the label's template from assets/prompts.json)")
    parser.add_argument("--negative-prompt", default=None, help="negative prompt (default from assets/prompts.json)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps, 1-200 (default 20)")
    parser.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale, 0-30 (default 3.0)")
    parser.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=list(SCHEDULERS), help=f"sampler (default {DEFAULT_SCHEDULER})")
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default 8)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="ignored under accelerate launch, which assigns devices")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Generate and write the images described by ``args``; returns 0."""
    import torch
    from accelerate import PartialState


    validate_label(args.label)
    if args.batch_size < 1:
        raise InvalidSetting(f"--batch-size must be at least 1, got {args.batch_size}")
    book = load_prompts()
    request = SamplingRequest(
        label=args.label, prompt=args.prompt if args.prompt is not None else book.default_prompt(args.label),
        negative_prompt=args.negative_prompt if args.negative_prompt is not None else book.negative,
        n=args.n, seed=args.seed, steps=args.steps, guidance=args.guidance, scheduler=args.scheduler,
    ).validated()
    info = inspect_checkpoint(args.checkpoint.resolve(), args.base)
    # cpu=True lets accelerate form a gloo process group when there is no GPU (tests, laptops).
    state = PartialState(cpu=args.device == "cpu" or not torch.cuda.is_available())
    device = state.device if state.num_processes > 1 else resolve_device(args.device)
    pipe = load_pipeline(info, device)
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
