"""Drawing internals of the colonoscopy phantom: scene sampling, mucosa, vessels, lesion, overlay.

``generation.phantom.render_phantom`` draws a frame in steps: it samples the endoscopic field, the
lesion and the scene (lumen, light, mucosa colour) with the ``sample_*`` functions here, then paints
the mucosa, vessels, highlights, the lesion and the overlay text with the drawing functions here.
Everything is a deterministic function of the ``numpy.random.Generator`` it is given. Nothing here
is public API: the geometry records (``Field``, ``Lesion``, ``Scene``) and functions without a
leading underscore are shared with ``generation.phantom`` only.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

LOCATIONS: tuple[str, ...] = (
    "caecum", "ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum",
)
"""Colonic segments a phantom polyp may be reported in."""


def _rgb_constant(r: float, g: float, b: float) -> np.ndarray:
    colour = np.array([r, g, b], dtype=np.float32)
    colour.setflags(write=False)
    return colour


# Hyperplastic polyps cluster in the distal colon; adenomas occur throughout.
_LOCATION_WEIGHTS = MappingProxyType(
    {"AD": (0.14, 0.18, 0.2, 0.14, 0.22, 0.12), "NonAD": (0.04, 0.06, 0.1, 0.1, 0.35, 0.35)}
)
_PALE = _rgb_constant(236.0, 184.0, 170.0)
VESSEL_RED = _rgb_constant(135.0, 30.0, 40.0)
_SURFACE_BROWN = _rgb_constant(125.0, 50.0, 38.0)


@dataclass(frozen=True)
class Field:
    cx: float
    cy: float
    radius: float
    shape: str


@dataclass(frozen=True)
class Lesion:
    paris: str
    size_mm: int
    nice: int
    pit_pattern: str
    location: str
    radius: float
    cx: float
    cy: float
    orientation: float
    harmonics: tuple[tuple[int, float, float], ...]
    height: float
    lobulation: float
    colour: np.ndarray  # AD: own colour; Non-AD: nominal colour of the paled mucosa
    paleness: float  # Non-AD: how far the underlying mucosa is blended towards pale
    stalk: tuple[float, float, float] | None  # (angle, length, half-width) for Paris 0-Ip


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


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: float) -> np.ndarray:
    """Band-limited noise with unit variance and feature size ``cell`` pixels (bicubic upsampling)."""
    gw = max(2, round(width / cell) + 2)
    gh = max(2, round(height / cell) + 2)
    grid = rng.standard_normal((gh, gw), dtype=np.float32)
    up = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
    return (up - up.mean()) / (up.std() + 1e-6)


def _value_noise(rng: np.random.Generator, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth value noise sampled at continuous grid coordinates (u, v); unit variance."""
    u = u - u.min()
    v = v - v.min()
    grid = rng.standard_normal((int(v.max()) + 2, int(u.max()) + 2), dtype=np.float32)
    i, j = u.astype(np.intp), v.astype(np.intp)
    fu, fv = u - i, v - j
    fu = fu * fu * (3 - 2 * fu)
    fv = fv * fv * (3 - 2 * fv)
    top = grid[j, i] * (1 - fu) + grid[j, i + 1] * fu
    bottom = grid[j + 1, i] * (1 - fu) + grid[j + 1, i + 1] * fu
    out = top * (1 - fv) + bottom * fv
    return (out - out.mean()) / (out.std() + 1e-6)


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


def _adenoma_traits(rng: np.random.Generator, mucosa: np.ndarray) -> dict:
    """AD: 8-20 mm, raised, lobulated, hyperaemic, tubular/branched pits (NICE 2)."""
    paris = str(rng.choice(["0-Is", "0-Ip", "0-IIa"], p=[0.5, 0.2, 0.3]))
    relief = {"0-Is": (0.55, 0.8), "0-Ip": (0.7, 0.95), "0-IIa": (0.2, 0.3)}[paris]
    redder = np.array([rng.uniform(1.0, 1.07), rng.uniform(0.68, 0.8), rng.uniform(0.72, 0.86)], dtype=np.float32)
    return {
        "size_mm": int(rng.integers(8, 21)), "paris": paris, "nice": 2,
        "pit_pattern": str(rng.choice(["Kudo IIIL", "Kudo IV"], p=[0.6, 0.4])),
        # A few broad lobes, finer irregularity falling off with harmonic order.
        "harmonics": tuple((k, rng.uniform(0.02, 0.08) * 3 / k, rng.uniform(0, 2 * math.pi)) for k in range(2, 8)),
        "colour": mucosa * redder, "paleness": 0.0, "relief": relief, "lobulation": rng.uniform(0.12, 0.25),
    }


