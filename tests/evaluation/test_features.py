"""Extractors (identity pinned), batched extraction, and the feature cache."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch

from evaluation.cache import CacheError, FeatureCache, features_for
from evaluation.features import (
    EXTRACTORS,
    ExtractorUnavailable,
    efficientnet_weights_path,
    extract,
    get_extractor,
    inception_weights_path,
    load_dinov2,
)
from evaluation.images import load_images
from tests.evaluation.conftest import make_tiny_extractor, random_images, write_image_set

WEIGHT_SHA256 = {
    "inception": "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    "efficientnet": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}
# Features of two fixed seeded images (48x64 and 33x40): first 4 values, row mean, row norm.
PINNED = {
    "inception": ([[0.5734, 0.0, 0.0754, 0.0], [0.5747, 0.0, 0.0392, 0.012]], [0.22502, 0.27904], [21.7267, 22.1085]),
    "efficientnet": ([[1.7816, 0.0, 0.2859, 0.0], [1.0756, 0.0, 0.0055, 0.0068]], [0.1035, 0.11173],
                     [15.0983, 15.1345]),
}


def _pinned_inputs():
    return [np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8),
            np.random.default_rng(8).integers(0, 256, (33, 40, 3), dtype=np.uint8)]


def test_weight_files_are_the_pinned_ones():
    for name, path in (("inception", inception_weights_path()), ("efficientnet", efficientnet_weights_path())):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == WEIGHT_SHA256[name], name


@pytest.mark.parametrize("name", ["inception", "efficientnet"])
def test_extractor_identity_is_pinned(name, request):
    extractor = request.getfixturevalue(name)
    feats = extract(_pinned_inputs(), extractor)
    first, mean, norm = PINNED[name]
    assert feats.shape == (2, extractor.num_features) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[:, :4], first, atol=2e-4)
    np.testing.assert_allclose(feats.mean(axis=1), mean, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), norm, rtol=1e-4)


def test_preprocessing_strings_document_the_pipeline(inception, efficientnet):
    assert inception.num_features == 2048 and efficientnet.num_features == 1280
    assert re.search(r"TF1-style bilinear.*299x299.*\(x - 128\) / 128.*InceptionV3.*pool3.*2048-d",
                     inception.preprocessing)
    assert "224x224" in efficientnet.preprocessing and "123.675" in efficientnet.preprocessing
    assert "1280-d" in efficientnet.preprocessing


def test_mixed_sizes_batch_like_one_by_one(tiny_extractor):
    images = random_images(3, (20, 30), seed=1) + random_images(2, (50, 17), seed=2) + random_images(1, (16, 16))
    batched = extract(images, tiny_extractor, batch_size=4)
    single = np.concatenate([extract([im], tiny_extractor, batch_size=1) for im in images])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    progress = []
    extract(images, tiny_extractor, batch_size=4, on_progress=lambda done, total: progress.append((done, total)))
    assert progress == [(4, 6), (6, 6)]


def test_extractor_is_a_torchmetrics_style_module(tiny_extractor):
    out = tiny_extractor(torch.zeros(2, 3, 40, 40, dtype=torch.uint8))
    assert out.shape == (2, 8) and out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"allowed: torch.uint8 tensor of shape \(N, 3, H, W\)"):
        tiny_extractor(torch.zeros(2, 3, 40, 40))


def test_get_extractor_names_valid_choices_and_accepts_a_registry():
    with pytest.raises(ValueError, match=r"'vgg' is not a known extractor; allowed: \['dinov2', 'efficientnet', "):
        get_extractor("vgg")
    assert get_extractor("tiny", registry={"tiny": lambda device: make_tiny_extractor()}).name == "tiny"
    assert set(EXTRACTORS) == {"inception", "efficientnet", "dinov2"}


def test_dinov2_without_local_weights_says_how_to_provide_them(monkeypatch, tmp_path):
    monkeypatch.delenv("POLYP_DINOV2_DIR", raising=False)
    with pytest.raises(ExtractorUnavailable, match="cannot be downloaded offline.*POLYP_DINOV2_DIR"):
        load_dinov2()
    with pytest.raises(ExtractorUnavailable, match="could not load weights"):
        load_dinov2(weights_dir=tmp_path)


def test_cache_second_run_computes_nothing_and_matches(tmp_path, tiny_extractor):
    loaded = load_images(write_image_set(tmp_path / "set", 5, seed=3))
    cache = FeatureCache(tmp_path / "cache")
    first = features_for(loaded, tiny_extractor, cache)
    second = features_for(loaded, tiny_extractor, cache)
    assert (first.computed, first.cached, second.computed, second.cached) == (5, 0, 0, 5)
    np.testing.assert_array_equal(first.features, second.features)
    np.testing.assert_array_equal(first.features, features_for(loaded, tiny_extractor).features)
    files = list((tmp_path / "cache").rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    assert sum(f.suffix == ".npy" for f in files) == 5
    assert (tiny_extractor.preprocessing + "\n") in [f.read_text() for f in files if f.name == "preprocessing.txt"]


def test_cache_is_keyed_by_preprocessing_and_recovers_from_bad_files(tmp_path, tiny_extractor):
    loaded = load_images(write_image_set(tmp_path / "set", 3, seed=4))
    cache = FeatureCache(tmp_path / "cache")
    features_for(loaded, tiny_extractor, cache)
    other = make_tiny_extractor(seed=1)
    assert features_for(loaded, other, cache).computed == 3
    bad = cache.path_for(loaded.sha256s[0], "tiny", tiny_extractor.preprocessing)
    bad.write_bytes(b"not a npy")
    again = features_for(loaded, tiny_extractor, cache)
    assert (again.computed, again.cached) == (1, 2)
    with pytest.raises(CacheError, match="is not a sha256"):
        cache.path_for("abc", "tiny", "p")


def test_duplicate_images_are_computed_once(tmp_path, tiny_extractor):
    folder = write_image_set(tmp_path / "set", 2, seed=5)
    (folder / "copy.png").write_bytes((folder / "img-000.png").read_bytes())
    loaded = load_images(folder)
    result = features_for(loaded, tiny_extractor, FeatureCache(tmp_path / "cache"))
    assert result.features.shape == (3, 8) and result.computed == 2
    assert any("duplicate" in note for note in loaded.notes)
