"""Files in the data folder: which image types the project reads, their identity, and atomic writes.

Every file the project writes goes through ``atomic_path`` (or ``write_atomic`` / ``write_if_changed``):
written under a temporary name beside its target and moved into place with ``os.replace``, so a
reader never sees half a file and a failure leaves none behind.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""Image file types read everywhere (registration, training data, metrics, audit), lowercase."""

PARTIAL_SUFFIX = ".partial"
"""What a file being written is called until it is complete (git-ignored)."""

_CHUNK_BYTES = 1 << 20


def is_image_file(path: Path) -> bool:
    """Whether ``path`` names one of ``IMAGE_SUFFIXES`` (case-insensitive); it is not opened."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes, read in chunks.

    Args:
        path: The file to hash.

    Returns:
        64 lowercase hex characters.

    Raises:
        OSError: If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``, else it is removed.

    The parent folder is created. The temporary name is unique (two writers of the same file, say
    two threads computing the same features, never share it; the last rename wins whole) and keeps
    the target's suffix (``.x.1a2b3c4d.partial.png``) so libraries that choose a format by suffix
    (Pillow, numpy) write the right one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``atomic_path`` (never a half-written file)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_if_changed(path: Path, data: bytes) -> bool:
    """``write_atomic`` unless the file already holds exactly these bytes. Returns whether it was written."""
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    write_atomic(path, data)
    return True


def new_temporary_folder(prefix: str) -> Path:
    """A new, empty folder in the system's temporary folder, named ``<prefix><random>`` (for a download)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def remove_temporary_folder(folder: object, prefix: str) -> None:
    """Delete a folder made by ``new_temporary_folder(prefix)``, and nothing else.

    Anything that is not a direct child of the temporary folder whose name starts with ``prefix``
    (a path a browser sent back, say) is left alone.
    """
    if not isinstance(folder, (str, Path)) or not str(folder):
        return
    path = Path(folder)
    if path.parent == Path(tempfile.gettempdir()) and path.name.startswith(prefix) and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