def _hyperplastic_traits(rng: np.random.Generator, mucosa: np.ndarray) -> dict:
    """Non-AD: 2-6 mm, flat, smooth and round, pale, fine round dots or no pattern (NICE 1)."""
    paris = str(rng.choice(["0-IIa", "0-IIb"], p=[0.6, 0.4]))
    paleness = rng.uniform(0.25, 0.5)
    return {
        "size_mm": int(rng.integers(2, 7)), "paris": paris, "nice": 1, "pit_pattern": "Kudo II",
        "harmonics": ((2, rng.uniform(0.03, 0.12), rng.uniform(0, math.pi)), (3, rng.uniform(0.0, 0.02), 0.0)),
        "colour": mucosa + (_PALE - mucosa) * paleness, "paleness": paleness,
        "relief": {"0-IIa": (0.12, 0.2), "0-IIb": (0.03, 0.06)}[paris], "lobulation": 0.0,
    }


def sample_lesion(label: str, rng: np.random.Generator, field: Field, mucosa: np.ndarray) -> Lesion:
    location = str(rng.choice(LOCATIONS, p=_LOCATION_WEIGHTS[label]))
    traits = _adenoma_traits(rng, mucosa) if label == "AD" else _hyperplastic_traits(rng, mucosa)
    # Endoscopists approach small lesions, so the mm -> px mapping is compressive.
    radius = field.radius * (0.07 + 0.018 * traits["size_mm"]) * rng.uniform(0.92, 1.08)
    stalk = None
    if traits["paris"] == "0-Ip":
        stalk = (rng.uniform(0, 2 * math.pi), radius * rng.uniform(1.5, 2.0), radius * rng.uniform(0.32, 0.45))
    extent = _lesion_extent(radius, traits["harmonics"], stalk)
    if extent > 0.8 * field.radius:  # keep very large lesions inside the field
        scale = 0.8 * field.radius / extent
        radius *= scale
        stalk = None if stalk is None else (stalk[0], stalk[1] * scale, stalk[2] * scale)
        extent *= scale
    cx, cy = _place(rng, field, extent)
    return Lesion(
        paris=traits["paris"], size_mm=traits["size_mm"], nice=traits["nice"], pit_pattern=traits["pit_pattern"],
        location=location, radius=radius, cx=cx, cy=cy, orientation=rng.uniform(0, 2 * math.pi),
        harmonics=traits["harmonics"], height=radius * rng.uniform(*traits["relief"]),
        lobulation=traits["lobulation"], colour=np.clip(traits["colour"], 0, 255).astype(np.float32),
        paleness=traits["paleness"], stalk=stalk,
    )


def _lesion_extent(radius: float, harmonics: tuple, stalk: tuple[float, float, float] | None) -> float:
    extent = radius * (1 + sum(h[1] for h in harmonics))
    if stalk is not None:
        extent = max(extent, stalk[1] + stalk[2])
    return extent


