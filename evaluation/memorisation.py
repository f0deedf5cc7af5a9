"""Does a generator copy its training images? Nearest-training-image distances in feature space.

Distance: cosine distance ``1 - cos(a, b)`` between feature vectors, in [0, 2]. It ignores the
length of a vector, which for pooled CNN features tracks overall activation (brightness, contrast)
more than content, and it is the distance of MiFID's memorisation term (torchmetrics'
``MemorizationInformedFrechetInceptionDistance``). It is found
with scikit-learn's exact ``NearestNeighbors`` as the Euclidean distance ``e`` between L2-normalised
rows, then reported as ``e**2 / 2``, which equals the cosine distance (same neighbour order).

Reference: held-out real images, drawn like the training images but never trained on, show how
close a new image of the same kind falls to the training set by chance. With ``q`` (default 5 %):

* ``threshold`` = the ``q``-quantile (linear interpolation) of the held-out images' nearest-training
  distances;
* ``share_closer`` = the share of synthetic images whose nearest-training distance is strictly below
  ``threshold``. A generator that does not copy gives about ``q``; one that copies gives more, up
  to 1. Its Wilson interval covers sampling of the synthetic images only, not the uncertainty of
  the threshold, which is coarse when there are fewer than ``1/q`` held-out images (a warning says
  so);
* ``median_ratio`` = median synthetic distance / median held-out distance; below 1 means synthetic
  images sit closer to the training set than new real images do.

The closest (synthetic, training) pairs, closest first, let a person look at the suspects.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from sklearn.neighbors import NearestNeighbors

from evaluation.utility import InvalidFeatures, TooFewSamples, check_features, wilson_interval

logger = logging.getLogger(__name__)

DISTANCE = "cosine"
DEFAULT_Q = 0.05
MIN_HELDOUT = 2
_DUPLICATE = 1e-9
"""Held-out images this close to a training image are taken to be duplicates (a leak)."""


def _normalise(features: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0.0)
    if zero.size:
        raise InvalidFeatures(f"{name} has all-zero rows (e.g. row {zero[0]}); cosine distance is undefined")
    return features / norms


def nearest_training(train_features, query_features, *, train_name: str = "train_features",
                     query_name: str = "query_features") -> tuple[np.ndarray, np.ndarray]:
    """For each query row, its nearest training row by cosine distance.

    Args:
        train_features: (N_train, d) features of the training images.
        query_features: (N_query, d) features of the images to look up.
        train_name: Argument name used in error messages.
        query_name: Argument name used in error messages.

    Returns:
        ``(index, distance)``: int64 and float64 arrays of shape (N_query,); ``index`` points into
        the training rows, ``distance`` is the cosine distance in [0, 2].

    Raises:
        InvalidFeatures: On malformed arrays, mismatched dimensions or all-zero rows.
    """
    train = _normalise(check_features(train_features, train_name), train_name)
    query = _normalise(check_features(query_features, query_name, dim=train.shape[1]), query_name)
    euclidean, index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(train).kneighbors(query)
    distance = np.clip(euclidean[:, 0] ** 2 / 2.0, 0.0, 2.0)
    return index[:, 0].astype(np.int64), distance


def memorisation_report(
    train_features, fake_features, heldout_features,
    *, q: float = DEFAULT_Q, confidence: float = 0.95, top_k: int | None = None,
) -> dict:
    """How much closer synthetic images sit to the training set than held-out real images do.

    Args:
        train_features: (N_train, d) features of the images the generator was trained on.
        fake_features: (N_fake, d) features of synthetic images.
        heldout_features: (N_heldout, d) features of real images not used for training (>= 2).
        q: Quantile of the held-out distances used as the threshold, in (0, 1).
        confidence: Coverage of the Wilson interval of ``share_closer``.
        top_k: Keep only the ``top_k`` closest pairs in ``nearest``; all when None.

    Returns:
        A dict with ``metric``, ``distance`` (``"cosine"``), ``q``, ``threshold``, ``share_closer``,
        ``share_ci``, ``n_closer``, ``median_ratio``, ``median_fake_distance``,
        ``median_heldout_distance``, ``fake_nn_index`` and ``fake_nn_distance`` (shape (N_fake,)),
        ``heldout_nn_distance`` (shape (N_heldout,)), ``nearest`` (a list of ``(fake index, train
        index, distance)`` tuples, closest first), ``n_train``, ``n_fake``, ``n_heldout``,
        ``confidence`` and ``ci_method``.

    Raises:
        InvalidFeatures: On malformed arrays, mismatched dimensions or all-zero rows.
        TooFewSamples: If there are fewer than two held-out images.
        ValueError: If ``q``, ``confidence`` or ``top_k`` is out of range.
    """
    _check_settings(q, confidence, top_k)
    heldout = check_features(heldout_features, "heldout_features")
    if len(heldout) < MIN_HELDOUT:
        raise TooFewSamples(f"heldout_features has {len(heldout)} row(s); expected at least {MIN_HELDOUT}")
    fake_index, fake_distance = nearest_training(train_features, fake_features, query_name="fake_features")
    _, heldout_distance = nearest_training(train_features, heldout, query_name="heldout_features")
    _warn_about_reference(heldout_distance, q)
    threshold = float(np.quantile(heldout_distance, q))
    closer = fake_distance < threshold
    n_closer = int(closer.sum())
    median_fake, median_heldout = float(np.median(fake_distance)), float(np.median(heldout_distance))
    order = np.argsort(fake_distance, kind="stable")[:top_k]
    logger.info("memorisation: %d of %d synthetic images below the %.0f%% held-out quantile %.4f",
                n_closer, len(fake_distance), 100 * q, threshold)
    return {
        "metric": "memorisation", "distance": DISTANCE, "q": q, "threshold": threshold,
        "share_closer": n_closer / len(fake_distance), "n_closer": n_closer,
        "share_ci": wilson_interval(n_closer, len(fake_distance), confidence),
        "median_ratio": median_fake / median_heldout if median_heldout > 0 else math.nan,
        "median_fake_distance": median_fake, "median_heldout_distance": median_heldout,
        "fake_nn_index": fake_index, "fake_nn_distance": fake_distance, "heldout_nn_distance": heldout_distance,
        "nearest": [(int(i), int(fake_index[i]), float(fake_distance[i])) for i in order],
        "n_train": int(np.asarray(train_features).shape[0]), "n_fake": len(fake_distance),
        "n_heldout": len(heldout_distance), "confidence": confidence,
        "ci_method": "Wilson score interval (synthetic sampling only; threshold taken as fixed)",
    }


def _check_settings(q: float, confidence: float, top_k: int | None) -> None:
    if not 0.0 < q < 1.0:
        raise ValueError(f"q={q}; expected a quantile in (0, 1)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}; expected a value in (0, 1)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k}; expected None or at least 1")


def _warn_about_reference(heldout_distance: np.ndarray, q: float) -> None:
    """Warn when the held-out reference cannot support the threshold it is asked for."""
    leaked = int(np.sum(heldout_distance <= _DUPLICATE))
    if leaked:
        logger.warning("memorisation: %d held-out image(s) duplicate a training image; "
                       "the held-out set should be disjoint from training", leaked)
    if len(heldout_distance) < math.ceil(1.0 / q):
        logger.warning("memorisation: %d held-out images give only a coarse %.0f%% quantile (want >= %d)",
                       len(heldout_distance), 100 * q, math.ceil(1.0 / q))
