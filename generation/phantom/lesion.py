"""The colonoscopy phantom's polyp: its textbook traits (AD or Non-AD), geometry, surface, shading and compositing.

Adenomas (AD) and hyperplastic polyps (Non-AD) differ in size, colour, outline, Paris morphology
and NICE surface pattern; ``sample_lesion`` draws those traits and ``draw_lesion`` paints the polyp
into a frame and returns its exact mask. Everything is a deterministic function of the
``numpy.random.Generator`` it is given; nothing here is public API beyond ``generation.phantom``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from generation.phantom.scene import Field, Scene, blur, rgb_constant, smooth_noise

LOCATIONS: tuple[str, ...] = (
    "caecum", "ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum",
)
"""Colonic segments a phantom polyp may be reported in."""

# Hyperplastic polyps cluster in the distal colon; adenomas occur throughout.
_LOCATION_WEIGHTS = MappingProxyType(
    {"AD": (0.14, 0.18, 0.2, 0.14, 0.22, 0.12), "NonAD": (0.04, 0.06, 0.1, 0.1, 0.35, 0.35)}
)
_PALE = rgb_constant(236.0, 184.0, 170.0)
_SURFACE_BROWN = rgb_constant(125.0, 50.0, 38.0)


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


# ---------------------------------------------------------------------------------------------
# Traits and placement
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Geometry, surface and compositing
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
        lobes = smooth_noise(rng, lx.shape[1], ly.shape[0], max(les.radius * 0.45, 2.0))
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
