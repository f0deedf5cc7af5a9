"""Generate image and mask pairs with a ControlNet on the command line, stored in the study database.

    python -m generation.masks.sample --controlnet DIR --label AD --n 8 --seed 0 --masks augmented|procedural

Pairs go to ``DATA/generated/<controlnet>-<fingerprint>/images/<label>/`` and ``.../masks/<label>/``
and into the study database (images with their provenance, masks with theirs).
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Only the command line sets this, before torch is imported: OpenMP reads its wait policy when
    # torch loads, and passive waiting makes sampling 3-7x faster on small CPUs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

from common.device import resolve_device  # noqa: E402
from common.labels import LABELS, validate_label  # noqa: E402
from generation.errors import run_cli  # noqa: E402
from generation.masks.sampling import MASK_MODES, generate_pairs  # noqa: E402
from generation.sampling import add_sampler_arguments  # noqa: E402

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.masks.sample",
        description=(
            "Generate N image and mask pairs of one pathology with a ControlNet (generation.masks.train output or a "
            "user's). Masks are registered real masks reshaped at random (augmented) or procedural blobs. Pair i uses "
            "seed S+i. Images and masks are written under DATA/generated/ and stored in the study database with "
            "their provenance."
        ),
    )
    parser.add_argument("--controlnet", type=Path, required=True, help="ControlNet folder (config.json + weights, polypturing.json naming its base)")
    parser.add_argument("--label", required=True, help=f"pathology to generate: {' or '.join(LABELS)}")
    parser.add_argument("--n", type=int, default=8, help="number of pairs (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first pair (default 0)")
    parser.add_argument("--masks", choices=MASK_MODES, default="augmented", help="where masks come from (default augmented)")
    parser.add_argument("--mask-pool", type=Path, default=None, help="with --masks augmented: a folder of image and mask pairs to reshape instead of the registered real masks")
    add_sampler_arguments(parser)
    parser.add_argument("--data-dir", type=Path, default=None, help="project data folder (env POLYP_DATA_DIR; default ./data)")
    parser.add_argument("--db", type=Path, default=None, help="study database (env POLYP_DB; default DATA/polypturing.db)")
    parser.add_argument("--base", type=Path, default=None, help="base pipeline when the ControlNet's base is a training output checkpoint-<N>/ (env POLYP_BASE)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="where to run (env POLYP_DEVICE; default auto)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    """Generate and store the pairs described by ``args``; returns 0."""
    # The door's configuration (flags, then environment): read by this entry point only, so the
    # room's functions never depend on the app above them.
    from appconfig import Services, config_from

    validate_label(args.label)
    config = config_from(data_dir=args.data_dir, db=args.db, base=args.base, device=args.device)
    resolve_device(config.device)  # a clear error for cuda without a GPU, before loading anything
    rows = generate_pairs(
        Services(config), args.controlnet, args.label, args.n, args.seed, masks=args.masks, prompt=args.prompt,
        negative_prompt=args.negative_prompt, steps=args.steps, guidance=args.guidance, scheduler=args.scheduler,
        mask_pool=args.mask_pool, batch_size=args.batch_size,
    )
    folder = Path(rows[0]["path"]).parent.parent.parent if rows else config.generated_dir
    logger.info("stored %d %s image and mask pairs in %s and %s", len(rows), args.label, folder, config.db_path)
    return 0


def cli(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, run, report user errors as ``error: ...`` with exit status 2."""
    return run_cli(parse_args, main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
