"""Do synthetic images show their pathology, and do they help a classifier? Pure functions on features.

Two measures, both with one classifier: ``StandardScaler`` + ``LogisticRegression(class_weight=
"balanced")`` on feature vectors (N, d), AD being the positive class for ROC AUC.

* **Label fidelity** (:func:`label_fidelity`): trained on real AD vs Non-AD features, the classifier
  first reports its own stratified cross-validated balanced accuracy and AUC on real images (a
  classifier near 0.5 cannot vouch for anything), then is fitted on all real images and applied to
  the synthetic ones: the share classified as the pathology they were generated to show, overall
  and per label, with Wilson intervals, and each image's probability of its intended label.
* **Augmentation utility** (:func:`augmentation_utility`): over repeated seeded stratified
  train/test splits of the real images, one classifier is trained on the real training part only
  and one on the real training part plus all synthetic images; both are tested on the same held-out
  real part (synthetic images are never tested on). Per split: balanced accuracy and AUC of each
  arm and their paired difference (augmented - real only).

Intervals over splits use the corrected resampled t-interval of Nadeau and Bengio (2003): the
variance of the mean over ``J`` splits is ``(1/J + n_test/n_train) * s^2`` instead of ``s^2 / J``.
Splits share training images, so their scores are correlated; a plain t-interval would be far too
narrow, and a percentile interval over splits describes the spread of single splits, not the
uncertainty of their mean.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from statsmodels.stats.proportion import proportion_confint

from common.labels import LABELS, validate_label

logger = logging.getLogger(__name__)

POSITIVE = "AD"
"""The positive class for ROC AUC and for the classifier's probabilities."""
CLASSIFIER = "StandardScaler + LogisticRegression(class_weight='balanced', max_iter=2000)"
MIN_PER_CLASS_CV = 2
MIN_PER_CLASS_SPLIT = 3
TRUSTWORTHY_BALANCED_ACCURACY = 0.6
"""Below this cross-validated balanced accuracy on real images, label fidelity is flagged as untrustworthy."""


class InvalidFeatures(ValueError):
    """A feature array is not a finite 2-D array, or its dimension does not match the other arrays."""


class TooFewSamples(ValueError):
    """Too few images overall, or of one class, for the requested folds or splits."""


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n``.

    Args:
        successes: Number of successes, 0 <= successes <= n.
        n: Number of trials, at least 1.
        confidence: Coverage, in (0, 1).

    Returns:
        ``(low, high)``; e.g. 8 of 10 at 95 % gives (0.4902, 0.9433).

    Raises:
        ValueError: If the counts or the confidence are out of range.
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"successes={successes}, n={n}; expected n >= 1 and 0 <= successes <= n")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}; expected a value in (0, 1)")
    low, high = proportion_confint(successes, n, alpha=1.0 - confidence, method="wilson")
    return (max(0.0, float(low)), min(1.0, float(high)))


def check_features(features, name: str, dim: int | None = None) -> np.ndarray:
    """Return ``features`` as a finite float64 (N, d) array with N >= 1.

    Args:
        features: Array-like of shape (N, d).
        name: Argument name used in error messages.
        dim: Required feature dimension ``d``, if known.

    Raises:
        InvalidFeatures: If the array is not 2-D, is empty, is not finite, or has the wrong ``d``.
    """
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidFeatures(f"{name} has shape {array.shape}; expected a non-empty (N, d) array")
    if dim is not None and array.shape[1] != dim:
        raise InvalidFeatures(f"{name} has feature dimension {array.shape[1]}; expected {dim} like the others")
    if not np.isfinite(array).all():
        raise InvalidFeatures(f"{name} holds NaN or infinite values")
    return array


