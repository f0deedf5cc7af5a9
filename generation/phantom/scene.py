"""The colonoscopy phantom's scene: endoscopic field, lumen and light, mucosa, vessels, highlights, overlay.

``generation.phantom.frames.render_phantom`` draws a frame in steps: it samples the endoscopic
field, the lesion (``generation.phantom.lesion``) and the scene (lumen, light, mucosa colour), then
paints the mucosa, vessels, highlights, the lesion and the overlay text. Everything is a
deterministic function of the ``numpy.random.Generator`` it is given. Nothing here is public API:
the geometry records (``Field``, ``Scene``) and functions without a leading underscore are shared
with the phantom's other modules only.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

if TYPE_CHECKING:
    from generation.phantom.lesion import Lesion


def rgb_constant(r: float, g: float, b: float) -> np.ndarray:
    """A read-only float32 RGB colour."""
    colour = np.array([r, g, b], dtype=np.float32)
    colour.setflags(write=False)
    return colour


VESSEL_RED = rgb_constant(135.0, 30.0, 40.0)


@dataclass(frozen=True)
class Field:
    cx: float
    cy: float
    radius: float
    shape: str


@dataclass(frozen=True)
class Scene:
    lumen_visible: bool
    lumen_x: float
    lumen_y: float
    lumen_sigma: float
    lumen_depth: float
    light: np.ndarray  # unit vector (x, y, z), image y pointing down
    mucosa: np.ndarray  # base RGB colour


# ---------------------------------------------------------------------------------------------
# Small numeric helpers
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def smooth_noise(rng: np.random.Generator, width: int, height: int, cell: float) -> np.ndarray:
    """Band-limited noise with unit variance and feature size ``cell`` pixels (bicubic upsampling)."""
    gw = max(2, round(width / cell) + 2)
    gh = max(2, round(height / cell) + 2)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    up = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
    return (up - up.mean()) / (up.std() + 1e-6)


def blur(values: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a 2-D array in [0, 1] through Pillow (8-bit precision is plenty here)."""
    img = Image.fromarray(np.clip(values * 255.0, 0, 255).astype(np.uint8))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# Scene sampling
# ---------------------------------------------------------------------------------------------


def sample_field(rng: np.random.Generator, width: int, height: int) -> Field:
    radius = min(0.47 * height, 0.38 * width)
    # Processors put the field right of centre and the text in the left border.
    cx = radius + (width - 2 * radius) * rng.uniform(0.72, 0.95)
    cy = height / 2 + rng.uniform(-0.015, 0.015) * height
    shape = "rounded octagon" if rng.random() < 0.5 else "circle"
    return Field(cx, cy, radius, shape)


