"""Load an image set (a folder or a list of files) into validated uint8 RGB arrays.

Every image is identified by the sha256 of its file, the join key between rooms. Bad files are
handled one by one: convertible ones (grey-scale, alpha, 16 bit, palette) are converted and noted;
unreadable ones are skipped and reported with the reason, so one broken file never sinks a set.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_NAMES_IN_NOTE = 5


class ImageSetError(ValueError):
    """An image set argument is missing, is not a folder or list of files, or holds no usable image."""


class UnreadableImage(ValueError):
    """One file could not be decoded into an RGB image."""


@dataclass(frozen=True)
class ImageProblem:
    """A file that was skipped, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class LoadedImages:
    """A validated image set, in a stable order (sorted paths for a folder, given order for a list).

    Attributes:
        paths: Path of each loaded file.
        sha256s: sha256 hex digest of each file's bytes.
        images: HxWx3 uint8 RGB arrays; sizes may differ.
        problems: Files that were skipped, with the reason.
        notes: Human-readable notes on conversions and on the set (mixed sizes, duplicates).
    """

    paths: list[str] = field(default_factory=list)
    sha256s: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    problems: list[ImageProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def sizes(self) -> set[tuple[int, int]]:
        """The distinct (height, width) sizes in the set."""
        return {(int(im.shape[0]), int(im.shape[1])) for im in self.images}


def list_image_files(directory: str | Path, *, name: str = "directory") -> list[Path]:
    """Find image files below ``directory``, recursively, in sorted order.

    Args:
        directory: The folder to search.
        name: The argument name to use in error messages (e.g. ``"--real"``).

    Returns:
        Paths whose suffix (case-insensitive) is one of ``IMAGE_SUFFIXES``.

    Raises:
        ImageSetError: If ``directory`` does not exist or is not a folder.
    """
    root = Path(directory)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise ImageSetError(
            f"{name}: {str(directory)!r} {what}; expected a directory holding "
            f"{'/'.join(IMAGE_SUFFIXES)} images (searched recursively) or a list of image files"
        )
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def decode_image(data: bytes) -> tuple[np.ndarray, list[str]]:
    """Decode image bytes into an HxWx3 uint8 RGB array.

    Args:
        data: The file's bytes.

    Returns:
        The array and a list of conversion kinds applied (e.g. ``"grey-scale converted to RGB"``).

    Raises:
        UnreadableImage: If the bytes are not a decodable image of a supported mode.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return _to_rgb(img)
    except UnreadableImage:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"not a readable image ({type(exc).__name__}: {exc})") from exc


def _to_rgb(img: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Convert a decoded PIL image of any common mode to uint8 RGB, listing what was done."""
    kinds: list[str] = []
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES:
        # PIL keeps 16-bit grey PNGs as integer modes; scale 0..65535 down to 0..255.
        wide = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)
        kinds += ["16-bit scaled to 8 bit", "grey-scale converted to RGB"]
        return np.repeat(grey[:, :, None], 3, axis=2), kinds
    if mode == "P":
        has_alpha = "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64)
        rgb = np.round(rgba[:, :, :3] * rgba[:, :, 3:4] / 255.0)
        kinds.append("alpha channel removed (composited on black)")
        if mode in ("LA", "La"):
            kinds.append("grey-scale converted to RGB")
        return rgb.astype(np.uint8), kinds
    if mode in ("L", "1"):
        kinds.append("grey-scale converted to RGB")
    elif mode == "F":
        raise UnreadableImage("floating-point (mode 'F') images are not supported; save as 8- or 16-bit")
    elif mode != "RGB":
        kinds.append(f"mode {mode} converted to RGB")
    return np.asarray(img.convert("RGB"), dtype=np.uint8), kinds


def load_images(source: str | Path | Sequence[str | Path], *, name: str = "source") -> LoadedImages:
    """Load an image set from a folder (recursive) or from a list of file paths.

    Args:
        source: A directory, or a sequence of image file paths.
        name: The argument name to use in messages (e.g. ``"--fake"``).

    Returns:
        The loaded set; skipped files are in ``problems`` and conversions in ``notes``.

    Raises:
        ImageSetError: If the directory is missing, no file is given, or no file is usable.
    """
    if isinstance(source, (str, Path)):
        files = list_image_files(source, name=name)
        where = f"directory {str(source)!r}"
    else:
        files = [Path(p) for p in source]
        where = f"list of {len(files)} path(s)"
    loaded = LoadedImages()
    converted: dict[str, list[str]] = {}
    for path in files:
        _load_one(path, loaded, converted)
    if not loaded.images:
        found = f"; {len(loaded.problems)} file(s) skipped: {_first(map(str, loaded.problems))}" if loaded.problems else ""
        raise ImageSetError(
            f"{name}: {where} holds no usable image{found}; allowed: {'/'.join(IMAGE_SUFFIXES)} files "
            "(RGB, grey-scale, alpha or 16-bit are converted)"
        )
    loaded.notes = _summarise(loaded, converted)
    for note in loaded.notes:
        logger.info("%s: %s", name, note)
    for problem in loaded.problems:
        logger.warning("%s: skipped %s", name, problem)
    return loaded


def _load_one(path: Path, loaded: LoadedImages, converted: dict[str, list[str]]) -> None:
    """Read, hash and decode one file into ``loaded``, recording a problem instead of raising."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        loaded.problems.append(ImageProblem(str(path), f"suffix {path.suffix!r} not in {IMAGE_SUFFIXES}"))
        return
    try:
        data = path.read_bytes()
        image, kinds = decode_image(data)
    except (OSError, UnreadableImage) as exc:
        loaded.problems.append(ImageProblem(str(path), str(exc)))
        return
    if image.shape[0] == 0 or image.shape[1] == 0:
        loaded.problems.append(ImageProblem(str(path), f"empty image of size {image.shape[1]}x{image.shape[0]}"))
        return
    loaded.paths.append(str(path))
    loaded.sha256s.append(hashlib.sha256(data).hexdigest())
    loaded.images.append(image)
    for kind in kinds:
        converted.setdefault(kind, []).append(path.name)


def _summarise(loaded: LoadedImages, converted: dict[str, list[str]]) -> list[str]:
    """Turn per-file conversions and set-level facts into short notes."""
    notes = [f"{len(names)} image(s): {kind}: {_first(names)}" for kind, names in converted.items()]
    sizes = sorted(loaded.sizes)
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sizes[:_NAMES_IN_NOTE])
        notes.append(f"mixed sizes ({len(sizes)} distinct, WxH: {shown}); the extractor resizes each image")
    duplicates = len(loaded.sha256s) - len(set(loaded.sha256s))
    if duplicates:
        notes.append(f"{duplicates} file(s) duplicate another file's content (same sha256); all are counted")
    return notes


def _first(names) -> str:
    """The first few names, comma-separated, with a count of the rest."""
    names = list(names)
    shown = ", ".join(names[:_NAMES_IN_NOTE])
    return shown + (f" (+{len(names) - _NAMES_IN_NOTE} more)" if len(names) > _NAMES_IN_NOTE else "")