def check_labels(labels, n: int, name: str) -> np.ndarray:
    """Return ``labels`` as a string array of length ``n``, each one of ``LABELS``.

    Raises:
        InvalidFeatures: If the number of labels differs from the number of feature rows.
        UnknownLabel: If a label is not one of ``LABELS``.
    """
    array = np.asarray(labels, dtype=object).reshape(-1)
    if len(array) != n:
        raise InvalidFeatures(f"{name} has {len(array)} labels for {n} feature rows")
    for label in set(array.tolist()):
        validate_label(label)
    return array.astype(str)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Number of images of each label in ``LABELS`` (zero when absent)."""
    return {label: int(np.sum(labels == label)) for label in LABELS}


def require_per_class(labels: np.ndarray, minimum: int, name: str) -> dict[str, int]:
    """Raise TooFewSamples unless every label in ``LABELS`` has at least ``minimum`` images."""
    counts = class_counts(labels)
    short = {label: count for label, count in counts.items() if count < minimum}
    if short:
        raise TooFewSamples(
            f"{name} has {counts} images per class; every class needs at least {minimum}"
        )
    return counts


def make_classifier() -> Pipeline:
    """A fresh, unfitted ``StandardScaler`` + balanced ``LogisticRegression``."""
    return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))


def _positive(labels: np.ndarray) -> np.ndarray:
    return (labels == POSITIVE).astype(int)


def _score(model: Pipeline, features: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Balanced accuracy and ROC AUC of a fitted model on (features, y)."""
    probability = model.predict_proba(features)[:, 1]
    return (float(balanced_accuracy_score(y, (probability >= 0.5).astype(int))),
            float(roc_auc_score(y, probability)))


def cross_validate_real(features: np.ndarray, labels: np.ndarray, *, n_splits: int = 5, seed: int = 0) -> dict:
    """Stratified k-fold balanced accuracy and AUC of the classifier on real images.

    Args:
        features: (N, d) validated features of real images.
        labels: N validated labels.
        n_splits: Requested folds; clamped to the size of the smallest class, with a warning.
        seed: Seed of the shuffled fold assignment.

    Returns:
        A dict with ``balanced_accuracy`` and ``auc`` (means over folds), ``balanced_accuracy_folds``
        and ``auc_folds`` (lists), ``n_splits`` (folds used) and ``n_per_class``.

    Raises:
        TooFewSamples: If a class has fewer than two images.
    """
    counts = require_per_class(labels, MIN_PER_CLASS_CV, "real_labels")
    folds = min(n_splits, min(counts.values()))
    if folds < n_splits:
        logger.warning("cross-validation: n_splits clamped from %d to %d (smallest class has %d images)",
                       n_splits, folds, min(counts.values()))
    y = _positive(labels)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for train, test in splitter.split(features, y):
        scores.append(_score(make_classifier().fit(features[train], y[train]), features[test], y[test]))
    bacc, auc = (list(column) for column in zip(*scores))
    return {"balanced_accuracy": float(np.mean(bacc)), "auc": float(np.mean(auc)),
            "balanced_accuracy_folds": bacc, "auc_folds": auc, "n_splits": folds, "n_per_class": counts}


def _share(hits: np.ndarray, confidence: float) -> dict:
    n_hits = int(hits.sum())
    return {"share": n_hits / len(hits), "ci": wilson_interval(n_hits, len(hits), confidence),
            "n_correct": n_hits, "n": int(len(hits))}


