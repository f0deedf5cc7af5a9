"""One reader for image files: which files are images at all, and how any mode becomes uint8 RGB.

The presentation transform (``review.presentation``) and the metrics (``evaluation.images``) both
read pixels through ``to_rgb``, so a 16-bit or floating-point file looks the same to a rater as
to a metric:

* 16-bit (and 32-bit integer) grey: ``value / 257``, i.e. 0..65535 onto 0..255;
* floating point: 0..1 when no value exceeds 1, else 0..255 when none exceeds 255, else
  0..65535; clipped; a file holding NaN or infinity is refused;
* alpha composited on black; palette, grey and other modes converted to RGB.

``file_problem`` says why a path is not a regular file (a FIFO, a device, a socket, a symbolic
link loop, a dangling link), by ``os.stat`` alone: such a file is never opened, since reading a
FIFO blocks until someone writes to it.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from common.files import IMAGE_SUFFIXES, is_image_file

INTEGER_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
"""Pillow's modes for 16-bit (and 32-bit integer) grey images; read as 0..65535."""
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
"""What Pillow raises for files it cannot identify or decode (truncated, corrupt, too large)."""

_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))
_REFUSED = ("a FIFO", "a character device", "a block device", "a socket", "a symbolic link loop")


class UnreadableImage(ValueError):
    """Bytes that do not decode into an image of a supported mode."""


def file_problem(path: Path | str) -> str | None:
    """Why ``path`` is not a regular file that can be read, or None when it is one.

    Only ``os.stat`` is called: nothing is opened, so a FIFO cannot block the caller.

    Returns:
        None, or a reason such as ``"a FIFO (named pipe); only regular image files are read"``.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop (the link never reaches a file)"
        if os.path.islink(path):
            return f"a dangling symbolic link (its target {os.readlink(path)!r} does not exist)"
        return f"cannot be read ({error.strerror or error})"
    for test, what in _SPECIAL:
        if test(mode):
            return f"{what}; only regular image files are read"
    return None


def refused_file(path: Path | str) -> str | None:
    """``file_problem`` when it makes a whole source unusable (a FIFO, a device, a socket, a link loop), else None.

    Such a file is never a mistake to skip quietly: reading it blocks or never ends, so a command
    refuses the source with one line before it reads or writes anything.
    """
    problem = file_problem(path)
    return problem if problem is not None and problem.startswith(_REFUSED) else None


def scan_image_files(folder: Path | str) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every entry below ``folder`` (recursively, symbolic links to folders not followed), split.

    Returns:
        The regular image files (by suffix, ``IMAGE_SUFFIXES``) in sorted order, and
        ``(path, reason)`` for every other entry that is not a folder: unsupported types, FIFOs,
        devices, dangling links and link loops.
    """
    files, skipped = [], []
    for root, dirs, names in os.walk(folder, followlinks=False):
        linked = [name for name in dirs if os.path.islink(os.path.join(root, name))]
        for name in sorted(names + linked):  # a link to a folder is reported, not entered
            path = Path(root) / name
            problem = file_problem(path)
            if problem is None and not is_image_file(path):
                shown = repr(path.suffix) if path.suffix else "(no suffix)"
                problem = f"unsupported file type {shown} (supported: {', '.join(IMAGE_SUFFIXES)})"
            if problem is None:
                files.append(path)
            else:
                skipped.append((path, problem))
    return sorted(files), sorted(skipped)


def decode_bytes(data: bytes) -> tuple[np.ndarray, list[str]]:
    """Decode image bytes into an (H, W, 3) uint8 RGB array with ``to_rgb``.

    Returns:
        The array and the conversions applied (e.g. ``"16-bit scaled to 8 bit"``).

    Raises:
        UnreadableImage: If the bytes are not a decodable image of a supported mode.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb(image)
    except UnreadableImage:
        raise
    except DECODE_ERRORS as exc:
        raise UnreadableImage(f"not a readable image ({type(exc).__name__}: {exc})") from exc


def to_rgb(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """An (H, W, 3) uint8 RGB array of a decoded PIL image of any common mode, and what was done.

    Raises:
        UnreadableImage: For a floating-point image holding NaN or infinity.
    """
    mode = image.mode
    if mode in INTEGER_WIDE_MODES:
        grey = np.clip(np.round(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), ["16-bit scaled to 8 bit", "grey-scale converted to RGB"]
    if mode == "F":
        return _float_to_rgb(np.asarray(image, dtype=np.float64))
    kinds: list[str] = []
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        kinds.append("alpha channel removed (composited on black)")
        if mode in ("LA", "La"):
            kinds.append("grey-scale converted to RGB")
        return np.round(rgba[:, :, :3] * rgba[:, :, 3:4] / 255.0).astype(np.uint8), kinds
    if mode in ("L", "1"):
        kinds.append("grey-scale converted to RGB")
    elif mode != "RGB":
        kinds.append(f"mode {mode} converted to RGB")
    return np.asarray(image.convert("RGB"), dtype=np.uint8), kinds


def _float_to_rgb(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    if not np.isfinite(values).all():
        raise UnreadableImage("floating-point image holds NaN or infinite values; allowed: finite values "
                              "in 0..1, 0..255 or 0..65535")
    top = float(values.max(initial=0.0))
    full, what = (1.0, "0..1") if top <= 1.0 else (255.0, "0..255") if top <= 255.0 else (65535.0, "0..65535")
    grey = np.clip(np.round(values * (255.0 / full)), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2), [f"floating point ({what}) scaled to 8 bit",
                                                    "grey-scale converted to RGB"]
