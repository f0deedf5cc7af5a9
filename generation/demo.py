"""Re-create the embedded demo: phantom frames, the compact model (v3) trained on them, four checkpoints.

    python -m generation.demo --out assets/demo [--work work/demo-phantoms] [--run work/demo-run] [--device auto]

Three runs, each in a work folder that keeps its checkpoints, and the training state to resume
from, every 250 or 500 steps; run the command again after a stop and it continues from the newest one:
1. ``--run``: the autoencoder (2500 steps), stage 1 (1500 steps, generic prompt) and stage 2 (1000
   steps, pathology prompts);
2. ``--run``-continued: 1000 more stage-2 steps on run 1's last checkpoint (``generation.train
   --base``), a fresh optimiser whose EMA starts from that UNet;
3. ``--run``-continued-2: 4500 more stage-2 steps on the pipeline of run 2's last UNet (assembled
   in ``--run``-continued/pipeline-3500), with a slower EMA.
At the end four checkpoints are copied into ``--out`` without their training state, in fp16:
steps 1000 and 1500 (stage 1: frames without pathology), 2500 (end of run 1) and 8000 (end of
run 3: run 1's autoencoder with run 3's UNet); ``--out``'s other checkpoints are removed. About 103
minutes from scratch on an idle 2-core CPU (README, docs/benchmarks.md); minutes on a GPU.
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
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from generation import train  # noqa: E402
from generation.datasets import MANIFEST_FILE  # noqa: E402
from generation.errors import run_cli  # noqa: E402
from generation.model import atomic_folder, read_metadata, write_metadata  # noqa: E402
from generation.phantom.frames import write_phantom_set  # noqa: E402
from generation.training_state import STATE_FOLDER, TrainingStateError, find_state  # noqa: E402

logger = logging.getLogger(__name__)

DEMO_STEPS = (1000, 1500, 2500)
"""Checkpoints of run 1 that are shipped: two of stage 1 (frames without pathology: the UNet has learnt
what a frame looks like, not yet what the pathology words mean) and run 1's last."""

TRAINING_FLAGS = ["--batch-size", "16", "--save-dtype", "fp16", "--save-state", "last", "--no-validation",
                  "--log-every", "50"]

DEMO_TRAINING = [
    "--preset", "demo", "--vae-steps", "2500", "--vae-batch-size", "8", "--vae-crop", "64", "--vae-perceptual", "0.5",
    "--stage1-steps", "1500", "--stage2-steps", "1000", "--checkpoint-every", "250",
    "--lr", "3e-4", "--ema-decay", "0.998", "--seed", "0", *TRAINING_FLAGS,
]
"""Run 1 of the shipped demo checkpoints. No held-out split: the demo's quality is measured on
phantoms of seeds it never saw (``benchmarks/demo_quality.py``), a stronger test."""


@dataclass(frozen=True)
class Continuation:
    """A run of more stage-2 steps on the UNet of the run before (``generation.train --base``)."""

    steps: int
    lr: str
    ema_decay: str
    seed: int
    checkpoint_every: int

    def recipe(self) -> list[str]:
        return ["--vae-steps", "0", "--stage1-steps", "0", "--stage2-steps", str(self.steps),
                "--checkpoint-every", str(self.checkpoint_every), "--lr", self.lr, "--ema-decay", self.ema_decay,
                "--seed", str(self.seed), *TRAINING_FLAGS]


CONTINUATIONS = (Continuation(1000, "2e-4", "0.998", 1, 250), Continuation(4500, "2e-4", "0.999", 2, 500))
"""Runs 2 and 3: stage 2 continued, each with a fresh optimiser and seed; run 3's EMA averages longer."""

