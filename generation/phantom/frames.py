"""Procedural colonoscopy-like phantom frames with an exact polyp mask.

No clinical image may ship with PolypTuring, so the demo is trained on these phantoms. Each frame
imitates a white-light colonoscopy video frame: a round or rounded-octagon endoscopic field on a
black canvas, pink-orange mucosa with folds, submucosal vessels, a lumen, specular highlights and
vignetting, processor-style overlay text in the black border, and one polyp whose appearance follows
the textbook adenoma (AD) versus hyperplastic (Non-AD) differences: size, colour, outline, Paris
morphology and NICE surface pattern.

``render_phantom`` is a pure function of (label, seed, size). Run
``python -m generation.phantom --out DIR --n 200`` to write a labelled set.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.files import write_atomic
from common.labels import LABELS, label_id, validate_label
from generation.datasets import MANIFEST_FILE
from generation.phantom.lesion import LOCATIONS as LOCATIONS
from generation.phantom.lesion import Lesion, draw_lesion, sample_lesion
from generation.phantom.scene import (
    VESSEL_RED,
    Field,
    Scene,
    blur,
    draw_mucosa,
    draw_overlay,
    field_distance,
    mucosal_highlights,
    sample_field,
    sample_light_and_colour,
    sample_scene,
    vessel_layer,
)

logger = logging.getLogger(__name__)

MIN_SIDE = 64
"""Smallest allowed frame width or height in pixels."""
MAX_SIDE = 4096
"""Largest allowed frame width or height in pixels."""
MANIFEST_VERSION = 1


@dataclass(frozen=True, eq=False)
class Phantom:
    """One rendered phantom frame.

    Attributes:
        image: RGB frame of size (width, height).
        mask: Boolean array (height, width), True exactly on the polyp's pixels.
        label: Pathology label, ``"AD"`` or ``"NonAD"``.
        seed: The seed the frame was rendered from.
        attributes: JSON-serialisable description of what was drawn (Paris class, size in mm,
            NICE type, location, geometry, overlay text).
    """

    image: Image.Image
    mask: np.ndarray
    label: str
    seed: int
    attributes: dict


# ---------------------------------------------------------------------------------------------
# Validation and the coordinate grid
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Open coordinate grids (1, width) and (height, 1), cached per size and read-only."""
    xx = np.arange(width, dtype=np.float32)[None, :]
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _validate_size(size: Sequence[int]) -> tuple[int, int]:
    ok = (
        isinstance(size, Sequence) and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and MIN_SIDE <= s <= MAX_SIDE for s in size)
    )
    if not ok:
        raise ValueError(
            f"size must be (width, height) with each side an integer between {MIN_SIDE} and "
            f"{MAX_SIDE} pixels; got {size!r}"
        )
    return int(size[0]), int(size[1])


def _validate_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------


def render_phantom(label: str, seed: int, size: tuple[int, int] = (320, 256)) -> Phantom:
    """Render one colonoscopy-like phantom frame with its polyp mask.

    Args:
        label: Pathology label, one of ``LABELS`` (``"AD"`` or ``"NonAD"``).
        seed: Non-negative integer; the frame is a pure function of (label, seed, size).
        size: (width, height) in pixels, each between ``MIN_SIDE`` and ``MAX_SIDE``.

    Returns:
        The rendered ``Phantom``.

    Raises:
        ValueError: If the label is unknown (the message lists the valid labels), the seed is
            negative or not an integer, or the size is outside the allowed range.
    """
    validate_label(label)
    width, height = _validate_size(size)
    seed = _validate_seed(seed)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence([seed, label_id(label)]).spawn(6)]
    xx, yy = _grid(width, height)
    # 1. Geometry: field, then lesion, then a lumen placed away from the lesion.
    field = sample_field(rngs[0], width, height)
    mucosa, light = sample_light_and_colour(rngs[0])
    lesion = sample_lesion(label, rngs[1], field, mucosa)
    scene = sample_scene(rngs[0], field, lesion, light, mucosa)
    return _assemble(label, seed, field, scene, lesion, rngs, xx, yy)


def _assemble(label, seed, field, scene, lesion, rngs, xx, yy) -> Phantom:
    height, width = yy.shape[0], xx.shape[1]
    # 2. Mucosa with folds and vessels.
    rgb, crest, illum = draw_mucosa(rngs[2], field, scene, xx, yy)
    vessels = vessel_layer(rngs[3], field, width, height)[..., None] * 0.5
    rgb = rgb * (1 - vessels) + VESSEL_RED * vessels
    # 3. Lesion, then scene light: lumen darkness and vignetting.
    spec = mucosal_highlights(rngs[4], field, crest)
    mask = draw_lesion(rgb, spec, lesion, scene, rngs[1])
    dist = field_distance(field, xx, yy)
    vignette = 1 - rngs[4].uniform(0.35, 0.55) * np.clip(dist, 0, 1) ** 3
    rgb *= (np.clip(illum, 0.03, 1) * vignette)[..., None]
    # 4. Highlights saturate to white; sensor noise; black outside the field.
    spec = np.clip(spec + 0.3 * blur(spec, 2.5), 0, 1)  # a faint glare halo
    rgb += (265.0 - rgb) * spec[..., None]
    rgb += rngs[4].standard_normal(rgb.shape, dtype=np.float32) * 2.0
    alpha = np.clip((1 - dist) * field.radius + 0.5, 0, 1)
    rgb8 = np.clip(rgb * alpha[..., None], 0, 255).astype(np.uint8)
    mask &= alpha >= 1.0
    outside = (dist > 1 + 3 / field.radius).astype(np.uint8)
    overlay = draw_overlay(rgb8, outside, rngs[5])
    return Phantom(Image.fromarray(rgb8, "RGB"), mask, label, seed,
                   _attributes(lesion, scene, field, mask, overlay))


