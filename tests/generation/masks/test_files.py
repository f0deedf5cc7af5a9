"""Masks: reading binary and colour-coded files, pairing them with images, sampling new ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generation.datasets import DatasetError
from generation.masks.files import MaskError, load_mask, parse_colour_map, scan_mask_pairs
from generation.masks.shapes import augment_mask, procedural_mask, sample_masks, square_mask
from generation.phantom.frames import render_phantom, write_phantom_set

COLOURS = {"#ff0000": "AD", "#00ff00": "NonAD"}


def _disc(size=(24, 20), centre=(10, 9), radius=5) -> np.ndarray:
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    return np.hypot(xx - centre[0], yy - centre[1]) <= radius


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def _rgb(mask, colour):
    out = np.zeros(mask.shape + (3,), np.uint8)
    out[mask] = colour
    return out


@pytest.mark.parametrize("scale, mode", [(255, "L"), (1, "L"), (255, "RGB")])
def test_binary_masks_read_exactly(tmp_path, scale, mode):
    disc = _disc()
    array = disc.astype(np.uint8) * scale
    if mode == "RGB":
        array = np.repeat(array[..., None], 3, axis=2)
    mask, label = load_mask(_save(tmp_path / "m.png", array))
    assert label is None and mask.dtype == bool and np.array_equal(mask, disc)


def test_one_bit_masks_read_exactly(tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(_disc()).save(path)
    assert np.array_equal(load_mask(path)[0], _disc())


def test_colour_coded_masks_give_their_class(tmp_path):
    mask, label = load_mask(_save(tmp_path / "m.png", _rgb(_disc(), (0, 255, 0))), COLOURS)
    assert label == "NonAD" and np.array_equal(mask, _disc())


def test_colour_mask_without_a_map_says_how_to_read_it(tmp_path):
    with pytest.raises(MaskError, match=r"colour-coded .*#ff0000.*colour map"):
        load_mask(_save(tmp_path / "m.png", _rgb(_disc(), (255, 0, 0))))


def test_unknown_colours_are_named_with_the_fix(tmp_path):
    with pytest.raises(MaskError, match=r"m\.png holds colours outside the colour map.*#0000ff.*threshold"):
        load_mask(_save(tmp_path / "m.png", _rgb(_disc(), (0, 0, 255))), COLOURS)


def test_two_classes_in_one_mask_are_refused(tmp_path):
    array = _rgb(_disc(centre=(5, 5), radius=3), (255, 0, 0)) + _rgb(_disc(centre=(17, 14), radius=3), (0, 255, 0))
    with pytest.raises(MaskError, match="two classes"):
        load_mask(_save(tmp_path / "m.png", array), COLOURS)


def test_smeared_greys_are_refused_unless_thresholded(tmp_path):
    array = _disc().astype(np.uint8) * 255
    array[_disc(radius=6) & ~_disc()] = 140  # a JPEG-like edge
    array[0, 0] = 3
    path = _save(tmp_path / "smeared.png", array)
    with pytest.raises(MaskError, match=r"smeared\.png is not binary: 4 distinct values \(0, 3, 140, 255\).*threshold=128"):
        load_mask(path)
    mask, _ = load_mask(path, threshold=128)
    assert np.array_equal(mask, _disc(radius=6))


def test_jpeg_colour_masks_snap_to_the_nearest_colour_with_a_threshold(tmp_path):
    path = tmp_path / "m.jpg"
    Image.fromarray(_rgb(_disc(), (255, 0, 0))).save(path, quality=70)
    with pytest.raises(MaskError, match="outside the colour map"):
        load_mask(path, COLOURS)
    mask, label = load_mask(path, COLOURS, threshold=128)
    assert label == "AD" and (mask ^ _disc()).sum() <= 4


def test_empty_masks_are_refused(tmp_path):
    with pytest.raises(MaskError, match=r"empty\.png is empty"):
        load_mask(_save(tmp_path / "empty.png", np.zeros((8, 8), np.uint8)))


@pytest.mark.parametrize("colour_map, message", [
    ({"red": "AD"}, "not a colour"), ({"#000000": "AD"}, "background"), ({"#ff0000": "Adenoma"}, "valid labels: AD, NonAD"),
    ("{not json", "not JSON"),
])
def test_bad_colour_maps_name_the_entry(colour_map, message):
    with pytest.raises(MaskError, match=message):
        parse_colour_map(colour_map)


def _pair(root, name, mask_array, image_size=(24, 20), mask_mode=None):
    _save(root / "images" / name, np.full((image_size[1], image_size[0], 3), 120, np.uint8))
    _save((root / "masks" / name).with_suffix(".png"), mask_array, mask_mode)


def test_scan_pairs_by_stem_with_labels_from_folders_or_colours(tmp_path):
    _pair(tmp_path, "AD/a.jpg", _disc().astype(np.uint8) * 255)
    _pair(tmp_path, "b.png", _rgb(_disc(), (0, 255, 0)))
    scan = scan_mask_pairs(tmp_path, COLOURS)
    assert sorted((p.image_path.name, p.label, p.mask_label, p.mask_source) for p in scan.pairs) == [
        ("a.jpg", "AD", None, "real"), ("b.png", "NonAD", "NonAD", "real")]
    assert scan.pairs[0].area_fraction == pytest.approx(_disc().mean())
    assert scan.pairs[0].reading == {"colour_map": COLOURS, "threshold": None} and not scan.problems


def test_scan_reports_every_mismatch_clearly(tmp_path):
    disc = _disc().astype(np.uint8) * 255
    _pair(tmp_path, "AD/good.png", disc)
    _save(tmp_path / "images" / "AD" / "lonely.png", np.zeros((20, 24, 3), np.uint8))
    _save(tmp_path / "masks" / "AD" / "orphan.png", disc)
    _pair(tmp_path, "AD/small.png", disc[:10, :12])
    _pair(tmp_path, "AD/blank.png", np.zeros((20, 24), np.uint8))
    _pair(tmp_path, "AD/grey.png", (disc // 2 + 1))
    _pair(tmp_path, "AD/red.png", _rgb(_disc(), (0, 255, 0)))
    _pair(tmp_path, "nolabel.png", disc)
    scan = scan_mask_pairs(tmp_path, COLOURS)
    assert [p.image_path.name for p in scan.pairs] == ["good.png"]
    reasons = {p.path.name: p.reason for p in scan.problems}
    assert "expected masks/AD/lonely.*" in reasons["lonely.png"]
    assert "has no image: expected images/AD/orphan.*" in reasons["orphan.png"]
    assert "image is 24x20 but its mask small.png is 12x10" in reasons["small.png"]
    assert "is empty" in reasons["blank.png"]
    assert "not binary: 2 distinct values (1, 128)" in reasons["grey.png"]
    assert "lies in AD/ but its mask colour says NonAD" in reasons["red.png"]
    assert "has no label" in reasons["nolabel.png"]


def test_scan_without_masks_folder_or_pairs_is_a_dataset_error(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match="no masks/ folder"):
        scan_mask_pairs(tmp_path)
    _save(tmp_path / "masks" / "x.png", _disc().astype(np.uint8))
    _save(tmp_path / "images" / "AD" / "y.png", np.zeros((20, 24, 3), np.uint8))
    with pytest.raises(DatasetError, match="no usable image and mask pair") as err:
        scan_mask_pairs(tmp_path)
    assert len(err.value.problems) == 2


def test_phantom_sets_pair_with_their_exact_masks(tmp_path):
    write_phantom_set(tmp_path, n_per_label=2, seed=3, size=(64, 64))
    scan = scan_mask_pairs(tmp_path)
    assert len(scan.pairs) == 4 and {p.mask_source for p in scan.pairs} == {"phantom"}
    import json

    manifest = {e["file"]: e for e in json.loads((tmp_path / "PHANTOM.json").read_text())["images"]}
    for pair in scan.pairs:
        entry = manifest[pair.image_path.relative_to(tmp_path).as_posix()]
        exact = render_phantom(pair.label, entry["seed"], (64, 64)).mask
        assert np.array_equal(load_mask(pair.mask_path)[0], exact)


# -- sampling new masks -------------------------------------------------------------------------


def _touches_border(mask):
    return mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()


def test_sampled_masks_are_deterministic_never_empty_and_inside_the_frame():
    real = [("b" * 64, render_phantom("AD", 1).mask), ("a" * 64, _disc((40, 40), (20, 20), 19))]
    first = sample_masks(real, 24, seed=5, size=32, procedural_share=0.5)
    again = sample_masks(list(reversed(real)), 24, seed=5, size=32, procedural_share=0.5)
    assert all(np.array_equal(x.mask, y.mask) and x.provenance == y.provenance for x, y in zip(first, again))
    assert [m.provenance for m in sample_masks(real, 5, seed=5, size=32, procedural_share=0.5)] == [m.provenance for m in first[:5]]
    assert {m.source for m in first} == {"augmented", "procedural"}
    assert all(m.mask.shape == (32, 32) and m.mask.any() and not _touches_border(m.mask) for m in first)
    assert any(m.provenance.startswith("augmented from aaaaaaaaaaaa (seed 5, item") for m in first)
    assert not np.array_equal(first[0].mask, sample_masks(real, 1, seed=6, size=32, procedural_share=0.5)[0].mask)


def test_shapes_stay_whole_even_for_big_or_tiny_masks():
    big, tiny = np.ones((30, 30), bool), np.zeros((300, 300), bool)
    tiny[150, 150] = True
    for seed in range(30):
        rng = np.random.default_rng(seed)
        for mask in (augment_mask(big, rng, 16)[0], augment_mask(tiny, rng, 16)[0], procedural_mask(rng, 8)[0]):
            assert mask.any()
        assert not _touches_border(augment_mask(big, rng, 32)[0])


def test_sampling_refuses_bad_arguments_by_name():
    with pytest.raises(ValueError, match="real_masks is empty"):
        sample_masks([], 2, 0, 16)
    with pytest.raises(ValueError, match="size must be"):
        sample_masks([], 2, 0, 4, procedural_share=1.0)
    with pytest.raises(ValueError, match="procedural_share"):
        sample_masks([], 2, 0, 16, procedural_share=2.0)
    with pytest.raises(ValueError, match="mask is empty"):
        augment_mask(np.zeros((4, 4), bool), np.random.default_rng(0), 16)


def test_square_mask_frames_like_the_training_images():
    mask = np.zeros((20, 40), bool)
    mask[5:15, 15:25] = True  # the centre square is columns 10-29
    framed = square_mask(mask, 20)
    assert framed.shape == (20, 20) and framed[5:15, 5:15].all() and framed.sum() == 100
