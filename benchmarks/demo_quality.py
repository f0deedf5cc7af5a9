"""Can the demo checkpoints draw the pathology? Quality of each against phantoms it never saw, as Markdown.

    python benchmarks/demo_quality.py [--checkpoints assets/demo] [--n 64] [--grid docs/demo-grid.png]

For every checkpoint in ``--checkpoints``: ``--n`` images per pathology with the app's default
prompt and sampler (DPM-Solver++, 20 steps, guidance 3), at the generator's own resolution. They
are compared with phantom frames of seeds the demo was never trained on (it was trained on set
seed 0), centre-cropped and resized to that resolution as training does:
- FID and KID (TF-FID InceptionV3 pool3) against phantom set seed 11;
- label fidelity: a logistic regression on the same features, trained on phantom set seed 13
  (``2 * n`` per pathology), assigns each image its intended pathology or not
  (``evaluation.utility.label_fidelity``).
The baseline, measured in the same run: phantom set seed 12 (as many images) in place of the
generated ones, so "FID ratio" is the checkpoint's FID over the FID between two phantom sets of
the same size, and the phantoms' own label fidelity is the ceiling.
The floor, also in the same run: phantom set seed 12 encoded and decoded by each distinct
autoencoder of the checkpoints (posterior mean). A UNet can at best hand its decoder the latents
of real frames, so no checkpoint on that autoencoder is expected to score better than this row.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Only the command line sets these, before torch is imported (STACK-NOTES).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
# `python benchmarks/demo_quality.py` puts benchmarks/ first on sys.path; the repository root takes its place.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(REPO)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.generation import cpu_model  # noqa: E402
from common.labels import LABELS  # noqa: E402
from evaluation.distances import fid, kid  # noqa: E402
from evaluation.features import extract, load_inception  # noqa: E402
from evaluation.utility import label_fidelity  # noqa: E402
from generation.checkpoints import discover_checkpoints  # noqa: E402
from generation.datasets import load_training_set  # noqa: E402
from generation.phantom.frames import write_phantom_set  # noqa: E402
from generation.pipelines import load_pipeline  # noqa: E402
from generation.prompts import load_prompts  # noqa: E402
from generation.sampling import SamplingRequest, generate  # noqa: E402

REFERENCE_SEED, BASELINE_SEED, CLASSIFIER_SEED = 11, 12, 13
SAMPLE_SEED = 100_000
GRID_PER_LABEL = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/demo_quality.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=Path, default=REPO / "assets" / "demo", help="folder of checkpoints (default assets/demo)")
    parser.add_argument("--n", type=int, default=64, help="images per pathology, generated and in each phantom set (default 64)")
    parser.add_argument("--grid", type=Path, default=None, help="also write a PNG grid: a row of phantoms, then a row per checkpoint")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoints = discover_checkpoints(args.checkpoints)
    if not checkpoints:
        print(f"error: no checkpoint in {args.checkpoints}", file=sys.stderr)
        return 2
    size = int(checkpoints[0].metadata.get("image_size") or 128)
    extractor = load_inception()
    with tempfile.TemporaryDirectory(prefix="demo-quality-") as tmp:
        phantoms = {seed: _phantoms(Path(tmp) / str(seed), seed, n, size)
                    for seed, n in ((REFERENCE_SEED, args.n), (BASELINE_SEED, args.n), (CLASSIFIER_SEED, 2 * args.n))}
    features = {seed: extract(images, extractor) for seed, (images, _) in phantoms.items()}
    reference, classifier = features[REFERENCE_SEED], (features[CLASSIFIER_SEED], phantoms[CLASSIFIER_SEED][1])
    rows = [_row("phantoms, set seed 12 (baseline)", "-", reference, features[BASELINE_SEED], phantoms[BASELINE_SEED][1], classifier, 0.0)]
    baseline_fid = rows[0]["fid"]
    grid = [_grid_row(*phantoms[BASELINE_SEED])]
    for info, vae in _distinct_autoencoders(checkpoints):
        images, labels = _reconstruct(vae, phantoms[BASELINE_SEED][0]), phantoms[BASELINE_SEED][1]
        rows.append(_row(f"{info.name}'s autoencoder: set seed 12 encoded and decoded (floor)", "-", reference,
                         extract(images, extractor), labels, classifier, 0.0))
        grid.append(_grid_row(images, labels))
    for info in checkpoints:
        images, labels, seconds = _generate(info, args.n)
        rows.append(_row(info.name, info.stage, reference, extract(images, extractor), labels, classifier, seconds))
        grid.append(_grid_row(images, labels))
    print("\n".join(_report(args, size, rows, baseline_fid)))
    if args.grid:
        Image.fromarray(np.concatenate(grid, axis=0)).save(args.grid)
        print(f"\nGrid: {args.grid} (top row: phantoms; then the same phantoms through each distinct autoencoder; "
              f"then one row per checkpoint, oldest first; "
              f"{GRID_PER_LABEL} AD then {GRID_PER_LABEL} Non-AD each)")
    return 0


def _phantoms(folder: Path, seed: int, n: int, size: int) -> tuple[list[np.ndarray], list[str]]:
    """Phantom set ``seed`` with ``n`` per pathology, as uint8 images at ``size`` px the way training reads them."""
    write_phantom_set(folder, n_per_label=n, seed=seed)
    data = load_training_set(folder, size)
    return _uint8(data.pixels), list(data.labels)


def _distinct_autoencoders(checkpoints) -> list[tuple[object, torch.nn.Module]]:
    """(first checkpoint, autoencoder) for each different autoencoder among ``checkpoints``, by the hash of its weights.

    A checkpoint with no ``vae/`` folder of its own or of its base (a single file) counts as an
    autoencoder of its own, keyed by its fingerprint.
    """
    seen, found = set(), []
    for info in checkpoints:
        folder = Path(info.path) / "vae"
        if not folder.is_dir() and info.base is not None:  # a UNet or adapter decoded by its base's autoencoder
            folder = Path(info.base) / "vae"
        weights = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
        key = hashlib.sha256(b"".join(f.read_bytes() for f in weights)).hexdigest() if weights else info.fingerprint
        if key not in seen:
            seen.add(key)
            found.append((info, load_pipeline(info, torch.device("cpu")).vae))
    return found


@torch.inference_mode()
def _reconstruct(vae: torch.nn.Module, images: list[np.ndarray], batch: int = 32) -> list[np.ndarray]:
    """``images`` (uint8 HxWx3) encoded to their posterior means by ``vae`` and decoded again, as uint8."""
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    dtype = next(vae.parameters()).dtype
    decoded = [vae.decode(vae.encode(chunk.to(dtype)).latent_dist.mean).sample.float() for chunk in pixels.split(batch)]
    return _uint8(torch.cat(decoded))


def _uint8(pixels: torch.Tensor) -> list[np.ndarray]:
    return list(((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def _generate(info, n: int) -> tuple[list[np.ndarray], list[str], float]:
    pipe = load_pipeline(info, torch.device("cpu"))
    book = load_prompts()
    began, images, labels = time.perf_counter(), [], []
    for label in LABELS:
        request = SamplingRequest(label=label, prompt=book.default_prompt(label), n=n, seed=SAMPLE_SEED)
        images += [np.asarray(made.image.convert("RGB")) for made in generate(pipe, info, request, batch_size=16)]
        labels += [label] * n
    return images, labels, time.perf_counter() - began


def _row(name, stage, reference, fake, labels, classifier, seconds) -> dict:
    fidelity = label_fidelity(classifier[0], classifier[1], fake, labels)
    kernel = kid(reference, fake, subsets=100, subset_size=min(100, len(fake), len(reference)))
    return {"name": name, "stage": stage, "fid": fid(reference, fake), "kid": kernel.mean,
            "fidelity": fidelity["share"], "ci": fidelity["ci"],
            "per_label": {label: part["share"] for label, part in fidelity["per_label"].items()}, "seconds": seconds}


def _grid_row(images: list[np.ndarray], labels: list[str]) -> np.ndarray:
    picked = [im for label in LABELS for im in [im for im, lab in zip(images, labels) if lab == label][:GRID_PER_LABEL]]
    return np.concatenate(picked, axis=1)


def _report(args, size: int, rows: list[dict], baseline_fid: float) -> list[str]:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        "# Demo quality benchmark", "",
        f"- Machine: {cpu_model()}, {cores} usable cores, torch threads {torch.get_num_threads()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        f"- Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- Command: `python benchmarks/demo_quality.py {shlex.join(sys.argv[1:])}`",
        f"- {args.n} images per pathology at {size} px; FID/KID against phantom set seed {REFERENCE_SEED}; label-fidelity "
        f"classifier trained on phantom set seed {CLASSIFIER_SEED} ({2 * args.n} per pathology); TF-FID InceptionV3 features",
        "",
        "| images | stage | FID | FID ratio to phantoms | KID | label fidelity [95% CI] | AD | Non-AD | seconds to generate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ci = f"[{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]"
        per = row["per_label"]
        lines.append(f"| {row['name']} | {row['stage']} | {row['fid']:.1f} | {row['fid'] / baseline_fid:.2f}x | {row['kid']:.4f} | "
                     f"{row['fidelity']:.3f} {ci} | {per.get('AD', float('nan')):.2f} | {per.get('NonAD', float('nan')):.2f} | "
                     f"{row['seconds']:.0f} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
