"""``python -m evaluation.segmentation``: the downstream segmentation test on folders of image/mask pairs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from common.cli import run_cli
from common.device import DeviceUnavailable, resolve_device
from evaluation.segmentation.data import load_pairs
from evaluation.segmentation.experiment import REGIMES, SegmentationReport, downstream_segmentation
from evaluation.segmentation.settings import SegmentationError, SegmentationSettings


def _size_arg(text: str):
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer or 'all'") from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m evaluation.segmentation``."""
    defaults = SegmentationSettings()
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.segmentation",
        description="Train a small U-Net on real-only, synthetic-only and real+synthetic image/mask pairs at "
        "several real-set sizes; report Dice and IoU (bootstrap CIs) on held-out real images. Each DIR holds "
        "images/ and masks/ with the same file stems.",
        epilog="Exit codes: 0 done, 2 usage or input error.")
    parser.add_argument("--real", required=True, metavar="DIR", help="real pairs (a share is held out for testing)")
    parser.add_argument("--synthetic", metavar="DIR", help="synthetic pairs (needed for the synthetic regimes)")
    parser.add_argument("--test", metavar="DIR", help="explicit real test pairs instead of holding out --real's")
    parser.add_argument("--cross", metavar="DIR", help="optional cross-dataset test pairs, reported separately")
    parser.add_argument("--sizes", nargs="+", type=_size_arg, default=[16, 32, 64, "all"], help="real set sizes")
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES))
    parser.add_argument("--test-fraction", type=float, default=0.25, help="held-out share of --real (default 0.25)")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps per run (default 300)")
    parser.add_argument("--epochs", type=int, help="train for N epochs instead of --steps (steps grow with data)")
    parser.add_argument("--size", type=int, default=defaults.size, help="working side in pixels (default 64)")
    parser.add_argument("--width", type=int, default=defaults.width, help="U-Net base channels (default 16)")
    parser.add_argument("--depth", type=int, default=defaults.depth, help="U-Net down-samplings (default 3)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--max-synthetic", type=int, help="use at most N synthetic pairs")
    parser.add_argument("--n-boot", type=int, default=defaults.n_boot, help="bootstrap resamples (default 1000)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return parser


def format_report(report: SegmentationReport) -> str:
    """Markdown tables of the summary (and the per-repeat rows when there are several repeats)."""
    def ci(row, key):
        return "n/a" if row[key] is None else f"{row[key]:.3f} [{row[key + '_low']:.3f}, {row[key + '_high']:.3f}]"

    cross = report.n_cross is not None
    lines = [f"real training pairs {report.n_real_train}, real test pairs {report.n_test} ({report.test_source}), "
             f"synthetic pairs {report.n_synthetic}" + (f", cross-dataset pairs {report.n_cross}" if cross else ""),
             "", "| regime | n_real | n_synthetic | repeats | Dice [95% CI] | IoU [95% CI] |" +
             (" cross Dice | cross IoU |" if cross else ""),
             "|---|---:|---:|---:|---|---|" + ("---|---|" if cross else "")]
    for row in report.summary:
        lines.append(f"| {row['regime']} | {row['n_real']} | {row['n_synthetic']} | {row['repeats']} | "
                     f"{ci(row, 'dice')} | {ci(row, 'iou')} |" +
                     (f" {ci(row, 'cross_dice')} | {ci(row, 'cross_iou')} |" if cross else ""))
    lines += [f"- note: {note}" for note in report.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for user errors, with a one-line message on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: _test(args), (SegmentationError, DeviceUnavailable, OSError))


def _test(args: argparse.Namespace) -> int:
    """The command's work: read the folders, run the test, print the report."""
    device = resolve_device(args.device)
    settings = SegmentationSettings(size=args.size, width=args.width, depth=args.depth, steps=args.steps,
                                    epochs=args.epochs, batch_size=args.batch_size, n_boot=args.n_boot,
                                    max_synthetic=args.max_synthetic)
    load = {name: load_pairs(Path(folder), f"--{name}") if folder else None
            for name, folder in (("real", args.real), ("synthetic", args.synthetic), ("test", args.test),
                                 ("cross", args.cross))}
    report = downstream_segmentation(
        load["real"], load["synthetic"] or (), sizes=args.sizes, regimes=args.regimes,
        test_fraction=args.test_fraction, test_pairs=load["test"], cross_pairs=load["cross"],
        repeats=args.repeats, seed=args.seed, settings=settings, device=device)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
