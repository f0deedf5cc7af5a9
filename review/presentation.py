"""The presentation transform: what every image shown to a rater goes through, real or synthetic.

Real colonoscopy frames and generated images differ in cues that say nothing about the mucosa:
frame size and aspect, a black border with burned-in processor text (date, time, mode, scope
serial), a status bar, JPEG compression, metadata. A rater who sees those is not blind. So every
image is shown the same way:

1. Find the endoscopic field: the bright region inside the black border (``find_field``).
2. Take the largest circle inside the field's bounding box, shrunk by a small margin, and crop the
   square around it. A clipped or octagonal field gives the same circle as a round one.
3. Resize that square to the disc's diameter with one resampler (Lanczos, antialiased).
4. Draw a fixed neutral rim (``RIM_LEVEL`` grey, ``RIM_FRACTION`` of the disc wide, at least
   2 px) just inside the disc's edge, so the field's visible extent is the same in every image:
   a dark lumen or a vignetted edge would otherwise move where the field seems to end.
5. Paint everything outside the circle black with one fixed, antialiased disc, set in a black
   frame 5% of the output wide. Overlay text, status bars and the corners of the field (where
   processors put their text) disappear, and every presented image has exactly the same outline.
6. Encode as PNG stored without compression and without metadata chunks (``encode``): same pixels,
   same bytes, and the file's length depends only on the size (``encoded_length``), never on the
   content. A compressed PNG's length measures fine detail and noise and told real from
   synthetic files with an AUC near 1.

All functions are pure and deterministic. (Over 400 lines because the field finder, the
transform and its encoding are one contract, recorded by ``TRANSFORM_VERSION``.)
"""

from __future__ import annotations

import functools
import io
import logging
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from common.images import UnreadableImage as ImageReadError
from common.images import file_problem, to_rgb

logger = logging.getLogger(__name__)

TRANSFORM_VERSION = "field-disc-v2"
"""Changes whenever the transform's pixels could change; studies record it."""
DEFAULT_SIZE = 256
SIZE_RANGE = (16, 4096)
FIELD_MARGIN = 0.03
"""Fraction of the circle's radius given up so the field's dark, soft rim never shows."""
FRAME_FRACTION = 0.05
"""Width of the black frame around the disc, as a fraction of the output size (each side)."""
PNG_COMPRESS_LEVEL = 0
"""Stored (uncompressed) deflate blocks: the PNG's length is a function of its size alone."""
RIM_LEVEL = 48
"""Grey level of the fixed rim drawn just inside the disc's edge."""
RIM_FRACTION = 0.02
"""Width of that rim as a fraction of the disc's diameter (at least 2 px)."""
MASK_OUTLINE = (0, 255, 0)
"""Colour of a mask's outline on a presented image: pure green, which no mucosa has."""
_WORK_SIDE = 256  # the field is found on a copy at most this big: fast, and text strokes shrink
_DARK_FLOOR = 24.0  # luminance (0-255) below which a pixel is border, whatever the image
_DARK_FRACTION = 0.2  # ... or below this fraction of the image's bright level
_MIN_FIELD_FRACTION = 0.05  # a smaller bright component is not a field


class PresentationError(ValueError):
    """An image that cannot be presented, or a bad presentation setting."""


class UnreadableImage(PresentationError):
    """A file that is missing, empty, or not an image PIL can decode."""


class EmptyImage(PresentationError):
    """An image without pixels (zero width or height)."""