def label_fidelity(
    real_features, real_labels, fake_features, fake_labels,
    *, n_splits: int = 5, seed: int = 0, confidence: float = 0.95,
) -> dict:
    """Share of synthetic images that a classifier trained on real images assigns their intended label.

    Args:
        real_features: (N_real, d) features of real images.
        real_labels: N_real labels, each ``"AD"`` or ``"NonAD"``; both must be present.
        fake_features: (N_fake, d) features of synthetic images.
        fake_labels: N_fake intended labels (the pathology each image was generated to show).
        n_splits: Folds for the real cross-validation (clamped to the smallest class).
        seed: Seed for the fold assignment.
        confidence: Coverage of the Wilson intervals.

    Returns:
        A dict with ``metric``, ``classifier``, ``real_cv`` (see :func:`cross_validate_real`),
        ``share``, ``ci``, ``n_correct``, ``n`` (all synthetic), ``per_label`` (``{label: {"share",
        "ci", "n_correct", "n"}}`` for each label present among the synthetic images),
        ``probabilities`` (shape (N_fake,): probability of each image's intended label),
        ``n_real``, ``n_fake``, ``confidence`` and ``ci_method``.

    Raises:
        InvalidFeatures: On malformed or mismatched arrays.
        TooFewSamples: If a real class has fewer than two images.
        UnknownLabel: On a label outside ``LABELS``.
    """
    real = check_features(real_features, "real_features")
    fake = check_features(fake_features, "fake_features", dim=real.shape[1])
    real_y = check_labels(real_labels, len(real), "real_labels")
    fake_y = check_labels(fake_labels, len(fake), "fake_labels")
    cv = cross_validate_real(real, real_y, n_splits=n_splits, seed=seed)
    if cv["balanced_accuracy"] < TRUSTWORTHY_BALANCED_ACCURACY:
        logger.warning("label fidelity: the classifier's cross-validated balanced accuracy on real images is "
                       "%.2f; its verdict on synthetic images is not trustworthy", cv["balanced_accuracy"])
    p_positive = make_classifier().fit(real, _positive(real_y)).predict_proba(fake)[:, 1]
    probabilities = np.where(fake_y == POSITIVE, p_positive, 1.0 - p_positive)
    hits = (p_positive >= 0.5) == (fake_y == POSITIVE)  # the same rule as the classifier's predict
    per_label = {label: _share(hits[fake_y == label], confidence)
                 for label in LABELS if np.any(fake_y == label)}
    return {"metric": "label_fidelity", "classifier": CLASSIFIER, "real_cv": cv,
            **_share(hits, confidence), "per_label": per_label, "probabilities": probabilities,
            "n_real": class_counts(real_y), "n_fake": class_counts(fake_y), "confidence": confidence,
            "ci_method": "Wilson score interval"}


def corrected_t_interval(
    values, test_fraction: float, confidence: float = 0.95,
) -> tuple[float, tuple[float, float], float]:
    """Mean over resampled splits with the Nadeau-Bengio corrected t-interval and two-sided p-value.

    Args:
        values: One value per split (J >= 2).
        test_fraction: ``n_test / n_train`` of the splits.
        confidence: Coverage of the interval.

    Returns:
        ``(mean, (low, high), p_value)`` where the p-value tests mean = 0 (meaningful for differences).
    """
    values = np.asarray(values, dtype=np.float64)
    mean, j = float(values.mean()), len(values)
    se = math.sqrt((1.0 / j + test_fraction) * float(values.var(ddof=1)))
    if se == 0.0:
        return mean, (mean, mean), (1.0 if mean == 0.0 else 0.0)
    t_crit = stats.t.ppf(0.5 + confidence / 2.0, df=j - 1)
    p_value = float(2.0 * stats.t.sf(abs(mean) / se, df=j - 1))
    return mean, (mean - t_crit * se, mean + t_crit * se), p_value


def _check_split_sizes(counts: dict[str, int], test_size: float, n_repeats: int, confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence}; expected a value in (0, 1)")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size={test_size}; expected a fraction in (0, 1)")
    if n_repeats < 2:
        raise ValueError(f"n_repeats={n_repeats}; expected at least 2 for an interval")
    smallest = min(counts.values())
    if smallest * test_size < 1.0 or smallest * (1.0 - test_size) < 2.0:
        raise TooFewSamples(
            f"real_labels has {counts} images per class; with test_size={test_size} every class needs at least "
            f"{max(MIN_PER_CLASS_SPLIT, math.ceil(1.0 / test_size), math.ceil(2.0 / (1.0 - test_size)))}"
        )


