"""Tests for generation.datasets: finding and validating labelled image files."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from PIL import Image

from common.files import IMAGE_SUFFIXES, sha256_file
from generation.datasets import DatasetError, LabelledFile, scan_labelled


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def truncated_png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[:60])
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    write_image(root / "AD" / "b.png", (200, 0, 0))
    write_image(root / "AD" / "a.jpg", (150, 20, 20), size=(10, 7))
    write_image(root / "NonAD" / "c.png", (0, 200, 0))
    return root


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"x" * 3_000_000)  # larger than one read chunk
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_folder_is_scanned_by_label_then_name(folder: Path) -> None:
    result = scan_labelled(folder)
    assert [(f.path.name, f.label) for f in result.files] == [
        ("a.jpg", "AD"), ("b.png", "AD"), ("c.png", "NonAD"),
    ]
    first = result.files[0]
    assert isinstance(first, LabelledFile)
    assert (first.width, first.height) == (10, 7)
    assert first.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest()
    assert result.problems == [] and result.duplicates == []


def test_only_one_label_folder_is_enough(tmp_path: Path) -> None:
    write_image(tmp_path / "NonAD" / "x.png", (1, 1, 1))
    assert [f.label for f in scan_labelled(tmp_path).files] == ["NonAD"]


def test_corrupt_and_unsupported_files_are_problems_named_and_skipped(folder: Path) -> None:
    truncated_png(folder / "AD" / "broken.png")
    (folder / "NonAD" / "notes.txt").write_text("not an image")
    (folder / "NonAD" / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored, not a problem

    result = scan_labelled(folder)

    assert len(result.files) == 3
    reasons = {p.path.name: p.reason for p in result.problems}
    assert set(reasons) == {"broken.png", "notes.txt"}
    assert reasons["broken.png"].startswith("unreadable image:")
    assert "unsupported file type '.txt'" in reasons["notes.txt"]
    assert all(suffix in reasons["notes.txt"] for suffix in IMAGE_SUFFIXES)


def test_problems_are_logged(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    (folder / "AD" / "notes.txt").write_text("x")
    with caplog.at_level("WARNING", logger="generation.datasets"):
        scan_labelled(folder)
    assert "notes.txt" in caplog.text


def test_duplicates_by_hash_are_kept_once(folder: Path) -> None:
    (folder / "NonAD" / "copy.png").write_bytes((folder / "AD" / "b.png").read_bytes())
    (folder / "AD" / "z.png").write_bytes((folder / "AD" / "a.jpg").read_bytes())

    result = scan_labelled(folder)

    assert [f.path.name for f in result.files] == ["a.jpg", "b.png", "c.png"]
    assert result.duplicates == [
        (folder / "AD" / "z.png", folder / "AD" / "a.jpg"),
        (folder / "NonAD" / "copy.png", folder / "AD" / "b.png"),
    ]


def test_csv_source_with_relative_and_absolute_paths(folder: Path, tmp_path: Path) -> None:
    absolute = write_image(tmp_path / "elsewhere" / "d.png", (0, 0, 200))
    csv_path = folder / "labels.csv"
    csv_path.write_text(f"file,label,note\nAD/b.png,AD,x\n{absolute},NonAD,y\nNonAD/c.png,NonAD,\n")

    result = scan_labelled(csv_path)

    assert [(f.path, f.label) for f in result.files] == [
        (folder / "AD" / "b.png", "AD"), (absolute, "NonAD"), (folder / "NonAD" / "c.png", "NonAD"),
    ]


def test_csv_missing_file_is_a_problem(tmp_path: Path) -> None:
    write_image(tmp_path / "ok.png", (9, 9, 9))
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label\nok.png,AD\ngone.png,NonAD\n")
    result = scan_labelled(csv_path)
    assert [f.path.name for f in result.files] == ["ok.png"]
    assert [(p.path.name, p.reason) for p in result.problems] == [("gone.png", "file not found")]


def test_csv_bad_label_names_row_and_valid_labels(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", (9, 9, 9))
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("file,label\na.png,AD\na.png,Adenoma\n")
    with pytest.raises(DatasetError) as error:
        scan_labelled(csv_path)
    message = str(error.value)
    assert "labels.csv" in message
    assert "row 2 (line 3)" in message and "'Adenoma'" in message
    assert "AD, NonAD" in message


def test_csv_without_required_columns(tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("image,class\na.png,AD\n")
    with pytest.raises(DatasetError, match=r"lacks column\(s\) file, label.*file,label"):
        scan_labelled(csv_path)


def test_folder_without_label_subfolders(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"no AD/ or NonAD/ subfolder \(subfolders found: images\)"):
        scan_labelled(tmp_path)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_labelled(tmp_path / "nowhere")


def test_empty_label_folders_have_no_usable_images(tmp_path: Path) -> None:
    (tmp_path / "AD").mkdir()
    (tmp_path / "NonAD").mkdir()
    with pytest.raises(DatasetError, match="no usable images in .*expected image files in DIR/AD/"):
        scan_labelled(tmp_path)


def test_only_problems_means_no_usable_images(tmp_path: Path) -> None:
    truncated_png(tmp_path / "AD" / "broken.png")
    with pytest.raises(DatasetError, match="broken.png: unreadable image") as error:
        scan_labelled(tmp_path)
    assert [p.path.name for p in error.value.problems] == ["broken.png"]
