"""Tests for generation.phantom: determinism, frame layout, class differences, set writing, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from common.labels import LABELS
from generation.phantom.__main__ import main
from generation.phantom.frames import Phantom, render_phantom, write_phantom_set

SIZE = (320, 256)


def _outside_field(phantom: Phantom, margin: float = 1.08) -> np.ndarray:
    """Pixels safely outside the endoscopic field (beyond its circumscribed circle)."""
    width, height = phantom.image.size
    cx, cy = phantom.attributes["field"]["center"]
    radius = phantom.attributes["field"]["radius"]
    yy, xx = np.mgrid[0:height, 0:width]
    return np.hypot(xx - cx, yy - cy) > margin * radius


@pytest.fixture(scope="module")
def samples() -> dict[str, list[Phantom]]:
    return {label: [render_phantom(label, seed) for seed in range(20)] for label in LABELS}


@pytest.mark.parametrize("label", LABELS)
def test_same_seed_gives_identical_frames(label):
    first, second = render_phantom(label, 7), render_phantom(label, 7)
    assert first.image.tobytes() == second.image.tobytes()
    assert np.array_equal(first.mask, second.mask)
    assert first.attributes == second.attributes


def test_different_seed_gives_different_frames():
    assert render_phantom("AD", 1).image.tobytes() != render_phantom("AD", 2).image.tobytes()


def test_image_and_mask_layout():
    phantom = render_phantom("NonAD", 3, size=(200, 150))
    assert phantom.image.mode == "RGB" and phantom.image.size == (200, 150)
    assert phantom.mask.shape == (150, 200) and phantom.mask.dtype == bool
    assert phantom.mask.any()
    assert phantom.label == "NonAD" and phantom.seed == 3
    assert phantom.attributes["mask_area_px"] == int(phantom.mask.sum())


def test_minimum_size_renders():
    phantom = render_phantom("AD", 0, size=(64, 64))
    assert phantom.image.size == (64, 64) and phantom.mask.any()


def test_attributes_use_clinical_vocabulary_and_are_json(samples):
    for label, phantoms in samples.items():
        for phantom in phantoms:
            attrs = json.loads(json.dumps(phantom.attributes))
            assert attrs["location"] in {
                "caecum", "ascending colon", "transverse colon", "descending colon", "sigmoid colon", "rectum",
            }
            if label == "AD":
                assert attrs["paris"] in {"0-Is", "0-Ip", "0-IIa"} and attrs["nice"] == 2
                assert 8 <= attrs["size_mm"] <= 20
            else:
                assert attrs["paris"] in {"0-IIa", "0-IIb"} and attrs["nice"] == 1
                assert 2 <= attrs["size_mm"] <= 6
            assert len(attrs["overlay_text"]) >= 3 and len(attrs["center"]) == 2


def test_outside_field_is_black_except_overlay(samples):
    for phantom in samples["AD"][:5] + samples["NonAD"][:5]:
        pixels = np.asarray(phantom.image).max(axis=2)
        outside = _outside_field(phantom)
        width = phantom.image.size[0]
        right = outside.copy()
        right[:, : width // 2] = False  # the overlay lives in the left border
        assert pixels[right].max() < 20
        assert (pixels[outside] < 20).mean() > 0.9
        # Corners: the right-hand ones are black, and no corner is mostly bright.
        assert pixels[:8, -8:].max() < 20 and pixels[-8:, -8:].max() < 20
        assert (pixels[:8, :8] < 20).mean() > 0.5


def test_overlay_text_is_burned_into_the_border(samples):
    for phantom in samples["NonAD"][:5]:
        pixels = np.asarray(phantom.image).max(axis=2)
        assert (pixels[_outside_field(phantom)] > 120).sum() > 30
        assert not phantom.mask[_outside_field(phantom, margin=1.0)].any()


def test_field_interior_is_bright(samples):
    phantom = samples["AD"][0]
    width, height = phantom.image.size
    cx, cy = (int(v) for v in phantom.attributes["field"]["center"])
    centre = np.asarray(phantom.image)[cy - 20 : cy + 20, cx - 20 : cx + 20].astype(float)
    assert centre.mean() > 40


def test_adenomas_are_larger_and_redder(samples):
    def stats(phantoms):
        areas, redness = [], []
        for phantom in phantoms:
            rgb = np.asarray(phantom.image).astype(float)
            areas.append(phantom.mask.sum())
            redness.append((rgb[..., 0] - rgb[..., 1])[phantom.mask].mean())
        return np.mean(areas), np.mean(redness)

    ad_area, ad_red = stats(samples["AD"])
    non_area, non_red = stats(samples["NonAD"])
    assert ad_area > 2 * non_area
    assert ad_red > non_red + 10


def test_unknown_label_lists_valid_labels():
    with pytest.raises(ValueError, match="AD.*NonAD"):
        render_phantom("SSL", 0)


@pytest.mark.parametrize("size", [(63, 256), (320, 10), (0, 0), (320,), "320x256"])
def test_bad_size_is_refused(size):
    with pytest.raises(ValueError, match="size"):
        render_phantom("AD", 0, size=size)


def test_negative_seed_is_refused():
    with pytest.raises(ValueError, match="seed"):
        render_phantom("AD", -1)


def test_write_phantom_set(tmp_path):
    paths = write_phantom_set(tmp_path, n_per_label=2, seed=5, size=(96, 80))
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        "AD/phantom-AD-00000.png", "AD/phantom-AD-00001.png",
        "NonAD/phantom-NonAD-00000.png", "NonAD/phantom-NonAD-00001.png",
    ]
    manifest = json.loads((tmp_path / "PHANTOM.json").read_text())
    assert manifest["kind"] == "phantom" and manifest["generator"] == "generation.phantom"
    assert manifest["version"] == 1 and manifest["seed"] == 5
    assert manifest["size"] == [96, 80] and manifest["n_per_label"] == 2
    assert [entry["file"] for entry in manifest["images"]] == [p.relative_to(tmp_path).as_posix() for p in paths]
    for entry in manifest["images"]:
        image = Image.open(tmp_path / entry["file"])
        mask = np.asarray(Image.open(tmp_path / "masks" / entry["file"]))
        assert image.size == (96, 80) and image.mode == "RGB"
        assert mask.shape == (80, 96) and set(np.unique(mask)) <= {0, 255}
        assert entry["label"] == entry["file"].split("/")[0]
        again = render_phantom(entry["label"], entry["seed"], size=(96, 80))
        assert again.image.tobytes() == image.tobytes()
        assert np.array_equal(again.mask, mask > 0)
        assert entry["paris"] == again.attributes["paris"]
    assert len({entry["seed"] for entry in manifest["images"]}) == 4


def test_write_phantom_set_refuses_empty_set(tmp_path):
    with pytest.raises(ValueError, match="n_per_label"):
        write_phantom_set(tmp_path, n_per_label=0)
    assert not (tmp_path / "PHANTOM.json").exists()


def test_cli_writes_a_set(tmp_path):
    assert main(["--out", str(tmp_path), "--n", "2"]) == 0
    manifest = json.loads((tmp_path / "PHANTOM.json").read_text())
    assert manifest["size"] == [320, 256] and len(manifest["images"]) == 4
    for entry in manifest["images"]:
        assert Image.open(tmp_path / entry["file"]).size == (320, 256)
        assert (tmp_path / entry["mask"]).is_file()


@pytest.mark.parametrize("argv", [["--n", "2"], ["--out", "x", "--size", "320by256"], ["--out", "x", "--n", "0"]])
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert "error" in capsys.readouterr().err
