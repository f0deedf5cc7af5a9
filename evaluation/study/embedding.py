"""2-D embeddings (t-SNE, UMAP) of image feature vectors, fitted jointly on all points.

Real and synthetic features of every checkpoint go into one call, so per-checkpoint panels drawn
from the returned coordinates share one map and can be compared; two separate fits cannot.

Pipeline, the same for both methods: features -> scikit-learn ``PCA`` (seeded) to
``min(pca_dims, n - 1, d)`` dimensions -> t-SNE or UMAP to 2-D. PCA first is the usual practice for
2048-d Inception or 1280-d EfficientNet features: it removes noise dimensions and makes the
neighbour search cheap.

t-SNE implementation: openTSNE (``openTSNE.TSNE`` with its defaults: 250 early-exaggeration plus
500 iterations, PCA initialisation, learning rate ``"auto"``, Barnes-Hut gradients below 10 000
points and FFT-interpolated gradients from 10 000). ``benchmarks/embedding.py`` timed it against
scikit-learn's ``TSNE`` (Barnes-Hut, its default 1000 iterations) on 2048-d cluster data reduced to
50 PCA dims on this 2-core CPU (see the "Embeddings" section of ``docs/benchmarks.md``): the same
at 2 000 points (about 5 s each), 2.2x faster at 10 000 (39 s vs 86 s) and 4.9x faster at 20 000
(41 s vs 198 s), with the same cluster separation (figures taken on a CPU shared with other work).
It is also reproducible with a seed on 2 threads. ``n_jobs=None`` means one thread: 2 threads
gained only 0-15 % on a shared 2-core machine, and the app's other requests need the second core.

UMAP: umap-learn with its defaults (15 neighbours, ``min_dist=0.1``, spectral initialisation, 500
epochs up to 10 000 points, 200 above). It is always seeded, and umap-learn then runs
single-threaded (that is what makes it reproducible), so ``n_jobs`` does not apply to it. Once
compiled it was the fastest (about 4 s at 2 000 points, 10-11 s at 10 000 and 20 000), but
umap-learn is compiled by numba on first use, in every new process: the first UMAP call pays about
10-15 s before any work, and the first call on 4 096 points or more (where umap-learn switches to
pynndescent neighbours) pays roughly another 25-45 s.

Nothing heavy happens at import: openTSNE and umap are imported inside the functions that use them.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

METHODS = ("tsne", "umap")
MIN_POINTS = 5
_IMPLEMENTATIONS = {"tsne": "openTSNE", "umap": "umap-learn"}
_LABELS = {"tsne": "t-SNE", "umap": "UMAP"}


class EmbeddingError(ValueError):
    """Features or settings that cannot be embedded: unknown method, too few points, bad array."""


@dataclass(frozen=True)
class Embedding:
    """A 2-D embedding and the settings actually used to make it.

    Attributes:
        coords: (n, 2) float64 coordinates, row i for input row i.
        method: ``"tsne"`` or ``"umap"``.
        implementation: The library that made it, with its version, e.g. ``"openTSNE 1.0.4"``.
        params: Settings actually used: ``seed``, ``n_points``, ``input_dims``, ``pca_dims`` and,
            for t-SNE, ``perplexity``, ``n_jobs``, ``early_exaggeration_iter``, ``n_iter``; for UMAP,
            ``n_neighbors``, ``min_dist``, ``n_epochs``.
        seconds: Wall time of PCA plus embedding (including any numba compilation).
        warnings: Human-readable notes on settings that were changed (e.g. a clamped perplexity).
    """

    coords: np.ndarray
    method: str
    implementation: str
    params: dict[str, Any]
    seconds: float
    warnings: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """One line for a plot caption, e.g. ``"t-SNE (openTSNE 1.0.4), perplexity 30 on 50 PCA dims"``."""
        if self.method == "tsne":
            setting = f"perplexity {self.params['perplexity']:g}"
        else:
            setting = f"{self.params['n_neighbors']} neighbours"
        return f"{_LABELS[self.method]} ({self.implementation}), {setting} on {self.params['pca_dims']} PCA dims"


def check_features(features: np.ndarray) -> np.ndarray:
    """Validate features for embedding and return them as a float64 array.

    Args:
        features: (n, d) array, n >= ``MIN_POINTS``, all values finite.

    Returns:
        The features as a float64 (n, d) array.

    Raises:
        EmbeddingError: If the array is not 2-D, has fewer than ``MIN_POINTS`` rows or no columns,
            or holds NaN or infinite values.
    """
    arr = np.asarray(features, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise EmbeddingError(f"embed: features has shape {arr.shape}; allowed: a 2-D (n, d) array with d >= 1")
    if arr.shape[0] < MIN_POINTS:
        raise EmbeddingError(f"embed: features has {arr.shape[0]} point(s); allowed: at least {MIN_POINTS}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise EmbeddingError(f"embed: features has NaN or infinite values in {bad} row(s); allowed: finite values")
    return arr


def reduce_pca(features: np.ndarray, pca_dims: int = 50, seed: int = 0) -> np.ndarray:
    """Project features onto their first ``min(pca_dims, n - 1, d)`` principal components.

    Args:
        features: (n, d) finite array (see :func:`check_features`).
        pca_dims: Wanted number of components, at least 2.
        seed: Seed for scikit-learn's randomized SVD (used for large inputs).

    Returns:
        (n, k) float64 array of PCA scores.

    Raises:
        EmbeddingError: If the features are invalid or ``pca_dims`` < 2.
    """
    from sklearn.decomposition import PCA

    arr = check_features(features)
    if isinstance(pca_dims, bool) or not isinstance(pca_dims, int) or pca_dims < 2:
        raise EmbeddingError(f"embed: pca_dims is {pca_dims!r}; allowed: an integer >= 2")
    n, d = arr.shape
    k = min(pca_dims, n - 1, d)
    return PCA(n_components=k, random_state=seed).fit_transform(arr)


def _clamp(name: str, value: float, limit: float, n: int, notes: list[str]) -> float:
    if value <= limit:
        return value
    note = f"{name} {value:g} is too large for {n} points; using {limit:g}"
    logger.warning("embed: %s", note)
    notes.append(note)
    return limit


def _tsne(reduced: np.ndarray, seed: int, perplexity: float, n_jobs: int) -> tuple[np.ndarray, dict[str, Any]]:
    import openTSNE

    tsne = openTSNE.TSNE(n_components=2, perplexity=perplexity, random_state=seed, n_jobs=n_jobs)
    coords = np.array(tsne.fit(reduced), dtype=np.float64)  # plain ndarray: drop the affinity references
    used = {"perplexity": perplexity, "n_jobs": n_jobs,
            "early_exaggeration_iter": tsne.early_exaggeration_iter, "n_iter": tsne.n_iter}
    return coords, used


def _umap(reduced: np.ndarray, seed: int, n_neighbors: int) -> tuple[np.ndarray, dict[str, Any]]:
    with warnings.catch_warnings():
        # umap-learn warns at import that TensorFlow (ParametricUMAP only) is missing.
        warnings.filterwarnings("ignore", message=".*Tensorflow not installed.*")
        import umap

    # A seed makes umap-learn single-threaded; n_jobs=1 says so instead of being overridden with a warning.
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed, n_jobs=1)
    coords = np.asarray(reducer.fit_transform(reduced), dtype=np.float64)
    n_epochs = reducer.n_epochs if reducer.n_epochs is not None else (500 if len(reduced) <= 10_000 else 200)
    return coords, {"n_neighbors": n_neighbors, "min_dist": reducer.min_dist, "n_epochs": n_epochs}


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:  # pragma: no cover - both are in requirements.txt
        return "unknown version"


def embed(features: np.ndarray, method: str, seed: int = 0, *, perplexity: float = 30.0,
          n_neighbors: int = 15, pca_dims: int = 50, n_jobs: int | None = None) -> Embedding:
    """Embed feature vectors in 2-D with PCA then t-SNE or UMAP, deterministically for a seed.

    Fit all sets that will be compared (real and every checkpoint) in one call.

    Args:
        features: (n, d) finite features, n >= 5, one row per image.
        method: One of ``METHODS``: ``"tsne"`` (openTSNE) or ``"umap"`` (umap-learn).
        seed: Seed for PCA and the embedding; the same seed and input give the same coordinates
            on the same machine.
        perplexity: t-SNE perplexity, > 0; clamped to ``(n - 1) / 3`` with a warning.
        n_neighbors: UMAP neighbourhood size, >= 2; clamped to ``n - 1`` with a warning.
        pca_dims: PCA components before embedding, >= 2; ``min(pca_dims, n - 1, d)`` are used.
        n_jobs: t-SNE threads (openTSNE convention, -1 = all cores); None means 1. UMAP is always
            single-threaded because it is seeded; a value other than None or 1 adds a warning.

    Returns:
        An :class:`Embedding` with the coordinates and the settings actually used.

    Raises:
        EmbeddingError: For an unknown method, fewer than 5 points, a non-2-D array, NaN or
            infinite features, or a setting out of range.
    """
    if method not in METHODS:
        raise EmbeddingError(f"embed: method is {method!r}; allowed: {', '.join(METHODS)}")
    arr = check_features(features)
    if not (isinstance(perplexity, (int, float)) and math.isfinite(perplexity) and perplexity > 0):
        raise EmbeddingError(f"embed: perplexity is {perplexity!r}; allowed: a finite number > 0")
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or n_neighbors < 2:
        raise EmbeddingError(f"embed: n_neighbors is {n_neighbors!r}; allowed: an integer >= 2")
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0):
        raise EmbeddingError(f"embed: n_jobs is {n_jobs!r}; allowed: None or a non-zero integer")

    start = time.perf_counter()
    reduced = reduce_pca(arr, pca_dims, seed)
    n = len(arr)
    notes: list[str] = []
    if method == "tsne":
        used_perplexity = _clamp("perplexity", float(perplexity), (n - 1) / 3, n, notes)
        coords, used = _tsne(reduced, seed, used_perplexity, 1 if n_jobs is None else n_jobs)
    else:
        used_neighbors = int(_clamp("n_neighbors", n_neighbors, n - 1, n, notes))
        if n_jobs not in (None, 1):
            notes.append(f"n_jobs {n_jobs} ignored: seeded UMAP runs single-threaded to be reproducible")
            logger.info("embed: %s", notes[-1])
        coords, used = _umap(reduced, seed, used_neighbors)
    seconds = time.perf_counter() - start
    params = {"seed": seed, "n_points": n, "input_dims": arr.shape[1], "pca_dims": reduced.shape[1], **used}
    module = _IMPLEMENTATIONS[method]
    logger.info("embed: %s of %d points in %.1f s", method, n, seconds)
    return Embedding(coords, method, f"{module} {_version(module)}", params, seconds, tuple(notes))