def augmentation_utility(
    real_features, real_labels, fake_features, fake_labels,
    *, n_repeats: int = 20, test_size: float = 0.3, seed: int = 0, confidence: float = 0.95,
) -> dict:
    """Real-only versus real + synthetic training, tested on held-out real images over repeated splits.

    Args:
        real_features: (N_real, d) features of real images.
        real_labels: N_real labels; both classes needed, enough of each for ``test_size``.
        fake_features: (N_fake, d) features of synthetic images of one checkpoint.
        fake_labels: N_fake intended labels.
        n_repeats: Number of seeded stratified shuffle splits (>= 2).
        test_size: Fraction of the real images held out per split.
        seed: Seed of the splits.
        confidence: Coverage of the intervals.

    Returns:
        A dict with ``metric``, ``classifier``, ``real_only`` and ``augmented`` (each
        ``{"balanced_accuracy": {"mean", "ci", "per_split"}, "auc": {...}}``), ``difference``
        (augmented - real only, per split: ``{"balanced_accuracy": {"mean", "ci", "p_value",
        "per_split"}, "auc": {...}}``), ``n_repeats``, ``test_size``, ``n_real``, ``n_fake``,
        ``n_test``, ``seed``, ``confidence`` and ``ci_method``.

    Raises:
        InvalidFeatures: On malformed or mismatched arrays.
        TooFewSamples: If a real class is too small for the splits.
        UnknownLabel: On a label outside ``LABELS``.
        ValueError: If ``n_repeats``, ``test_size`` or ``confidence`` is out of range.
    """
    real = check_features(real_features, "real_features")
    fake = check_features(fake_features, "fake_features", dim=real.shape[1])
    real_labels = check_labels(real_labels, len(real), "real_labels")
    fake_labels = check_labels(fake_labels, len(fake), "fake_labels")
    counts = require_per_class(real_labels, MIN_PER_CLASS_SPLIT, "real_labels")
    _check_split_sizes(counts, test_size, n_repeats, confidence)
    real_y, fake_y = _positive(real_labels), _positive(fake_labels)
    splitter = StratifiedShuffleSplit(n_splits=n_repeats, test_size=test_size, random_state=seed)
    runs = {"real_only": [], "augmented": []}
    for train, test in splitter.split(real, real_y):
        if len(set(real_y[test].tolist())) < 2:
            raise TooFewSamples(f"a test split of real_labels ({counts} per class) lacks a class; raise test_size")
        base = make_classifier().fit(real[train], real_y[train])
        augmented = make_classifier().fit(np.vstack([real[train], fake]), np.concatenate([real_y[train], fake_y]))
        runs["real_only"].append(_score(base, real[test], real_y[test]))
        runs["augmented"].append(_score(augmented, real[test], real_y[test]))
    n_test = len(test)
    ratio = n_test / (len(real) - n_test)
    result = {arm: _summarise(np.array(scores), ratio, confidence, (0.0, 1.0)) for arm, scores in runs.items()}
    paired = np.array(runs["augmented"]) - np.array(runs["real_only"])
    result["difference"] = _summarise(paired, ratio, confidence, (-1.0, 1.0), with_p=True)
    logger.info("augmentation utility over %d splits: AUC difference %.3f", n_repeats,
                result["difference"]["auc"]["mean"])
    return {"metric": "augmentation_utility", "classifier": CLASSIFIER, **result, "n_repeats": n_repeats,
            "test_size": test_size, "n_real": counts, "n_fake": class_counts(fake_labels), "n_test": n_test,
            "seed": seed, "confidence": confidence,
            "ci_method": "Nadeau-Bengio corrected resampled t-interval over splits"}


def _summarise(
    scores: np.ndarray, ratio: float, confidence: float, bounds: tuple[float, float], with_p: bool = False,
) -> dict:
    """Per-measure mean, corrected interval and per-split values from a (J, 2) score array.

    The t-interval is symmetric and can leave the range the measure can take; it is clipped to ``bounds``.
    """
    summary = {}
    for column, measure in enumerate(("balanced_accuracy", "auc")):
        mean, (low, high), p_value = corrected_t_interval(scores[:, column], ratio, confidence)
        ci = (max(low, bounds[0]), min(high, bounds[1]))
        summary[measure] = {"mean": mean, "ci": ci, "per_split": scores[:, column].tolist()}
        if with_p:
            summary[measure]["p_value"] = p_value
    return summary
