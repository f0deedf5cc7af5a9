"""Re-create the embedded demo: phantom frames, then the compact model trained on them.

    python -m generation.demo --out assets/demo [--work work/demo-phantoms] [--device auto]

Writes four fp16 checkpoints spread over training (steps 500 and 1000 in stage 1, 2000 and 4000
in stage 2) into ``--out``. About 40 minutes on a 2-core CPU; a few minutes on a GPU.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Only the command line sets this, before torch is imported: OpenMP reads its wait policy when
    # torch loads, and passive waiting makes training 3-7x faster on small CPUs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from generation import train  # noqa: E402
from generation.datasets import MANIFEST_FILE  # noqa: E402
from generation.errors import run_cli  # noqa: E402
from generation.phantom.frames import write_phantom_set  # noqa: E402

DEMO_TRAINING = [
    "--vae-steps", "1000", "--stage1-steps", "1000", "--stage2-steps", "3000",
    "--checkpoint-every", "0", "--checkpoint-at", "500,1000,2000,4000",
    "--batch-size", "16", "--save-dtype", "fp16", "--seed", "0",
]
"""The training recipe of the shipped demo checkpoints."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.demo",
        description="Re-create the embedded demo checkpoints: draw phantom frames, train the compact model on them, "
        "write fp16 checkpoints at steps 500, 1000, 2000 and 4000.",
    )
    parser.add_argument("--out", type=Path, default=Path("assets/demo"), help="where the checkpoints go (default assets/demo)")
    parser.add_argument("--work", type=Path, default=Path("work/demo-phantoms"), help="where the phantom training frames go (default work/demo-phantoms)")
    parser.add_argument("--n-per-label", type=int, default=300, help="phantom frames per pathology (default 300)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Draw the phantom training frames (unless ``--work`` holds them already), then train; returns 0."""
    if not (args.work / MANIFEST_FILE).is_file():
        write_phantom_set(args.work, n_per_label=args.n_per_label, seed=0)
    train_args = train.parse_args(["--data", str(args.work), "--out", str(args.out), "--device", args.device, *DEMO_TRAINING])
    return train.main(train_args)


def cli(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, run, report user errors as ``error: ...`` with exit status 2."""
    return run_cli(parse_args, main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
