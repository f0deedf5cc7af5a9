"""Re-create the embedded demo: phantom frames, the compact model (v2) trained on them, four checkpoints.

    python -m generation.demo --out assets/demo [--work work/demo-phantoms] [--run work/demo-run] [--device auto]

Two runs, each in a work folder that keeps a checkpoint, and the training state to resume from,
every 250 steps; run the command again after a stop and it continues from the newest one:
1. ``--run``: the autoencoder (2500 steps), stage 1 (500 steps, generic prompt) and stage 2 (2000
   steps, pathology prompts);
2. ``--run``-continued: 1000 more stage-2 steps at a lower learning rate on the UNet of run 1's
   last checkpoint (``generation.train --base``), whose EMA weights it starts from.
At the end four checkpoints are copied into ``--out`` without their training state, in fp16:
steps 250 and 500 (stage 1: frames without pathology), 2500 (end of run 1) and 3500 (end of run
2, assembled from run 1's autoencoder and run 2's UNet); ``--out``'s other checkpoints are
removed. 82 minutes on this 2-core CPU with other jobs running (docs/benchmarks.md); minutes on a GPU.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Only the command line sets this, before torch is imported: OpenMP reads its wait policy when
    # torch loads, and passive waiting makes training 3-7x faster on small CPUs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

from generation import train  # noqa: E402
from generation.datasets import MANIFEST_FILE  # noqa: E402
from generation.errors import run_cli  # noqa: E402
from generation.model import atomic_folder, read_metadata, write_metadata  # noqa: E402
from generation.phantom.frames import write_phantom_set  # noqa: E402
from generation.training_state import STATE_FOLDER, TrainingStateError, find_state  # noqa: E402

logger = logging.getLogger(__name__)

DEMO_STEPS = (250, 500, 2500)
"""Checkpoints of run 1 that are shipped: two early in stage 1 (frames without pathology), its last."""

CONTINUED_STEPS = 1000
"""Stage-2 steps of run 2; its last checkpoint is shipped as step ``DEMO_STEPS[-1] + CONTINUED_STEPS``."""

DEMO_TRAINING = [
    "--preset", "demo", "--vae-steps", "2500", "--vae-batch-size", "8", "--vae-crop", "64", "--vae-perceptual", "0.5",
    "--stage1-steps", "500", "--stage2-steps", "2000", "--checkpoint-every", "250",
    "--batch-size", "16", "--lr", "3e-4", "--ema-decay", "0.998", "--save-dtype", "fp16", "--seed", "0",
    "--save-state", "last", "--no-validation", "--log-every", "50",
]
"""Run 1 of the shipped demo checkpoints. No held-out split: the demo's quality is measured on
phantoms of seeds it never saw (``benchmarks/demo_quality.py``), a stronger test."""

CONTINUED_TRAINING = [
    "--vae-steps", "0", "--stage1-steps", "0", "--stage2-steps", str(CONTINUED_STEPS), "--checkpoint-every", "250",
    "--batch-size", "16", "--lr", "2e-4", "--ema-decay", "0.998", "--save-dtype", "fp16", "--seed", "1",
    "--save-state", "last", "--no-validation", "--log-every", "50",
]
"""Run 2: more stage-2 steps on run 1's last UNet (``--base``), a fresh optimiser, seed 1."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.demo",
        description="Re-create the embedded demo checkpoints: draw phantom frames, train the compact model (v2, 128 px) "
        f"on them in --run (resumable: run it again after a stop), then copy the checkpoints of steps "
        f"{', '.join(map(str, DEMO_STEPS))} into --out.",
    )
    parser.add_argument("--out", type=Path, default=Path("assets/demo"), help="where the checkpoints go (default assets/demo)")
    parser.add_argument("--work", type=Path, default=Path("work/demo-phantoms"), help="where the phantom training frames go (default work/demo-phantoms)")
    parser.add_argument("--run", type=Path, default=Path("work/demo-run"),
                        help="the training run's folder: checkpoints every 250 steps and the state to resume from (default work/demo-run)")
    parser.add_argument("--n-per-label", type=int, default=300, help="phantom frames per pathology (default 300)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Draw the phantom frames (unless ``--work`` holds them), train or resume both runs, copy into ``--out``; returns 0."""
    if not (args.work / MANIFEST_FILE).is_file():
        write_phantom_set(args.work, n_per_label=args.n_per_label, seed=0)
    first = args.run / f"checkpoint-{DEMO_STEPS[-1]}"
    second = continued_run(args.run)
    for run, recipe in ((args.run, DEMO_TRAINING), (second, ["--base", str(first), *CONTINUED_TRAINING])):
        if (run / f"checkpoint-{_last_step(recipe)}").is_dir():
            continue
        train_argv = ["--data", str(args.work), "--out", str(run), "--device", args.device, *recipe]
        if _has_state(run):
            train_argv += ["--resume", str(run)]
        status = train.main(train.parse_args(train_argv))
        if status:
            return status
    publish(args.run, args.out)
    publish_continued(first, second / f"checkpoint-{CONTINUED_STEPS}", args.out / f"checkpoint-{DEMO_STEPS[-1] + CONTINUED_STEPS}")
    return 0


def continued_run(run: Path) -> Path:
    """Run 2's folder, beside run 1's: ``work/demo-run-continued``."""
    return run.with_name(run.name + "-continued")


def _last_step(recipe: list[str]) -> int:
    steps = {flag: int(recipe[recipe.index(flag) + 1]) for flag in ("--stage1-steps", "--stage2-steps")}
    return sum(steps.values())


def _has_state(run: Path) -> bool:
    try:
        find_state(run)
    except TrainingStateError:
        return False
    return True


def publish(run: Path, out: Path, steps: tuple[int, ...] = DEMO_STEPS) -> list[Path]:
    """Copy ``run``'s checkpoints of ``steps`` into ``out`` without their training state; remove ``out``'s
    other checkpoints but the continued one (``publish_continued``).

    Each copy replaces its folder atomically (``atomic_folder``), so the app never lists half a checkpoint.

    Returns:
        The copied checkpoint folders.
    """
    out.mkdir(parents=True, exist_ok=True)
    wanted = {f"checkpoint-{step}" for step in steps} | {f"checkpoint-{steps[-1] + CONTINUED_STEPS}"}
    for step in steps:
        name = f"checkpoint-{step}"
        with atomic_folder(out / name) as tmp:
            shutil.copytree(run / name, tmp, ignore=shutil.ignore_patterns(STATE_FOLDER))
    for stale in out.glob("checkpoint-*"):
        if stale.is_dir() and stale.name not in wanted:
            shutil.rmtree(stale)
    logger.info("demo checkpoints of run 1 in %s: %s", out, ", ".join(f"checkpoint-{s}" for s in steps))
    return [out / f"checkpoint-{step}" for step in steps]


def publish_continued(base: Path, continued: Path, out: Path) -> Path:
    """Write ``out``: the pipeline folder ``base`` with the UNet of ``continued`` (a ``--base`` run's checkpoint).

    Its ``polypturing.json`` is ``base``'s with the step counted on from ``base``'s, stage 2, and
    what the continuation did (``continued``: its steps, schedule and creation time).
    """
    before, after = read_metadata(base), read_metadata(continued)
    metadata = {key: value for key, value in before.items() if key != "format"}
    metadata.update(step=int(before["step"]) + int(after["step"]), stage=2, created_at=after.get("created_at"),
                    continued={"from_step": int(before["step"]), "steps": int(after["step"]),
                               "schedule": after.get("schedule"), "base": "the checkpoint of from_step"})
    with atomic_folder(out) as tmp:
        shutil.copytree(base, tmp, ignore=shutil.ignore_patterns(STATE_FOLDER, "unet"))
        shutil.copytree(continued / "unet", tmp / "unet")
        write_metadata(tmp, metadata)
    logger.info("demo checkpoint %s: %s with the UNet of %s", out, base, continued)
    return out


def cli(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, run, report user errors as ``error: ...`` with exit status 2."""
    return run_cli(parse_args, main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
