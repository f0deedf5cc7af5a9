"""Tests for common.files: the one image-suffix list, file identity, atomic writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from common.files import IMAGE_SUFFIXES, atomic_path, is_image_file, sha256_file, write_atomic, write_if_changed


def test_image_suffixes_are_lowercase_and_include_tiff() -> None:
    assert all(suffix == suffix.lower() and suffix.startswith(".") for suffix in IMAGE_SUFFIXES)
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff"} <= set(IMAGE_SUFFIXES)
    assert is_image_file(Path("a/B.TIF")) and is_image_file(Path("x.png"))
    assert not is_image_file(Path("notes.txt")) and not is_image_file(Path("png"))


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # more than one read chunk
    (tmp_path / "f.bin").write_bytes(data)
    assert sha256_file(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def test_atomic_path_replaces_the_target_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "out.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing at the target until the block ends
    assert target.read_bytes() == b"new"
    with pytest.raises(RuntimeError, match="half way"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("half way")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]  # no temporary left behind


def test_write_if_changed_writes_only_new_bytes(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    assert write_if_changed(target, b"one") is True
    mtime = target.stat().st_mtime_ns
    assert write_if_changed(target, b"one") is False and target.stat().st_mtime_ns == mtime
    assert write_if_changed(target, b"two") is True and target.read_bytes() == b"two"
    write_atomic(target, b"three")
    assert target.read_bytes() == b"three"


def test_concurrent_writers_of_one_file_never_collide(tmp_path: Path) -> None:
    import threading

    target = tmp_path / "features.npy"
    payloads = [bytes([i]) * 100_000 for i in range(8)]
    errors = []

    def write(data: bytes) -> None:
        try:
            for _ in range(20):
                write_atomic(target, data)
        except Exception as error:  # noqa: BLE001 - the test reports any failure below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert target.read_bytes() in payloads  # one writer's whole file, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["features.npy"]
