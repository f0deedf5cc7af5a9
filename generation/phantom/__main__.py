"""``python -m generation.phantom``: write a set of phantom frames (AD and Non-AD) with exact masks."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from generation.phantom.frames import MAX_SIDE, MIN_SIDE, write_phantom_set

logger = logging.getLogger(__name__)


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT, e.g. 320x256; got {text!r}")
    size = (int(parts[0]), int(parts[1]))
    if not all(MIN_SIDE <= s <= MAX_SIDE for s in size):
        raise argparse.ArgumentTypeError(f"each side must be between {MIN_SIDE} and {MAX_SIDE}; got {text!r}")
    return size


def _integer(low: int, what: str):
    """An argparse type for whole numbers of at least ``low``, refused as "expected a <what> integer"."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what} integer; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected a {what} integer; got {text!r}")
        return value

    return parse


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generation.phantom",
        description=(
            "Write a labelled set of synthetic colonoscopy-like phantom frames: OUT/AD/*.png and "
            "OUT/NonAD/*.png (RGB frames), OUT/masks/<label>/*.png (polyp masks, 0/255) and "
            "OUT/PHANTOM.json (seed, size and the drawn attributes of every image: Paris class, "
            "size in mm, NICE type, location, geometry, overlay text)."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--n", type=_integer(1, "positive"), default=200, help="images per label (default: 200)")
    parser.add_argument("--seed", type=_integer(0, "non-negative"), default=0, help="seed of the set (default: 0)")
    parser.add_argument("--size", type=_parse_size, default=(320, 256), help="frame size WxH (default: 320x256)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see ``python -m generation.phantom --help``.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        0 on success (argparse exits with status 2 on bad arguments).
    """
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    paths = write_phantom_set(args.out, args.n, seed=args.seed, size=args.size)
    logger.info("done: %d images in %s", len(paths), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
