"""Downstream segmentation speed at the demo size: one U-Net training run per regime and real-set size, printed as Markdown.

    .venv/bin/python benchmarks/segmentation.py [--steps 300] [--size 64] [--device cpu] [--n-real 120]

Runs ``evaluation.segmentation.experiment.downstream_segmentation`` once (one repeat) on phantom image/mask
pairs and reports, per run, the training seconds, the evaluation seconds (prediction on the held-out
real test images plus the Dice and IoU bootstrap CIs) and Dice/IoU. Ratios are to the baseline
measured in the same run: real-only at the smallest size (n = 16). Every run takes the same number of
optimiser steps, so the ratios show the cost of the data pipeline and batch composition, not of
more steps.

Data: "real" pairs are phantom frames (``generation.phantom.render_phantom``, exact masks) from set
seed 0; the "synthetic" pairs are phantoms from set seed 1, a stand-in for the output of a
mask-conditioned generator (none is trained yet), so the Dice figures say nothing about synthetic
data quality: only the times are the point. Rendering is not timed; validation and resizing are.
"""

from __future__ import annotations

import os

# torch's OpenMP spin-waiting makes CPU work several times slower on small machines (STACK-NOTES).
if __name__ == "__main__":  # the script only, before torch loads; importing it changes nothing
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import platform
import shlex
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)  # benchmarks/ first on sys.path would not find the project's packages

import numpy as np
import torch

from common.device import resolve_device
from evaluation.segmentation.data import SegmentationSet
from evaluation.segmentation.experiment import downstream_segmentation
from evaluation.segmentation.model import UNet, parameter_count, train_unet
from evaluation.segmentation.settings import SegmentationSettings
from generation.phantom.frames import LABELS, image_seed, render_phantom

SIZES = (16, 32, 64, "all")


def phantom_pairs(n: int, set_seed: int, side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """n phantom (image, mask) pairs at side x side, labels alternating."""
    pairs = []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        phantom = render_phantom(label, image_seed(set_seed, label, i), (side, side))
        pairs.append((np.asarray(phantom.image), phantom.mask))
    return pairs


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=SegmentationSettings().steps, help="optimiser steps per run")
    parser.add_argument("--size", type=int, default=64, help="phantom and working side in pixels")
    parser.add_argument("--n-real", type=int, default=120, help="real pairs; a quarter is held out for testing")
    parser.add_argument("--n-synthetic", type=int, default=120, help="synthetic stand-in pairs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    settings = SegmentationSettings(size=args.size, steps=args.steps)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"- Machine: {platform.machine()}, {os.cpu_count()} CPUs; torch threads {torch.get_num_threads()}; "
          f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"- Software: Python {platform.python_version()}, torch {torch.__version__}")
    print(f"- Date (UTC): {datetime.now(UTC):%Y-%m-%d %H:%M:%S}")
    print(f"- Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- Load average at start: {load()}")
    model = UNet(settings.width, settings.depth, settings.norm)
    print(f"- Network: U-Net width {settings.width}, depth {settings.depth}, {settings.norm} norm, "
          f"{parameter_count(model):,} parameters; {settings.steps} Adam steps per run (lr {settings.learning_rate}), "
          f"batch {settings.batch_size}, Dice + BCE, random flips; {settings.n_boot} bootstrap resamples per CI")
    real = phantom_pairs(args.n_real, 0, args.size)
    synthetic = phantom_pairs(args.n_synthetic, 1, args.size)
    print(f"- Data: {args.n_real} real phantom pairs (set seed 0) at {args.size} px, a quarter held out for testing; "
          f"{args.n_synthetic} synthetic stand-ins (phantoms of set seed 1, not generated images)", flush=True)

    start = time.perf_counter()
    warm = SegmentationSet.from_pairs(real + synthetic, settings.size)
    prepare = time.perf_counter() - start
    train_unet(warm.subset(range(settings.batch_size)), replace(settings, steps=3), device=device)  # warm-up, untimed
    start = time.perf_counter()
    report = downstream_segmentation(real, synthetic, sizes=SIZES, settings=settings, seed=0, device=str(device))
    total = time.perf_counter() - start
    print(f"- Validation (and resizing, if --size differs) of all {args.n_real + args.n_synthetic} pairs: {prepare:.2f} s; "
          f"one untimed 3-step warm-up; whole experiment ({len(report.rows)} runs): {total:.1f} s; real train/test pairs "
          f"{report.n_real_train}/{report.n_test}")
    for note in report.notes:
        print(f"- Note: {note}")
    baseline = next(r for r in report.rows if r["regime"] == "real")
    print("\n| regime | n_real | n_synthetic | steps | train s | eval s | train images / s | train vs baseline "
          "| Dice [95% CI] | IoU [95% CI] |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for row in report.rows:
        eval_s = row["seconds"] - row["train_seconds"]
        ratio = "1.00 (baseline)" if row is baseline else f"{row['train_seconds'] / baseline['train_seconds']:.2f}x"
        print(f"| {row['regime']} | {row['n_real']} | {row['n_synthetic']} | {row['steps']} | "
              f"{row['train_seconds']:.1f} | {eval_s:.2f} | {row['steps'] * settings.batch_size / row['train_seconds']:.0f} "
              f"| {ratio} | {row['dice']:.3f} [{row['dice_low']:.3f}, {row['dice_high']:.3f}] "
              f"| {row['iou']:.3f} [{row['iou_low']:.3f}, {row['iou_high']:.3f}] |", flush=True)
    print(f"\n- Load average at end: {load()}")


if __name__ == "__main__":
    main()
