"""Re-create the embedded demo: phantom frames, then the compact model trained on them.

    python -m generation.demo --out assets/demo [--work work/demo-phantoms] [--device auto]

Writes four fp16 checkpoints spread over training (steps 500 and 1000 in stage 1, 2000 and 4000
in stage 2) into ``--out``. About 40 minutes on a 2-core CPU; a few minutes on a GPU.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from generation import train
from generation.phantom.frames import write_phantom_set

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    if not (args.work / "PHANTOM.json").is_file():
        write_phantom_set(args.work, n_per_label=args.n_per_label, seed=0)
    train_args = train.parse_args(["--data", str(args.work), "--out", str(args.out), "--device", args.device, *DEMO_TRAINING])
    return train.main(train_args)


if __name__ == "__main__":
    raise SystemExit(main())