def _attributes(lesion: Lesion, scene: Scene, field: Field, mask: np.ndarray, overlay: list[str]) -> dict:
    return {
        "paris": lesion.paris,
        "size_mm": lesion.size_mm,
        "nice": lesion.nice,
        "pit_pattern": lesion.pit_pattern,
        "location": lesion.location,
        "polyp_radius_px": round(float(lesion.radius), 2),
        "center": [round(float(lesion.cx), 2), round(float(lesion.cy), 2)],
        "orientation_deg": round(math.degrees(lesion.orientation), 1),
        "mask_area_px": int(mask.sum()),
        "field": {"shape": field.shape, "center": [round(field.cx, 2), round(field.cy, 2)],
                  "radius": round(field.radius, 2)},
        "lumen_visible": scene.lumen_visible,
        "light_dir": [round(float(v), 3) for v in scene.light],
        "overlay_text": overlay,
    }


# ---------------------------------------------------------------------------------------------
# Writing a set, and the command line
# ---------------------------------------------------------------------------------------------


def image_seed(seed: int, label: str, index: int) -> int:
    """Per-image seed derived deterministically from (set seed, label, index).

    Args:
        seed: Seed of the whole set (non-negative).
        label: Pathology label, one of ``LABELS``.
        index: Position of the image within its label, from 0.

    Returns:
        A seed in [0, 2**32).

    Raises:
        ValueError: If the label is unknown or the seed is negative.
    """
    sequence = np.random.SeedSequence([_validate_seed(seed), label_id(label), index])
    return int(sequence.generate_state(1)[0])


def write_phantom_set(
    out_dir: Path, n_per_label: int, seed: int = 0, size: tuple[int, int] = (320, 256)
) -> list[Path]:
    """Render ``n_per_label`` phantoms per label and write them with masks and a manifest.

    Layout: ``out_dir/<label>/phantom-<label>-00000.png`` (RGB), ``out_dir/masks/<label>/<same
    name>`` (mode "L", 0 or 255) and ``out_dir/PHANTOM.json`` describing every image. The manifest
    is removed first and written last (atomically), so it never describes missing files.

    Args:
        out_dir: Output folder; created if needed.
        n_per_label: Number of images per label, at least 1.
        seed: Seed of the set; per-image seeds come from ``image_seed``.
        size: (width, height) of each frame.

    Returns:
        Paths of the written images (not the masks), AD first, in index order.

    Raises:
        ValueError: If ``n_per_label`` < 1, or the seed or size is invalid.
    """
    if isinstance(n_per_label, bool) or not isinstance(n_per_label, (int, np.integer)) or n_per_label < 1:
        raise ValueError(f"n_per_label must be an integer >= 1; got {n_per_label!r}")
    width, height = _validate_size(size)
    seed = _validate_seed(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_FILE
    manifest_path.unlink(missing_ok=True)
    paths, entries = [], []
    for label in LABELS:
        (out_dir / label).mkdir(exist_ok=True)
        (out_dir / "masks" / label).mkdir(parents=True, exist_ok=True)
        for index in range(n_per_label):
            path, entry = _write_one(out_dir, label, index, image_seed(seed, label, index), (width, height))
            paths.append(path)
            entries.append(entry)
        logger.info("wrote %d %s phantoms to %s", n_per_label, label, out_dir / label)
    manifest = {
        "kind": "phantom", "generator": "generation.phantom", "version": MANIFEST_VERSION, "seed": seed,
        "size": [width, height], "n_per_label": int(n_per_label), "images": entries,
    }
    write_atomic(manifest_path, json.dumps(manifest, indent=1).encode("utf-8"))
    logger.info("wrote %s (%d images)", manifest_path, len(entries))
    return paths


def _write_one(out_dir: Path, label: str, index: int, seed: int, size: tuple[int, int]) -> tuple[Path, dict]:
    phantom = render_phantom(label, seed, size)
    name = f"phantom-{label}-{index:05d}.png"
    image_rel = Path(label) / name
    mask_rel = Path("masks") / label / name
    phantom.image.save(out_dir / image_rel)
    Image.fromarray(phantom.mask.astype(np.uint8) * 255, "L").save(out_dir / mask_rel)
    entry = {"file": image_rel.as_posix(), "label": label, "seed": seed, "mask": mask_rel.as_posix()}
    entry.update(phantom.attributes)
    return out_dir / image_rel, entry
