"""Metric evaluation speed: one new checkpoint of N synthetic images against N real ones, printed as Markdown.

    .venv/bin/python benchmarks/metrics.py [--sizes 200,1000] [--extractor inception] [--n-boot 20]

For each N, three ways in the same run, each timed from PNG files on disk to the final numbers:
- cold: ``evaluate_sets(real, checkpoint_a, extractor, cache)`` with an empty ``FeatureCache``
  (2N images through the network);
- warm: then ``evaluate_sets(real, checkpoint_b, extractor, cache)`` with the same cache, as when a
  later checkpoint is evaluated: the real set's features come from the cache, only N are computed;
- baseline: plain torchmetrics ``FrechetInceptionDistance(feature=extractor)`` and
  ``KernelInceptionDistance(feature=extractor, subset_size=min(N, 1000))`` updated with all 2N images
  as uint8 tensors (batch 16), as without a cache: everything is recomputed every time. FID and KID
  each run the extractor on every image they are given, so the baseline makes 4N network passes.
Ours also computes a bootstrap CI for FID (``--n-boot`` resamples), KID and precision/recall/
density/coverage; the baseline computes FID and KID only.

Images are seeded phantom frames (``generation.phantom.render_phantom``) at 128x128: the real set
from seed 0, the two checkpoints from seeds 1 and 2. Extractor throughput (images/s, batch 16) is
measured for inception and efficientnet with ``evaluation.features.extract`` after one warm-up batch.
"""

from __future__ import annotations

import os

# torch's OpenMP spin-waiting makes CPU work several times slower on small machines (STACK-NOTES).
if __name__ == "__main__":  # the script only, before torch loads; importing it changes nothing
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import functools
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)  # benchmarks/ first on sys.path would not find the project's packages

import numpy as np
import torch

from evaluation.cache import FeatureCache
from evaluation.features import extract, get_extractor
from evaluation.images import load_images
from evaluation.metrics import MetricSettings, evaluate_sets
from generation.phantom.frames import LABELS, image_seed, render_phantom

SIZE = (128, 128)
BATCH = 16


def write_set(folder: Path, n: int, seed: int) -> Path:
    """Write n phantom frames (labels alternating) as flat PNGs into folder."""
    folder.mkdir(parents=True)
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        render_phantom(label, image_seed(seed, label, i), SIZE).image.save(folder / f"{label}-{i:05d}.png")
    return folder


def baseline(real: Path, fake: Path, extractor, n: int) -> tuple[float, float]:
    """torchmetrics FID + KID over all 2N images, no cache; returns (FID, KID mean)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    fid = FrechetInceptionDistance(feature=extractor)
    kid = KernelInceptionDistance(feature=extractor, subset_size=min(n, 1000))
    with torch.inference_mode():
        for folder, is_real in ((real, True), (fake, False)):
            images = torch.from_numpy(np.stack(load_images(folder).images)).permute(0, 3, 1, 2).contiguous()
            for start in range(0, len(images), BATCH):
                batch = images[start:start + BATCH]
                fid.update(batch, real=is_real)
                kid.update(batch, real=is_real)
        return float(fid.compute()), float(kid.compute()[0])


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def throughput(name: str, images: list[np.ndarray]) -> float:
    extractor = get_extractor(name)
    extract(images[:BATCH], extractor, batch_size=BATCH)  # warm-up
    seconds, _ = timed(extract, images, extractor, BATCH)
    return len(images) / seconds


def parse_sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 2:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: comma-separated integers >= 2, e.g. 200,1000")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[200, 1000], help="values of N, comma-separated")
    parser.add_argument("--extractor", default="inception", help="extractor for the three-way comparison")
    parser.add_argument("--n-boot", type=int, default=20, help="FID bootstrap resamples in our path")
    parser.add_argument("--throughput-images", type=int, default=64, help="images per extractor throughput run")
    args = parser.parse_args()
    settings = MetricSettings(n_boot=args.n_boot, batch_size=BATCH)
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch threads "
          f"{torch.get_num_threads()}; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}; GPU: none used (cpu)")
    print(f"- Software: Python {platform.python_version()}, torch {torch.__version__}")
    print(f"- Date (UTC): {datetime.now(UTC):%Y-%m-%d %H:%M:%S}")
    print(f"- Command: `{shlex.join([Path(sys.executable).name, *sys.argv])}`")
    print(f"- Images: seeded phantoms (`render_phantom`) at {SIZE[0]}x{SIZE[1]} PNG; batch {BATCH}; extractor "
          f"`{args.extractor}`; ours: `MetricSettings(n_boot={settings.n_boot}, kid_subsets={settings.kid_subsets}, "
          f"kid_subset_size={settings.kid_subset_size})`; baseline KID: torchmetrics defaults (100 subsets)\n",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        sample = [np.asarray(render_phantom(LABELS[i % 2], i, SIZE).image) for i in range(args.throughput_images)]
        print("| extractor | images | images / s (batch 16) |\n|---|---:|---:|")
        for name in ("inception", "efficientnet"):
            print(f"| {name} | {len(sample)} | {throughput(name, sample):.1f} |", flush=True)

        extractor = get_extractor(args.extractor)
        extract(sample[:BATCH], extractor, batch_size=BATCH)  # warm-up
        print("\n| N real + N fake | way | network passes | seconds | FID | KID mean | baseline / this |")
        print("|---:|---|---:|---:|---:|---:|---:|", flush=True)
        for n in args.sizes:
            root = Path(tmp) / f"n{n}"
            real, ck_a, ck_b = (write_set(root / name, n, seed) for seed, name in enumerate(("real", "ck-a", "ck-b")))
            cache = FeatureCache(root / "cache")
            ours = {"settings": settings}
            cold_s, cold = timed(functools.partial(evaluate_sets, real, ck_a, extractor, cache, **ours))
            warm_s, warm = timed(functools.partial(evaluate_sets, real, ck_b, extractor, cache, **ours))
            base_s, (base_fid, base_kid) = timed(baseline, real, ck_b, extractor, n)
            rows = [("cold: `evaluate_sets`, empty cache (checkpoint A)", cold.features_computed, cold_s, cold.fid, cold.kid_mean),
                    ("warm: `evaluate_sets`, real set cached (checkpoint B)", warm.features_computed, warm_s, warm.fid, warm.kid_mean),
                    ("baseline: torchmetrics FID + KID, no cache (checkpoint B)", 4 * n, base_s, base_fid, base_kid)]
            for way, computed, seconds, fid, kid in rows:
                ratio = "1.00 (baseline)" if way.startswith("baseline") else f"{base_s / seconds:.2f}x"
                print(f"| {n} | {way} | {computed} | {seconds:.1f} | {fid:.2f} | {kid:.4f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
