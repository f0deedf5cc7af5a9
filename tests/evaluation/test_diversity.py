"""MS-SSIM diversity: known extremes, the pair sampler, scales for small images, determinism, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from evaluation.diversity import (
    STANDARD_BETAS,
    InvalidImage,
    TooFewImages,
    betas_for_size,
    diversity_report,
    ms_ssim_diversity,
    preprocess,
    sample_pairs,
    scales_for_size,
)

SIZE = 48  # three scales; keeps every test well under a second


def noise_images(n: int, seed: int = 0, shape: tuple[int, int] = (48, 48)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*shape, 3), dtype=np.uint8) for _ in range(n)]


def near_copies(n: int, seed: int = 0) -> list[np.ndarray]:
    """One smooth image repeated with faint pixel noise: a collapsed generator."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:48, 0:48]
    base = np.stack([x * 5, y * 5, (x + y) * 2], axis=-1).astype(np.int16)
    return [(base + rng.integers(-2, 3, base.shape)).clip(0, 255).astype(np.uint8) for _ in range(n)]


def test_identical_images_score_one():
    result = ms_ssim_diversity([noise_images(1)[0]] * 4, size=SIZE)
    assert result["value"] == pytest.approx(1.0, abs=1e-5)
    assert result["ci"] == pytest.approx((1.0, 1.0), abs=1e-5)


def test_independent_noise_scores_low_and_copies_high():
    noise = ms_ssim_diversity(noise_images(8), size=SIZE)
    copies = ms_ssim_diversity(near_copies(8), size=SIZE)
    assert noise["value"] < 0.1
    assert copies["value"] > 0.9
    assert noise["ci"][0] <= noise["value"] <= noise["ci"][1]


def test_records_settings_and_all_pairs_when_few_images():
    result = ms_ssim_diversity(noise_images(5), size=SIZE, n_pairs=100)
    assert result["n_images"] == 5 and result["n_pairs"] == 10  # all C(5, 2) pairs
    assert result["size"] == SIZE and result["betas"] == betas_for_size(SIZE)
    assert "Lanczos" in result["preprocessing"]
    assert result["scores"].shape == (10,) and result["pairs"].shape == (10, 2)


def test_pair_scores_match_torchmetrics_on_already_sized_images():
    images = noise_images(3, seed=4)
    result = ms_ssim_diversity(images, size=SIZE)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    expected = multiscale_structural_similarity_index_measure(
        x[[0]], x[[1]], data_range=1.0, betas=betas_for_size(SIZE))
    assert result["scores"][0] == pytest.approx(float(expected), abs=1e-6)


def test_mixed_sizes_are_centre_cropped_and_resized():
    images = noise_images(2, shape=(60, 90)) + noise_images(2, seed=1, shape=(100, 70))
    tensor = preprocess(images, SIZE)
    assert tensor.shape == (4, 3, SIZE, SIZE)
    assert 0.0 <= float(tensor.min()) and float(tensor.max()) <= 1.0


@pytest.mark.parametrize(("size", "scales"), [(11, 1), (12, 2), (43, 2), (44, 3), (98, 3), (99, 4), (176, 5)])
def test_scales_fit_torchmetrics_limits(size, scales):
    assert scales_for_size(size) == scales
    betas = betas_for_size(size)
    assert sum(betas) == pytest.approx(1.0)
    assert np.allclose(np.array(betas) * sum(STANDARD_BETAS[:scales]), STANDARD_BETAS[:scales])
    x = torch.rand(1, 3, size, size)
    multiscale_structural_similarity_index_measure(x, x * 0.9, data_range=1.0, betas=betas)  # does not raise


@pytest.mark.parametrize("n", [2, 7, 40])
def test_sample_pairs_are_distinct_and_decoded_exactly(n):
    total = n * (n - 1) // 2
    all_pairs = sample_pairs(n, total, seed=0)
    assert np.array_equal(all_pairs, np.stack(np.triu_indices(n, k=1), axis=1))
    subset = sample_pairs(n, max(1, total // 3), seed=5)
    assert len({tuple(p) for p in subset}) == len(subset)
    assert set(map(tuple, subset)) <= set(map(tuple, all_pairs))


def test_seed_makes_it_deterministic():
    images = noise_images(12)
    first = ms_ssim_diversity(images, size=SIZE, n_pairs=20, seed=3)
    again = ms_ssim_diversity(images, size=SIZE, n_pairs=20, seed=3)
    other = ms_ssim_diversity(images, size=SIZE, n_pairs=20, seed=4)
    assert first["value"] == again["value"] and first["ci"] == again["ci"]
    assert not np.array_equal(first["pairs"], other["pairs"])


def test_report_puts_fake_and_real_side_by_side():
    report = diversity_report(near_copies(6), noise_images(6), size=SIZE, n_pairs=15)
    assert report["fake"]["value"] > report["real"]["value"]
    assert report["difference"] == pytest.approx(report["fake"]["value"] - report["real"]["value"])
    assert set(report["fake"]) == {"value", "ci", "n_images", "n_pairs"}
    assert report["size"] == SIZE and report["betas"] == betas_for_size(SIZE)
    assert "bootstrap" in report["ci_method"]


def test_too_few_images_names_the_argument():
    with pytest.raises(TooFewImages, match=r"real_images holds 1 image.*at least 2"):
        diversity_report(noise_images(3), noise_images(1), size=SIZE)
    with pytest.raises(ValueError):  # a ValueError, so callers may catch either
        ms_ssim_diversity([], size=SIZE)


@pytest.mark.parametrize(
    ("images", "kwargs", "match"),
    [
        ([np.zeros((48, 48), np.uint8)] * 2, {}, r"images\[0\] has shape \(48, 48\)"),
        ([np.zeros((48, 48, 3), np.float32)] * 2, {}, "dtype float32"),
        (None, {"size": 8}, "size=8 is too small"),
        (None, {"betas": STANDARD_BETAS}, r"expected 1 to 3 positive weights"),
        (None, {"n_pairs": 0}, "n_pairs=0"),
        (None, {"confidence": 1.5}, "confidence=1.5"),
    ],
)
def test_bad_input_is_named(images, kwargs, match):
    with pytest.raises(InvalidImage, match=match):
        ms_ssim_diversity(images if images is not None else noise_images(2), **{"size": SIZE, **kwargs})
