"""Load an image set (a folder or a list of files) into validated uint8 RGB arrays.

Every image is identified by the sha256 of its file, the join key between rooms. Bad files are
handled one by one: convertible ones (grey-scale, alpha, 16 bit, floating point, palette) are
converted and noted, with the same reader and scaling as the presentation transform
(``common.images``); every other file is skipped and listed with the reason (unsupported types
such as ``.gif``, unreadable files, dangling links, link loops, FIFOs), so one broken file never
sinks a set and none is dropped without a word.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.files import IMAGE_SUFFIXES, is_image_file
from common.images import UnreadableImage, decode_bytes, file_problem, scan_image_files

logger = logging.getLogger(__name__)

_NAMES_IN_NOTE = 5
__all__ = ["ImageProblem", "ImageSetError", "LoadedImages", "UnreadableImage", "decode_image", "list_image_files",
           "load_images"]


class ImageSetError(ValueError):
    """An image set argument is missing, is not a folder or list of files, or holds no usable image."""


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
    """Find image files below ``directory``, recursively, in sorted order; every other file is logged.

    Args:
        directory: The folder to search.
        name: The argument name to use in error messages (e.g. ``"--real"``).

    Returns:
        Regular files whose suffix (case-insensitive) is one of ``common.files.IMAGE_SUFFIXES``.

    Raises:
        ImageSetError: If ``directory`` does not exist or is not a folder.
    """
    files, skipped = _scan(directory, name)
    for problem in skipped:
        logger.warning("%s: skipped %s", name, problem)
    return files


def _scan(directory: str | Path, name: str) -> tuple[list[Path], list[ImageProblem]]:
    root = Path(directory)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise ImageSetError(
            f"{name}: {str(directory)!r} {what}; expected a directory holding "
            f"{'/'.join(IMAGE_SUFFIXES)} images (searched recursively) or a list of image files"
        )
    files, skipped = scan_image_files(root)
    return files, [ImageProblem(str(path), reason) for path, reason in skipped]


def decode_image(data: bytes) -> tuple[np.ndarray, list[str]]:
    """Decode image bytes into an HxWx3 uint8 RGB array (``common.images.decode_bytes``).

    Returns:
        The array and a list of conversion kinds applied (e.g. ``"grey-scale converted to RGB"``).

    Raises:
        UnreadableImage: If the bytes are not a decodable image of a supported mode.
    """
    return decode_bytes(data)


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
    loaded = LoadedImages()
    if isinstance(source, (str, Path)):
        files, loaded.problems = _scan(source, name)
        where = f"directory {str(source)!r}"
    else:
        files = [Path(p) for p in source]
        where = f"list of {len(files)} path(s)"
    converted: dict[str, list[str]] = {}
    for path in files:
        _load_one(path, loaded, converted)
    if not loaded.images:
        found = f"; {len(loaded.problems)} file(s) skipped: {_first(map(str, loaded.problems))}" if loaded.problems else ""
        raise ImageSetError(
            f"{name}: {where} holds no usable image{found}; allowed: {'/'.join(IMAGE_SUFFIXES)} files "
            "(RGB, grey-scale, alpha, 16-bit or floating point are converted)"
        )
    loaded.notes = _summarise(loaded, converted)
    for note in loaded.notes:
        logger.info("%s: %s", name, note)
    for problem in loaded.problems:
        logger.warning("%s: skipped %s", name, problem)
    return loaded


def _load_one(path: Path, loaded: LoadedImages, converted: dict[str, list[str]]) -> None:
    """Read, hash and decode one file into ``loaded``, recording a problem instead of raising."""
    if not is_image_file(path):
        loaded.problems.append(ImageProblem(str(path), f"suffix {path.suffix!r} not in {IMAGE_SUFFIXES}"))
        return
    problem = file_problem(path)  # a FIFO is never opened: reading it would block
    if problem is not None:
        loaded.problems.append(ImageProblem(str(path), problem))
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