def field_distance(field: Field, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Distance from the field centre in units of the field radius; the field is ``< 1``."""
    dx = np.abs(xx - field.cx) / field.radius
    dy = np.abs(yy - field.cy) / field.radius
    if field.shape == "circle":
        return np.sqrt(dx * dx + dy * dy)
    # A p-norm (p = 16) of the octagon's half-planes gives an octagon with rounded corners.
    terms = [dx, dy / 0.94, (dx + dy) / 1.4]
    total = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), dtype=np.float32)
    for term in terms:
        term = term * term
        term = term * term
        term = term * term
        total += term * term
    return np.sqrt(np.sqrt(np.sqrt(np.sqrt(total))))


def sample_light_and_colour(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mucosa base colour (pink-orange) and a unit light vector from above (image y points down)."""
    mucosa = np.array([rng.uniform(196, 226), rng.uniform(98, 128), rng.uniform(76, 100)], dtype=np.float32)
    angle = -math.pi / 2 + rng.uniform(-0.6, 0.6)
    light = np.array([0.55 * math.cos(angle), 0.55 * math.sin(angle), 1.0], dtype=np.float32)
    return mucosa, light / np.linalg.norm(light)


def sample_scene(
    rng: np.random.Generator, field: Field, lesion: Lesion, light: np.ndarray, mucosa: np.ndarray
) -> Scene:
    # The lumen lies roughly opposite the lesion so that the lesion sits on the lit near wall.
    away = math.atan2(lesion.cy - field.cy, lesion.cx - field.cx) + math.pi + rng.uniform(-0.9, 0.9)
    visible = rng.random() < 0.75
    dist = field.radius * (rng.uniform(0.25, 0.62) if visible else rng.uniform(1.4, 2.1))
    sigma = field.radius * (rng.uniform(0.2, 0.34) if visible else 0.9)
    depth = rng.uniform(0.8, 0.95) if visible else rng.uniform(0.15, 0.3)
    lx, ly = field.cx + dist * math.cos(away), field.cy + dist * math.sin(away)
    if visible and math.hypot(lx - lesion.cx, ly - lesion.cy) < 2.2 * sigma + lesion.radius:
        visible, sigma, depth = False, 0.9 * field.radius, 0.2
        lx, ly = field.cx + 1.6 * field.radius * math.cos(away), field.cy + 1.6 * field.radius * math.sin(away)
    return Scene(visible, lx, ly, sigma, depth, light, mucosa)


# ---------------------------------------------------------------------------------------------
# Mucosa
# ---------------------------------------------------------------------------------------------


def draw_mucosa(
    rng: np.random.Generator, field: Field, scene: Scene, xx: np.ndarray, yy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mucosa colour with folds, plus the fold-crest map and the scene illumination map."""
    height, width = yy.shape[0], xx.shape[1]
    big = smooth_noise(rng, width, height, field.radius * 0.6)
    mid = smooth_noise(rng, width, height, field.radius * 0.12)
    hue = smooth_noise(rng, width, height, field.radius * 0.45)
    dist = np.sqrt((xx - scene.lumen_x) ** 2 + (yy - scene.lumen_y) ** 2) * (1 + 0.07 * big)
    # Haustral folds: arcs around the lumen, closer together towards it (perspective).
    k = rng.uniform(1.6, 2.4)
    u = k * np.log(dist + 0.12 * field.radius) + 0.1 * smooth_noise(rng, width, height, field.radius * 0.3)
    frac = u - np.floor(u)
    vis = np.clip(0.45 + 0.55 * smooth_noise(rng, width, height, field.radius * 0.35), 0, 1)
    crest = vis * np.exp(-(((frac - 0.32) / 0.14) ** 2))
    crease = vis * np.exp(-(((frac - 0.55) / 0.09) ** 2))
    shade = (1 + 0.12 * crest - 0.26 * crease) * (1 + 0.05 * mid) * (1 + 0.06 * big)
    rgb = np.empty((height, width, 3), dtype=np.float32)
    rgb[...] = scene.mucosa
    rgb[..., 1] *= 1 + 0.05 * hue  # drift between pink and orange
    rgb[..., 2] *= 1 + 0.04 * hue
    rgb *= shade[..., None]
    illum = 1 - scene.lumen_depth * np.exp(-((dist / max(scene.lumen_sigma, 1.0)) ** 2))
    illum -= 0.25 * scene.lumen_depth * np.exp(-((dist / (2.6 * max(scene.lumen_sigma, 1.0))) ** 2))
    return rgb, crest * np.clip(illum, 0, 1), illum


def vessel_layer(rng: np.random.Generator, field: Field, width: int, height: int) -> np.ndarray:
    """Branching submucosal vessels as a soft 0..1 layer."""
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    scale = field.radius / 120.0
    for _ in range(int(rng.integers(4, 9))):
        r = field.radius * 0.85 * math.sqrt(rng.random())
        a = rng.uniform(0, 2 * math.pi)
        start = (field.cx + r * math.cos(a), field.cy + r * math.sin(a))
        thick = max(1, round(scale * rng.uniform(0.8, 1.6)))
        _draw_vessel(draw, rng, start, rng.uniform(0, 2 * math.pi), int(rng.integers(10, 24)),
                     6.0 * scale, thick, int(rng.integers(90, 200)), depth=0)
    return blur(np.asarray(layer, dtype=np.float32) / 255.0, 0.6 * max(scale, 0.6))


def _draw_vessel(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, start: tuple[float, float], angle: float,
    n_steps: int, step: float, thick: int, fill: int, depth: int,
) -> None:
    """Draw one vessel as a smooth random walk, then recurse into thinner, shorter branches."""
    angles = angle + np.cumsum(rng.normal(0.0, 0.17, n_steps))
    steps = step * rng.uniform(0.6, 1.3, n_steps)
    xs = start[0] + np.concatenate([[0.0], np.cumsum(steps * np.cos(angles))])
    ys = start[1] + np.concatenate([[0.0], np.cumsum(steps * np.sin(angles))])
    draw.line(list(zip(xs.tolist(), ys.tolist())), fill=fill, width=thick, joint="curve")
    if depth >= 2 or n_steps < 5:
        return
    for _ in range(int(rng.integers(1, 4))):
        at = int(rng.integers(1, n_steps - 1))
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
        _draw_vessel(draw, rng, (xs[at], ys[at]), angles[at] + turn, max(3, n_steps // 2), step * 0.8,
                     max(1, thick - 1), int(fill * 0.85), depth + 1)


def mucosal_highlights(rng: np.random.Generator, field: Field, crest: np.ndarray) -> np.ndarray:
    """Small saturated specular blobs, preferring lit fold crests."""
    height, width = crest.shape
    r = 0.9 * field.radius * np.sqrt(rng.random(300))
    a = rng.uniform(0, 2 * math.pi, 300)
    xs = np.clip(field.cx + r * np.cos(a), 0, width - 1).astype(int)
    ys = np.clip(field.cy + r * np.sin(a), 0, height - 1).astype(int)
    score = crest[ys, xs] + 0.35 * rng.random(300)
    chosen = np.argsort(score)[::-1][: int(rng.integers(8, 22))]
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    scale = max(field.radius / 120.0, 0.3)
    for i in chosen:
        rx, ry = scale * rng.uniform(0.6, 2.6), scale * rng.uniform(0.5, 1.4)
        draw.ellipse([xs[i] - rx, ys[i] - ry, xs[i] + rx, ys[i] + ry], fill=255)
    return blur(np.asarray(layer, dtype=np.float32) / 255.0, 0.7 * scale)


# ---------------------------------------------------------------------------------------------
# Overlay
# ---------------------------------------------------------------------------------------------


def _overlay_strings(rng: np.random.Generator) -> list[str]:
    stamp = dt.datetime(2018, 1, 1) + dt.timedelta(days=int(rng.integers(0, 2900)),
                                                    seconds=int(rng.integers(8 * 3600, 18 * 3600)))
    mode = str(rng.choice(["WLI", "MM:WLI", "WLI"]))
    enhance = f"Eh:{rng.choice(['A', 'B'])}{rng.integers(1, 9)} Ce:{rng.integers(0, 4)}"
    scope = f"SN {rng.choice(list('ABCHKMZ'))}{rng.integers(100000, 999999)}"
    return [stamp.strftime("%d/%m/%Y"), stamp.strftime("%H:%M:%S"), mode, enhance, scope]


def draw_overlay(rgb8: np.ndarray, outside: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Burn processor-style text and a status bar into the black border (in place)."""
    height, width = outside.shape
    lines = _overlay_strings(rng)
    size = max(6, height // 32)
    font, step, margin = _font(size), size + 3, max(2, width // 80)
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    for row, text in enumerate(lines[:3]):
        draw.text((margin, margin + row * step), text, fill=225, font=font)
    for row, text in enumerate(reversed(lines[3:])):
        draw.text((margin, height - margin - 6 - (row + 1) * step), text, fill=200, font=font)
    bar_w = int(width * rng.uniform(0.1, 0.16))
    bar_y = height - margin - 3
    draw.rectangle([margin, bar_y, margin + bar_w, bar_y + 2], fill=95)
    draw.rectangle([margin, bar_y, margin + int(bar_w * rng.uniform(0.2, 0.9)), bar_y + 2], fill=170)
    box = margin + 3 * step + 2
    draw.rectangle([margin, box, margin + size, box + size // 2], outline=130)
    text_layer = np.asarray(layer, dtype=np.uint8) * outside  # never paint into the field
    np.maximum(rgb8, text_layer[..., None], out=rgb8)
    return lines