@dataclass(frozen=True)
class PresentationSettings:
    """Exactly how a study presents its images; stored with the study.

    Attributes:
        size: Side of the square output in pixels.
        resampler: The one resampler used (only ``"lanczos"``).
        format: The one output format (only ``"png"``).
        version: Version of the transform (``TRANSFORM_VERSION``).
        margin: Fraction of the field circle's radius cut away at its rim.
        frame: Width of the black frame around the disc, as a fraction of ``size``.
    """

    size: int = DEFAULT_SIZE
    resampler: str = "lanczos"
    format: str = "png"
    version: str = TRANSFORM_VERSION
    margin: float = FIELD_MARGIN
    frame: float = FRAME_FRACTION

    def __post_init__(self):
        _check_size(self.size)
        # A record must describe what was done: only the implemented choices are accepted.
        for name, allowed in (("resampler", "lanczos"), ("format", "png"), ("version", TRANSFORM_VERSION),
                              ("margin", FIELD_MARGIN), ("frame", FRAME_FRACTION)):
            if getattr(self, name) != allowed:
                raise PresentationError(f"{name} must be {allowed!r} in this version, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """The settings as JSON-ready values, with the zlib version, the rim and the byte length of every file."""
        return {**asdict(self), "png_compress_level": PNG_COMPRESS_LEVEL, "zlib": zlib.ZLIB_VERSION,
                "rim_level": RIM_LEVEL, "rim_fraction": RIM_FRACTION,
                "encoded_bytes": encoded_length(self.size, self.size)}


@dataclass(frozen=True)
class Field:
    """The endoscopic field of an image, in pixel coordinates of that image.

    Attributes:
        box: ``(x0, y0, x1, y1)`` bounding box of the field (``x1``, ``y1`` exclusive).
        bordered: False when no dark border was found and the field is the whole image.
        area_fraction: The area of the field's convex hull over the image's area. An endoscopic
            field is convex: a dark lumen at its rim is still field, not border.
    """

    box: tuple[float, float, float, float]
    bordered: bool
    area_fraction: float

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def radius(self) -> float:
        """Radius of the largest circle inside the box: the part of the field that is shown."""
        x0, y0, x1, y1 = self.box
        return min(x1 - x0, y1 - y0) / 2


def _check_size(size) -> int:
    low, high = SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not low <= size <= high:
        raise PresentationError(f"size must be an integer between {low} and {high} pixels, got {size!r}")
    return int(size)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _work_copy(luma: np.ndarray) -> tuple[np.ndarray, float]:
    """A copy at most ``_WORK_SIDE`` pixels on its longer side (area-averaged) and its scale."""
    height, width = luma.shape
    scale = min(1.0, _WORK_SIDE / max(height, width))
    if scale == 1.0:
        return luma, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(luma, "F").resize(size, Image.Resampling.BOX), dtype=np.float32)
    return small, size[0] / width


def _field_mask(small: np.ndarray) -> np.ndarray:
    """The bright component surrounded by border on a work copy; holes (a dark lumen) filled."""
    smooth = ndi.uniform_filter(small, size=3, mode="nearest")
    bright_level = float(np.percentile(smooth, 95))
    mask = smooth > max(_DARK_FLOOR, _DARK_FRACTION * bright_level)
    # Opening removes text strokes and thin status bars so they neither join nor form the field.
    radius = max(1, round(0.02 * min(small.shape)))
    disc = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    mask = ndi.binary_opening(mask, structure=disc)
    labels, count = ndi.label(mask)
    if count == 0:
        return mask
    sizes = ndi.sum_labels(mask, labels, index=np.arange(1, count + 1))
    return ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def _trim_status_bars(mask: np.ndarray, small: np.ndarray) -> np.ndarray:
    """The mask without a status bar joined to the field at its top or bottom.

    A processor's status bar is a dim band across the frame; where the field reaches the frame's
    edge the bar joins the field's component. Within 5% of the field's height from either end,
    the innermost row that is wide (half the widest or more) and dim (mean luminance inside the
    mask under 45% of the field's median row) is cut off with every row beyond it. A round field's
    narrow tip is never cut.
    """
    mask = mask.copy()
    widths = mask.sum(axis=1)
    means = (small * mask).sum(axis=1) / np.maximum(widths, 1)
    rows = np.flatnonzero(widths)
    reference = float(np.median(means[rows]))
    bar = (widths >= 0.5 * widths.max()) & (means < 0.45 * reference)
    limit = max(1, len(rows) // 20)
    for end in (rows[:limit], rows[::-1][:limit]):  # each ordered from the frame's edge inwards
        hits = np.flatnonzero(bar[end])
        if hits.size:
            mask[end[:hits[-1] + 1]] = False
    return mask


def hull_fraction(mask: np.ndarray) -> float:
    """Area of the convex hull of a boolean mask's pixels (as unit squares) over the mask's size."""
    if mask.sum() < 3:
        return float(mask.mean())
    rows, cols = np.nonzero(mask & ~ndi.binary_erosion(mask))
    corners = [(cols + dx, rows + dy) for dx in (0, 1) for dy in (0, 1)]
    points = np.concatenate([np.stack(c, axis=1) for c in corners]).astype(np.float64)
    try:
        return float(ConvexHull(points).volume / mask.size)  # in 2-D, "volume" is the area
    except QhullError:  # all points on a line
        return float(mask.mean())


def find_field(rgb: np.ndarray) -> Field:
    """Find the endoscopic field: the bright region surrounded by the black border.

    Luminance is area-averaged to a small copy, smoothed and thresholded (above a fixed floor and
    a fraction of the image's bright level); an opening removes overlay text and thin bars; the
    largest component with its holes filled is the field (its area measured by its convex hull),
    less any dim status bar joined to its top or bottom. Without a dark border (most of the
    image's edge is bright) or without a big enough component, the field is the whole image.

    Args:
        rgb: ``(height, width, 3)`` (or 4 channels) uint8 array.

    Returns:
        The ``Field``.

    Raises:
        EmptyImage: If the array has no pixels.
        PresentationError: If it is not an RGB(A) array.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise PresentationError(f"expected an RGB array of shape (height, width, 3), got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    if height == 0 or width == 0:
        raise EmptyImage(f"image has no pixels: shape {rgb.shape}")
    small, scale = _work_copy(_luminance(rgb))
    mask = _field_mask(small)
    edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
    fraction = hull_fraction(mask)
    if fraction < _MIN_FIELD_FRACTION or edge.mean() > 0.5:
        return Field((0.0, 0.0, float(width), float(height)), False, 1.0)
    mask = _trim_status_bars(mask, small)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    sx, sy = width / mask.shape[1], height / mask.shape[0]  # exact per-axis factors of the work copy
    box = (cols[0] * sx, rows[0] * sy, (cols[-1] + 1) * sx, (rows[-1] + 1) * sy)
    logger.debug("field %s at work scale %.3f", box, scale)
    return Field(tuple(float(v) for v in box), True, fraction)


@functools.lru_cache(maxsize=8)
def _disc(size: int, inset: float = 0.0) -> np.ndarray:
    """Antialiased disc centred in a ``size`` square, ``inset`` px inside its edge: coverage 0..1,
    4x4 supersampled; read-only."""
    sub = (np.arange(size * 4, dtype=np.float64) + 0.5) / 4 - size / 2
    inside = (sub[None, :] ** 2 + sub[:, None] ** 2) <= (size / 2 - inset) ** 2
    disc = inside.reshape(size, 4, size, 4).mean(axis=(1, 3))
    disc.setflags(write=False)
    return disc


def _rim_width(diameter: int) -> float:
    return max(2.0, round(RIM_FRACTION * diameter))


def to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An ``(height, width, 3)`` uint8 array from a PIL image or array (alpha composited on black).

    A PIL image is read as the metrics read it (``common.images.to_rgb``: 16-bit and floating-point
    images scaled, not clipped), after its EXIF orientation is applied.

    Raises:
        EmptyImage: If the image has no pixels.
        PresentationError: If an array is not uint8 grey, RGB or RGBA, or a floating-point
            image holds NaN or infinity.
    """
    if isinstance(image, Image.Image):
        image = ImageOps.exif_transpose(image)  # what a viewer shows, then the orientation tag is gone
        if image.width == 0 or image.height == 0:
            raise EmptyImage(f"image has no pixels: size {image.size}")
        try:
            return to_rgb(image)[0]
        except ImageReadError as error:
            raise PresentationError(str(error)) from error
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise PresentationError(f"expected a uint8 array (grey, RGB or RGBA), got {array.dtype} of shape {array.shape}")
    if array.size == 0:
        raise EmptyImage(f"image has no pixels: shape {array.shape}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 4:
        alpha = array[..., 3:].astype(np.float32) / 255
        return np.round(array[..., :3] * alpha).astype(np.uint8)
    return array


def present(image: Image.Image | np.ndarray, size: int = DEFAULT_SIZE, mask: np.ndarray | None = None) -> Image.Image:
    """The presented version of ``image``: its field's central circle on black, ``size`` square.

    The disc is ``size - 2 * round(FRAME_FRACTION * size)`` pixels across, centred, with the fixed
    rim (``RIM_LEVEL``, ``RIM_FRACTION``) along its edge.

    Args:
        image: A PIL image or uint8 array (grey, RGB or RGBA).
        size: Side of the output in pixels.
        mask: Optional boolean (height, width) polyp mask of ``image``: it goes through the same
            crop and resize and its outline is drawn on the result in ``MASK_OUTLINE`` (for
            studies that ask whether a mask fits its lesion).

    Returns:
        A new RGB ``size`` x ``size`` image without any ``info`` (no metadata to carry along).

    Raises:
        PresentationError: If ``size`` is out of range, the array is not an image, or the mask's
            shape is not the image's.
        EmptyImage: If the image has no pixels.
    """
    size = _check_size(size)
    rgb = to_rgb_array(image)
    field = find_field(rgb)
    (cx, cy), radius = field.centre, field.radius * (1 - FIELD_MARGIN)
    frame = round(FRAME_FRACTION * size)
    diameter = size - 2 * frame
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    square = Image.fromarray(rgb, "RGB").resize((diameter, diameter), Image.Resampling.LANCZOS, box=box)
    canvas = np.zeros((size, size, 3), dtype=np.float64)
    inside = _disc(diameter, _rim_width(diameter))[..., None]
    field = np.asarray(square, dtype=np.float64) * inside + RIM_LEVEL * (1 - inside)
    canvas[frame:frame + diameter, frame:frame + diameter] = field * _disc(diameter)[..., None]
    if mask is not None:
        outline = _mask_outline(mask, rgb.shape[:2], box, diameter)
        canvas[frame:frame + diameter, frame:frame + diameter][outline] = MASK_OUTLINE
    return Image.fromarray(np.round(canvas).astype(np.uint8), "RGB")


def _mask_outline(mask: np.ndarray, shape: tuple[int, int], box: tuple, diameter: int) -> np.ndarray:
    """The outline (about 1/100 of the disc wide, at least 1 px) of ``mask`` after the crop and resize."""
    from scipy import ndimage

    mask = np.asarray(mask)
    if mask.shape != shape:
        raise PresentationError(f"mask shape {mask.shape} differs from the image's {shape}; allowed: the same height and width")
    pixels = Image.fromarray(mask.astype(np.uint8) * 255, "L").resize((diameter, diameter), Image.Resampling.BILINEAR, box=box)
    inside = (np.asarray(pixels) >= 128) & (_disc(diameter) > 0.5)
    width = max(1, round(diameter / 100))
    return inside & ~ndimage.binary_erosion(inside, iterations=width, border_value=0)


def encode(image: Image.Image) -> bytes:
    """PNG bytes of ``image``, stored uncompressed, with only IHDR, IDAT and IEND chunks.

    Args:
        image: An RGB image (as returned by ``present``).

    Returns:
        The same bytes for the same pixels, whatever metadata ``image`` carried; always
        ``encoded_length(width, height)`` bytes long.
    """
    clean = Image.fromarray(np.asarray(image.convert("RGB"), dtype=np.uint8), "RGB")  # drops info, ICC, EXIF
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encoded_length(width: int, height: int) -> int:
    """The byte length of every ``encode``d RGB image of this size (measured once per size).

    Stored deflate blocks make the length a function of the raw scanlines' length alone, so one
    encoding of a black image gives it for every image of that size.
    """
    return _encoded_length(int(width), int(height))


@functools.lru_cache(maxsize=8)
def _encoded_length(width: int, height: int) -> int:
    return len(encode(Image.new("RGB", (width, height))))


def decode(data: bytes, name: str) -> Image.Image:
    """Decode image bytes fully; ``format`` and ``info`` (metadata) are kept.

    Args:
        data: The file's bytes.
        name: What to call the file in error messages (its path).

    Raises:
        UnreadableImage: Naming the file, if it is empty or not a decodable image.
        EmptyImage: Naming the file, if it has no pixels.
    """
    if not data:
        raise UnreadableImage(f"{name}: the file is empty")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError, SyntaxError, ValueError) as err:
        raise UnreadableImage(f"{name}: not a readable image ({err})") from err
    if image.width == 0 or image.height == 0:
        raise EmptyImage(f"{name}: the image has no pixels")
    return image


def read_image(path: Path | str) -> tuple[bytes, Image.Image]:
    """The bytes of the image file at ``path`` and the decoded image.

    Raises:
        UnreadableImage: Naming the file, if it is missing, not a regular file (a FIFO, a device,
            a link loop), empty or not a decodable image.
        EmptyImage: Naming the file, if it has no pixels.
    """
    problem = file_problem(path)
    if problem is not None:  # never open a FIFO or a device: reading one blocks or never ends
        raise UnreadableImage(f"{path}: {problem}")
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UnreadableImage(f"{path}: cannot read the file ({err.strerror or err})") from err
    return data, decode(data, str(path))


def present_file(path: Path | str, size: int = DEFAULT_SIZE, mask: np.ndarray | None = None) -> bytes:
    """``encode(present(image, size, mask))`` for the image file at ``path``.

    Raises:
        UnreadableImage, EmptyImage: Naming the file.
        PresentationError: If ``size`` is out of range.
    """
    _, image = read_image(path)
    try:
        return encode(present(image, size, mask))
    except EmptyImage as err:
        raise EmptyImage(f"{path}: {err}") from err