FINAL_STEP = DEMO_STEPS[-1] + sum(run.steps for run in CONTINUATIONS)
"""The shipped checkpoint of the last run: ``checkpoint-8000``."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.demo",
        description="Re-create the embedded demo checkpoints: draw phantom frames, train the compact model (v3, 128 px) "
        f"on them in --run and its two continued runs beside it (resumable: run it again after a stop), then copy "
        f"the checkpoints of steps {', '.join(map(str, (*DEMO_STEPS, FINAL_STEP)))} into --out.",
    )
    parser.add_argument("--out", type=Path, default=Path("assets/demo"), help="where the checkpoints go (default assets/demo)")
    parser.add_argument("--work", type=Path, default=Path("work/demo-phantoms"), help="where the phantom training frames go (default work/demo-phantoms)")
    parser.add_argument("--run", type=Path, default=Path("work/demo-run"),
                        help="run 1's folder (checkpoints every 250 steps and the state to resume from); runs 2 and 3 go beside it, "
                        "in RUN-continued and RUN-continued-2 (default work/demo-run)")
    parser.add_argument("--n-per-label", type=int, default=300, help="phantom frames per pathology (default 300)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Draw the phantom frames (unless ``--work`` holds them), train or resume the three runs, copy into ``--out``.

    Returns:
        0, or the exit status of a training run that failed.
    """
    if not (args.work / MANIFEST_FILE).is_file():
        write_phantom_set(args.work, n_per_label=args.n_per_label, seed=0)
    status = _train(args, args.run, DEMO_TRAINING)
    step = DEMO_STEPS[-1]
    for number, continuation in enumerate(CONTINUATIONS, start=1):
        if status:
            return status
        run = continued_run(args.run, number)
        status = _train(args, run, ["--base", str(_base_of(args.run, number)), *continuation.recipe()])
        step += continuation.steps
        whole = run / f"pipeline-{step}"
        if not status and number < len(CONTINUATIONS) and not whole.is_dir():  # what the next run continues
            publish_continued(_base_of(args.run, number), run / f"checkpoint-{continuation.steps}", whole)
    if status:
        return status
    publish(args.run, args.out)
    last = continued_run(args.run, len(CONTINUATIONS)) / f"checkpoint-{CONTINUATIONS[-1].steps}"
    publish_continued(_base_of(args.run, len(CONTINUATIONS)), last, args.out / f"checkpoint-{FINAL_STEP}")
    return 0


def _train(args: argparse.Namespace, run: Path, recipe: list[str]) -> int:
    """Train ``recipe`` into ``run`` unless its last checkpoint is there, resuming from its state if it has one."""
    if (run / f"checkpoint-{_last_step(recipe)}").is_dir():
        return 0
    train_argv = ["--data", str(args.work), "--out", str(run), "--device", args.device, *recipe]
    if _has_state(run):
        train_argv += ["--resume", str(run)]
    return train.main(train.parse_args(train_argv))


def _base_of(run: Path, number: int) -> Path:
    """The pipeline continuation ``number`` (1-based) trains on: run 1's last checkpoint, or the one assembled
    from the continuation before it."""
    if number == 1:
        return run / f"checkpoint-{DEMO_STEPS[-1]}"
    step = DEMO_STEPS[-1] + sum(c.steps for c in CONTINUATIONS[:number - 1])
    return continued_run(run, number - 1) / f"pipeline-{step}"


def continued_run(run: Path, number: int = 1) -> Path:
    """The folder of continuation ``number``, beside run 1's: ``work/demo-run-continued``, then ``-continued-2``."""
    return run.with_name(run.name + "-continued" + ("" if number == 1 else f"-{number}"))


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
    wanted = {f"checkpoint-{step}" for step in steps} | {f"checkpoint-{FINAL_STEP}"}
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
    ``continued``: the list of continuations so far, this one last (its first step, steps, schedule).
    """
    before, after = read_metadata(base), read_metadata(continued)
    metadata = {key: value for key, value in before.items() if key != "format"}
    history = before.get("continued", [])
    history = [history] if isinstance(history, dict) else list(history)  # one record, as the first demo v2 wrote
    metadata.update(step=int(before["step"]) + int(after["step"]), stage=2, created_at=after.get("created_at"),
                    continued=[*history, {"from_step": int(before["step"]), "steps": int(after["step"]),
                                          "schedule": after.get("schedule"), "base": "the checkpoint of from_step"}])
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