def _place(rng: np.random.Generator, field: Field, extent: float) -> tuple[float, float]:
    reach = max(0.0, 0.86 * field.radius - extent)
    r = reach * math.sqrt(rng.uniform(0.05, 1.0))
    a = rng.uniform(0, 2 * math.pi)
    return field.cx + r * math.cos(a), field.cy + r * math.sin(a)


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
    big = _smooth_noise(rng, width, height, field.radius * 0.6)
    mid = _smooth_noise(rng, width, height, field.radius * 0.12)
    hue = _smooth_noise(rng, width, height, field.radius * 0.45)
    dist = np.sqrt((xx - scene.lumen_x) ** 2 + (yy - scene.lumen_y) ** 2) * (1 + 0.07 * big)
    # Haustral folds: arcs around the lumen, closer together towards it (perspective).
    k = rng.uniform(1.6, 2.4)
    u = k * np.log(dist + 0.12 * field.radius) + 0.1 * _smooth_noise(rng, width, height, field.radius * 0.3)
    frac = u - np.floor(u)
    vis = np.clip(0.45 + 0.55 * _smooth_noise(rng, width, height, field.radius * 0.35), 0, 1)
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
# Lesion
# ---------------------------------------------------------------------------------------------


def _lesion_geometry(
    les: Lesion, lx: np.ndarray, ly: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Head membership, rim blending weight, stalk membership and height map on a local grid."""
    theta = np.arctan2(ly, lx) - les.orientation
    rho = np.sqrt(lx * lx + ly * ly)
    outline = np.ones_like(theta)
    for k, amp, phase in les.harmonics:
        outline += amp * np.cos(k * theta + phase)
    t = rho / (les.radius * outline)
    head = t < 1.0
    # A steep-sided dome for raised adenomas, a gentle plateau for flat hyperplastic lesions.
    dome = np.clip(1 - t * t, 0, 1) ** (0.6 if les.nice == 2 else 1.0) * les.height
    if les.lobulation:
        lobes = _smooth_noise(rng, lx.shape[1], ly.shape[0], max(les.radius * 0.45, 2.0))
        dome *= 1 + les.lobulation * lobes
    # Adenomas have a crisp border; hyperplastic lesions fade into the surrounding mucosa.
    edge = (1 - t) * les.radius / 1.5 if les.nice == 2 else (1 - t) / 0.45
    rim = np.clip(edge + 0.2, 0, 1)
    stalk = np.zeros_like(head)
    if les.stalk is not None:
        stalk, stalk_rim, stalk_dome = _stalk_geometry(les, lx, ly)
        stalk &= ~head
        dome = np.maximum(dome, stalk_dome)
        rim = np.where(stalk, stalk_rim, rim)
    return head, rim, stalk, dome


def _stalk_geometry(les: Lesion, lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Membership, blending weight and height of a Paris 0-Ip stalk (a tapered capsule)."""
    angle, length, half = les.stalk
    dx, dy = math.cos(angle), math.sin(angle)
    s = np.clip(lx * dx + ly * dy, 0, length)
    d = np.sqrt((lx - s * dx) ** 2 + (ly - s * dy) ** 2) / (half * (1 - 0.2 * s / length))
    fade = np.clip((length - s) / (0.6 * length), 0, 1) ** 1.5  # the stalk merges into the wall
    member = (d < 1.0) & (fade > 0.06)
    rim = np.clip((1 - d) * half / 1.5 + 0.35, 0, 1) * fade
    dome = 0.35 * les.height * np.sqrt(np.clip(1 - d * d, 0, 1)) * (1 - 0.5 * s / length)
    return member, rim, dome


def _surface_pattern(
    les: Lesion, lx: np.ndarray, ly: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Darkening (pits), brown-vessel weight and whitening (dots) maps for the lesion surface."""
    c, s = math.cos(les.orientation), math.sin(les.orientation)
    u = lx * c + ly * s
    v = -lx * s + ly * c
    zero = np.zeros(np.broadcast_shapes(lx.shape, ly.shape), dtype=np.float32)
    if les.nice == 2:
        cell = max(2.2, les.radius * rng.uniform(0.11, 0.16))
        stretch = rng.uniform(2.4, 4.0) if les.pit_pattern == "Kudo IIIL" else rng.uniform(1.3, 1.8)
        # Zero crossings of band-limited noise form meandering, branching grooves.
        groove_noise = _value_noise(rng, (u + zero) / (cell * stretch), (v + zero) / cell)
        grooves = np.exp(-((groove_noise / 0.3) ** 2))
        vessel_noise = _value_noise(rng, (u + zero) / (cell * 2.2), (v + zero) / (cell * 1.6))
        vessels = np.exp(-((vessel_noise / 0.2) ** 2)) * rng.uniform(0.45, 0.7)
        return grooves * rng.uniform(0.5, 0.75), vessels, zero
    if rng.random() < 0.3:
        return zero, zero, zero
    # Fine, uniform round spots: the peaks of fine isotropic noise.
    cell = max(1.2, les.radius * rng.uniform(0.08, 0.11))
    dots = _value_noise(rng, (u + zero) / cell, (v + zero) / cell)
    return zero, zero, np.clip((dots - 0.9) / 0.6, 0, 1) * rng.uniform(0.12, 0.22)


def _shading(les: Lesion, dome: np.ndarray, light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lambert shading factor (1 on flat ground) and a Phong specular term from a height map."""
    gy, gx = np.gradient(dome)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    lambert = (-gx * light[0] - gy * light[1] + light[2]) / (norm * light[2])
    half = light + np.array([0, 0, 1], dtype=np.float32)
    half /= np.linalg.norm(half)
    n_dot_h = np.clip((-gx * half[0] - gy * half[1] + half[2]) / norm, 0, 1)
    specular = n_dot_h ** (60 if les.nice == 2 else 90)
    return np.clip(0.3 + 0.7 * lambert, 0.25, 1.35), specular * min(1.0, 3 * les.height / les.radius)


def draw_lesion(
    rgb: np.ndarray, spec: np.ndarray, les: Lesion, scene: Scene, rng: np.random.Generator
) -> np.ndarray:
    """Composite the lesion into ``rgb`` (and its highlights into ``spec``); return the mask."""
    height, width = rgb.shape[:2]
    pad = _lesion_extent(les.radius, les.harmonics, les.stalk) + les.height * 0.6 + 4
    x0, x1 = max(0, int(les.cx - pad)), min(width, int(les.cx + pad) + 2)
    y0, y1 = max(0, int(les.cy - pad)), min(height, int(les.cy + pad) + 2)
    lx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(les.cx)
    ly = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(les.cy)
    head, rim, stalk, dome = _lesion_geometry(les, lx, ly, rng)
    lesion = head | stalk
    shade, specular = _shading(les, dome, scene.light)
    pits, vessels, dots = (layer * head for layer in _surface_pattern(les, lx, ly, rng))
    region = rgb[y0:y1, x0:x1]
    if les.nice == 2:
        colour = np.where(stalk[..., None], 0.6 * les.colour + 0.4 * scene.mucosa, les.colour)
    else:  # a paled version of the mucosa underneath, so its texture shows through
        colour = region + (_PALE - region) * les.paleness
    colour = colour * (1 - pits[..., None] * np.array([0.22, 0.4, 0.32], dtype=np.float32))
    colour = colour + (_SURFACE_BROWN - colour) * vessels[..., None]
    colour = colour + (_PALE - colour) * dots[..., None]
    colour *= shade[..., None]
    alpha = (rim * lesion)[..., None]
    region[...] = region * (1 - alpha) + colour * alpha
    region *= (1 - _cast_shadow(les, head, scene.light))[..., None]
    glints = specular * (rng.random(specular.shape, dtype=np.float32) < 0.9)
    spec[y0:y1, x0:x1] = np.maximum(spec[y0:y1, x0:x1], np.clip((glints - 0.45) * 2.2, 0, 1) * head)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = lesion
    return mask


def _cast_shadow(les: Lesion, head: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Darkening (0..1) that the raised head casts away from the light onto its surroundings."""
    reach = max(1, round(les.height * 0.5))
    planar = float(np.hypot(light[0], light[1]))
    shift = (round(-light[1] / planar * reach), round(-light[0] / planar * reach))
    cast = blur(np.roll(head.astype(np.float32), shift, axis=(0, 1)), max(1.0, 0.12 * les.radius))
    strength = min(0.45, 0.9 * les.height / les.radius + 0.05)
    return strength * cast * ~head


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

