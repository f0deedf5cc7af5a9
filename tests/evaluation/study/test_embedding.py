"""Tests for evaluation.study.embedding: shapes, seeds, cluster separation, clamping, errors.

Inputs are tiny (tens of points) so t-SNE takes well under a second; the UMAP tests share one
process, so numba compiles once (about 10-15 s) and the rest are fast.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from evaluation.study.embedding import METHODS, Embedding, EmbeddingError, embed, reduce_pca


def two_clusters(n_per: int = 30, dims: int = 64, gap: float = 20.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two isotropic Gaussian clusters whose centres lie ``gap`` standard deviations apart."""
    rng = np.random.default_rng(seed)
    offset = np.zeros(dims)
    offset[0] = gap
    features = np.vstack([rng.normal(size=(n_per, dims)), rng.normal(size=(n_per, dims)) + offset])
    return features, np.repeat([0, 1], n_per)


def nearest_neighbour_agreement(coords: np.ndarray, labels: np.ndarray) -> float:
    distances = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    return float((labels[distances.argmin(axis=1)] == labels).mean())


def check_separated(result: Embedding, labels: np.ndarray) -> None:
    from sklearn.metrics import silhouette_score

    assert nearest_neighbour_agreement(result.coords, labels) == 1.0
    assert silhouette_score(result.coords, labels) > 0.5


def test_tsne_shape_params_and_seed() -> None:
    features, labels = two_clusters(n_per=50)  # 100 points: perplexity 30 needs no clamp
    first = embed(features, "tsne", seed=3)
    again = embed(features, "tsne", seed=3)
    other = embed(features, "tsne", seed=4)
    assert first.coords.shape == (100, 2) and first.coords.dtype == np.float64
    assert np.isfinite(first.coords).all()
    np.testing.assert_array_equal(first.coords, again.coords)
    assert not np.allclose(first.coords, other.coords)
    assert first.method == "tsne" and first.implementation.startswith("openTSNE ")
    assert first.params["pca_dims"] == 50 and first.params["perplexity"] == 30
    assert first.params["input_dims"] == 64 and first.params["n_points"] == 100 and first.params["seed"] == 3
    assert first.warnings == () and first.seconds > 0
    assert first.describe().startswith("t-SNE (openTSNE 1.0")
    assert first.describe().endswith("perplexity 30 on 50 PCA dims")
    check_separated(first, labels)
    assert embed(features.astype(np.float32), "tsne").coords.shape == (100, 2)


def test_tsne_is_reproducible_on_two_threads() -> None:
    features, _ = two_clusters(n_per=20)
    a, b = (embed(features, "tsne", seed=0, n_jobs=2) for _ in range(2))
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.params["n_jobs"] == 2


def test_perplexity_is_clamped_on_tiny_input(caplog: pytest.LogCaptureFixture) -> None:
    features, _ = two_clusters(n_per=6, dims=8)
    with caplog.at_level(logging.WARNING, logger="evaluation.study.embedding"):
        result = embed(features, "tsne")
    assert result.params["perplexity"] == pytest.approx(11 / 3)
    assert result.params["pca_dims"] == 8  # min(50, n - 1 = 11, d = 8)
    assert result.warnings == ("perplexity 30 is too large for 12 points; using 3.66667",)
    assert "perplexity 30 is too large for 12 points" in caplog.text
    assert "perplexity 3.66667 on 8 PCA dims" in result.describe()


def test_pca_uses_at_most_n_minus_one_components() -> None:
    features, _ = two_clusters(n_per=10, dims=64)
    assert reduce_pca(features, pca_dims=50).shape == (20, 19)
    assert reduce_pca(features, pca_dims=5).shape == (20, 5)


@pytest.mark.parametrize(("features", "match"), [
    (np.zeros((4, 3)), "features has 4 point"),
    (np.zeros(10), r"features has shape \(10,\); allowed: a 2-D"),
    (np.zeros((10, 3, 2)), r"features has shape \(10, 3, 2\)"),
    (np.zeros((10, 0)), r"features has shape \(10, 0\)"),
    (np.where(np.eye(10, 3) > 0, np.nan, 0.0), "NaN or infinite values in 3 row"),
    (np.full((10, 3), np.inf), "allowed: finite values"),
])
def test_invalid_features_are_refused(features: np.ndarray, match: str) -> None:
    with pytest.raises(EmbeddingError, match=match):
        embed(features, "tsne")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "pca"}, "method is 'pca'; allowed: tsne, umap"),
    ({"method": "tsne", "perplexity": 0}, "perplexity is 0; allowed"),
    ({"method": "umap", "n_neighbors": 1}, "n_neighbors is 1; allowed"),
    ({"method": "tsne", "pca_dims": 1}, "pca_dims is 1; allowed"),
    ({"method": "tsne", "n_jobs": 0}, "n_jobs is 0; allowed"),
])
def test_invalid_settings_are_refused(kwargs: dict, match: str) -> None:
    features, _ = two_clusters(n_per=5, dims=4)
    with pytest.raises(EmbeddingError, match=match):
        embed(features, **kwargs)
    assert issubclass(EmbeddingError, ValueError) and METHODS == ("tsne", "umap")


def test_import_is_light() -> None:
    code = ("import sys, evaluation.study.embedding; "
            "print(sorted({'umap', 'openTSNE', 'numba', 'gradio', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_umap_shape_seed_separation_and_clamp(caplog: pytest.LogCaptureFixture) -> None:
    """One test, so numba compiles once: about 15 s in a fresh process, a second when warm."""
    features, labels = two_clusters()
    first = embed(features, "umap", seed=1)
    again = embed(features, "umap", seed=1)
    assert first.coords.shape == (60, 2) and first.coords.dtype == np.float64
    np.testing.assert_array_equal(first.coords, again.coords)
    assert first.implementation.startswith("umap-learn ") and first.params["n_neighbors"] == 15
    assert first.params["n_epochs"] == 500 and first.describe().endswith("15 neighbours on 50 PCA dims")
    check_separated(first, labels)

    tiny, _ = two_clusters(n_per=5, dims=8)
    with caplog.at_level(logging.WARNING, logger="evaluation.study.embedding"):
        small = embed(tiny, "umap", n_jobs=2)
    assert small.coords.shape == (10, 2) and small.params["n_neighbors"] == 9
    assert small.warnings == ("n_neighbors 15 is too large for 10 points; using 9",
                              "n_jobs 2 ignored: seeded UMAP runs single-threaded to be reproducible")
    assert "n_neighbors 15 is too large" in caplog.text
