"""Attention checks: test cards that no endoscope produces, and how a rater's answer is scored.

A test card is a flat two-colour checkerboard or stripe pattern with a grey disc in the centre and
no text. Any attentive rater calls it synthetic; ``review.schedule.make_schedules`` puts such
cards into every rater's schedule as trials of kind ``"attention"``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from common.files import atomic_path
from review.design import MODES, SIDES, SIZE_RANGE, check_int

if TYPE_CHECKING:
    from review.schedule import Trial

ATTENTION_RULE = (
    "An attention check shows a flat-coloured test card (checkerboard or stripes with a grey disc), "
    "which no endoscope produces. Single mode: the check is passed when the rater answers 'synthetic'. "
    "Pair mode: the card is shown beside a real image, and the check is passed when the rater picks "
    "the card's side as the synthetic one. An unanswered check is failed."
)
"""How attention checks are scored; ``attention_passed`` implements it."""

PATTERNS: tuple[str, ...] = ("checkerboard", "horizontal stripes", "vertical stripes", "diagonal stripes")
DISC_GREY = 128
DISC_RADIUS = 0.22
"""Radius of the centred grey disc, as a fraction of the card's size."""


def render_attention_image(seed: int, size: int = 256) -> Image.Image:
    """Draw a test card: seeded pattern, colours and tile count, then a centred grey disc.

    Args:
        seed: A non-negative integer; the same seed and size give the same pixels.
        size: Width and height in pixels, within ``review.design.SIZE_RANGE``.

    Returns:
        An RGB image of ``size`` x ``size`` pixels.

    Raises:
        ValueError: If the seed or size is not a valid integer.
    """
    check_int("seed", seed, 0)
    check_int("size", size, *SIZE_RANGE)
    rng = np.random.default_rng(seed)
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    tiles = int(rng.integers(4, 13))
    hue = rng.random()
    # Saturated colours of clearly different hue: far from the pinks and browns of a colon.
    colours = [np.array(colorsys.hsv_to_rgb(h % 1.0, 1.0, rng.uniform(0.75, 1.0))) * 255
               for h in (hue, hue + rng.uniform(0.3, 0.7))]
    y, x = np.mgrid[0:size, 0:size] * (tiles / size)
    stripes = {
        "checkerboard": np.floor(x) + np.floor(y),
        "horizontal stripes": np.floor(y),
        "vertical stripes": np.floor(x),
        "diagonal stripes": np.floor(x + y),
    }[pattern]
    pixels = np.where((stripes % 2 == 0)[..., None], colours[0], colours[1])
    centre = (size - 1) / 2
    disc = np.hypot(*(np.mgrid[0:size, 0:size] - centre)) <= DISC_RADIUS * size
    pixels[disc] = DISC_GREY
    return Image.fromarray(np.round(pixels).astype(np.uint8), "RGB")


def write_attention_images(out_dir: Path, n: int, seed: int, size: int = 256) -> list[Path]:
    """Write ``n`` distinct test cards as PNG files ``attention-<seed>-<index>.png``.

    Card ``index`` is drawn with a seed derived from ``(seed, index)``, so the files are the same
    bytes whenever they are written again.

    Args:
        out_dir: Folder to write into; created if missing.
        n: Number of cards (>= 1).
        seed: A non-negative integer.
        size: Width and height in pixels.

    Returns:
        The paths written, in index order.

    Raises:
        ValueError: If ``n``, ``seed`` or ``size`` is invalid.
    """
    check_int("n", n, 1)
    check_int("seed", seed, 0)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(n):
        card_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
        path = out_dir / f"attention-{seed}-{index:03d}.png"
        with atomic_path(path) as partial:
            render_attention_image(card_seed, size).save(partial, format="PNG")
        paths.append(path)
    return paths


def attention_passed(mode: str, answer: Mapping, trial: Trial) -> bool:
    """Score an attention-check trial by ``ATTENTION_RULE``.

    Args:
        mode: The study mode, ``"single"`` or ``"pair"``.
        answer: Single mode: ``{"real_or_synthetic": "real" | "synthetic" | None}``; pair mode:
            ``{"synthetic_side": "left" | "right" | None}``. A missing or ``None`` answer fails.
        trial: The attention trial answered (``kind == "attention"``).

    Returns:
        Whether the rater passed the check.

    Raises:
        ValueError: If the trial is not an attention check of this mode, or the answer holds a
            value that is not allowed.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not valid; allowed: {', '.join(MODES)}")
    if trial.kind != "attention":
        raise ValueError(f"trial at position {trial.position} is a {trial.kind!r} trial, not an attention check")
    if len(trial.images) != (1 if mode == "single" else 2):
        raise ValueError(f"a {mode} mode attention check shows {1 if mode == 'single' else 2} image(s), "
                         f"trial at position {trial.position} shows {len(trial.images)}")
    key, allowed = ("real_or_synthetic", ("real", "synthetic")) if mode == "single" else ("synthetic_side", SIDES)
    value = answer.get(key)
    if value is None:
        return False
    if value not in allowed:
        raise ValueError(f"answer[{key!r}] {value!r} is not valid; allowed: {', '.join(allowed)}")
    return value == ("synthetic" if mode == "single" else trial.synthetic_side)

