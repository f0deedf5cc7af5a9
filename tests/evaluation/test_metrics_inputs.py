"""Bad input is handled per file: converted and noted, or skipped and reported; metrics still run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluation.images import ImageSetError, load_images
from evaluation.metrics import MetricSettings, evaluate_sets
from tests.evaluation.conftest import write_image_set


def _odd_folder(root):
    """One file of each awkward kind next to three good ones."""
    write_image_set(root, 3, size=(32, 32), seed=1)
    Image.fromarray(np.full((20, 24), 200, np.uint8), mode="L").save(root / "grey.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 128
    Image.fromarray(rgba, mode="RGBA").save(root / "alpha.png")
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(root / "deep.png")
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(root / "palette.png", transparency=0)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / "wide.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notes.txt").write_text("ignored: not an image suffix")
    return root


def test_awkward_files_are_converted_noted_or_skipped(tmp_path):
    loaded = load_images(_odd_folder(tmp_path / "odd"))
    by_name = {p.rsplit("/", 1)[-1]: im for p, im in zip(loaded.paths, loaded.images)}
    assert len(loaded) == 8 and all(im.dtype == np.uint8 and im.shape[2] == 3 for im in loaded.images)
    assert by_name["grey.png"].shape == (20, 24, 3) and (by_name["grey.png"] == 200).all()
    assert tuple(by_name["alpha.png"][0, 0]) == (100, 0, 0)
    assert (by_name["deep.png"] == 255).all()
    assert [p.path.rsplit("/", 1)[-1] for p in loaded.problems] == ["notes.txt", "broken.png"]
    assert "unsupported file type '.txt'" in loaded.problems[0].reason
    assert "not a readable image" in loaded.problems[1].reason
    notes = " | ".join(loaded.notes)
    for expected in ("grey-scale converted to RGB", "alpha channel removed", "16-bit scaled to 8 bit",
                     "mixed sizes", "the extractor resizes each image"):
        assert expected in notes
    assert all(len(sha) == 64 for sha in loaded.sha256s)


def test_missing_empty_and_unusable_sets_raise_clear_errors(tmp_path):
    with pytest.raises(ImageSetError, match=r"--real: '.*nowhere' does not exist; expected a directory"):
        load_images(tmp_path / "nowhere", name="--real")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageSetError, match=r"--fake: directory '.*empty' holds no usable image; allowed: "):
        load_images(tmp_path / "empty", name="--fake")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(ImageSetError, match=r"1 file\(s\) skipped: .*x.jpg: not a readable image"):
        load_images(tmp_path / "bad")


def test_a_list_of_paths_keeps_order_and_reports_missing_files(tmp_path):
    folder = write_image_set(tmp_path / "set", 2, seed=2)
    paths = [folder / "img-001.png", tmp_path / "gone.png", folder / "img-000.png", tmp_path / "a.gif"]
    loaded = load_images(paths)
    assert loaded.paths == [str(paths[0]), str(paths[2])]
    assert [p.path for p in loaded.problems] == [str(paths[1]), str(paths[3])]


def test_report_on_awkward_small_sets_computes_what_it_can(tmp_path, tiny_extractor):
    real = _odd_folder(tmp_path / "real")
    fake = write_image_set(tmp_path / "fake", 3, size=(24, 24), seed=9)
    report = evaluate_sets(real, fake, tiny_extractor, settings=MetricSettings(n_boot=5, k=5))
    assert (report.n_real, report.n_fake) == (8, 3)
    assert report.fid is not None and report.kid_mean is not None and report.kid_subset_size == 3
    assert report.precision is None and "fake has 3 sample(s); allowed: at least 6" in report.skipped["prdc"]
    assert any("broken.png" in p for p in report.problems)
    assert any(n.startswith("real: ") and "mixed sizes" in n for n in report.notes)
    assert any("clamped from 1000 to 3" in w for w in report.warnings)
    assert report.extractor == "tiny" and report.preprocessing == tiny_extractor.preprocessing


def test_tiff_images_are_read_from_a_folder_and_a_list(tmp_path):
    """The same image types as registration (``common.files.IMAGE_SUFFIXES``): .tif/.tiff are found and decoded."""
    folder = write_image_set(tmp_path / "tiff", 2, size=(24, 16), seed=5, suffix=".tif")
    write_image_set(tmp_path / "tiff" / "more", 1, size=(24, 16), seed=6, suffix=".TIFF")
    loaded = load_images(folder)
    assert [p.rsplit("/", 1)[-1] for p in loaded.paths] == ["img-000.tif", "img-001.tif", "img-000.TIFF"]
    assert not loaded.problems and all(im.shape == (16, 24, 3) for im in loaded.images)
    expected = np.random.default_rng(5).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    assert (load_images([folder / "img-000.tif"]).images[0] == expected).all()


def test_every_skipped_file_is_listed_with_the_reason(tmp_path):
    import os

    folder = write_image_set(tmp_path / "set", 2, seed=3)
    Image.new("RGB", (8, 8)).save(folder / "anim.gif")
    (folder / "dangling.png").symlink_to(tmp_path / "gone.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    os.mkfifo(folder / "pipe.png")  # reading it would block for ever
    (folder / "linked").symlink_to(folder)  # a link to a folder is listed, not walked into
    loaded = load_images(folder)
    assert len(loaded) == 2
    reasons = {p.path.rsplit("/", 1)[-1]: p.reason for p in loaded.problems}
    assert "unsupported file type '.gif'" in reasons["anim.gif"]
    assert "dangling symbolic link" in reasons["dangling.png"]
    assert "symbolic link loop" in reasons["loop.png"]
    assert "FIFO" in reasons["pipe.png"]
    assert "linked" in reasons
    listed = load_images([folder / "pipe.png", folder / "loop.png", folder / "img-000.png"])
    assert len(listed) == 1 and [p.reason.split(";")[0] for p in listed.problems] == [
        "a FIFO (named pipe)", "a symbolic link loop (the link never reaches a file)"]


def test_float_images_are_scaled_not_refused(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 32, dtype=np.float32), (8, 1))
    Image.fromarray(ramp).save(tmp_path / "unit.tif")
    Image.fromarray(ramp * 255).save(tmp_path / "byte.tif")
    Image.fromarray(np.full((4, 4), np.nan, np.float32)).save(tmp_path / "nan.tif")
    loaded = load_images(tmp_path)
    assert len(loaded) == 2 and np.array_equal(loaded.images[0], loaded.images[1])
    assert loaded.images[0][0, -1, 0] == 255 and loaded.images[0][0, 0, 0] == 0
    assert "NaN or infinite" in loaded.problems[0].reason
    assert any("floating point (0..1) scaled to 8 bit" in note for note in loaded.notes)
