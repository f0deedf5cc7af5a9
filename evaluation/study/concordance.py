"""Do the metrics agree with the experts? Checkpoint-level and image-level links.

Checkpoint level: for each metric and expert outcome, Spearman's rho and Kendall's tau across the
study's checkpoints, with p-values (exact permutation for small n) and percentile bootstrap
intervals that resample raters and, within each checkpoint, images (so the interval reflects who
rated and what was shown; the metric values are held fixed: their own uncertainty is not
propagated). With few checkpoints a correlation cannot support a conclusion, and the result says so.

Image level: for synthetic images with enough ratings, the share of raters who took the image for
real against the image's distance to its nearest real image and its label-fidelity score.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from common.labels import LABELS

OUTCOMES: dict[str, str] = {
    "fooling_rate": "synthetic images judged real (pair mode: rater fooled)",
    "realism_mean": "mean realism score of synthetic images (single mode)",
    "pathology_accuracy": "experts' pathology accuracy on synthetic images",
    "clinical_gap": "pathology accuracy on real minus on synthetic images",
}
METRICS: tuple[str, ...] = ("fid", "kid", "precision", "recall", "density", "coverage", "diversity_ms_ssim",
                            "label_fidelity", "augmentation_utility", "memorisation")
MIRRORS: dict[str, str] = {"clinical_gap": "pathology_accuracy"}
"""Outcomes derived from another one: the same test when their checkpoint ranks mirror it."""
MIN_CHECKPOINTS = 3
MIN_IMAGE_RATINGS = 3
EXACT_MAX_N = 8


class OutcomeData:
    """One expert outcome's ratings as arrays, so bootstrap resamples cost a few bincounts.

    Args:
        frame: From ``evaluation.study.outcomes.ratings_frame``.
        outcome: One of ``OUTCOMES``.

    Raises:
        ValueError: For an unknown outcome.
    """

    def __init__(self, frame: pd.DataFrame, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        self.outcome = outcome
        rows = frame[(frame["trial_kind"] == "normal") & frame["group"].ne("attention")]
        column = {"fooling_rate": "judged_real", "realism_mean": "realism"}.get(outcome, "pathology_correct")
        values = pd.to_numeric(rows[column], errors="coerce")
        keep = values.notna() & ((rows["image_source"] == "synthetic") | (outcome == "clinical_gap"))
        rows, self.values = rows[keep], values[keep].to_numpy(float)
        self.raters, self.rater_code = np.unique(rows["rater"].to_numpy(str), return_inverse=True)
        self.images, self.image_code = np.unique(rows["image_sha256"].to_numpy(str), return_inverse=True)
        self.groups, self.group_code = np.unique(rows["group"].to_numpy(str), return_inverse=True)
        self.checkpoints = [g for g in self.groups if g != "real"]
        image_group = np.empty(len(self.images), dtype=int)
        image_group[self.image_code] = self.group_code
        self.images_by_group = [np.flatnonzero(image_group == g) for g in range(len(self.groups))]

    def per_checkpoint(self, rater_weight: np.ndarray | None = None, image_weight: np.ndarray | None = None) -> dict[str, float]:
        """``{checkpoint: value}``, optionally with bootstrap counts per rater and per image (by code)."""
        weight = np.ones(len(self.values))
        if rater_weight is not None:
            weight = weight * rater_weight[self.rater_code]
        if image_weight is not None:
            weight = weight * image_weight[self.image_code]
        total = np.bincount(self.group_code, weight, len(self.groups))
        summed = np.bincount(self.group_code, weight * self.values, len(self.groups))
        with np.errstate(invalid="ignore", divide="ignore"):
            means = dict(zip(self.groups, summed / total))
        real = means.pop("real", np.nan)
        if self.outcome == "clinical_gap":
            means = {name: real - value for name, value in means.items()}
        return {str(name): float(value) for name, value in means.items() if np.isfinite(value)}

    def bootstrap(self, n_boot: int, seed: int) -> pd.DataFrame:
        """``n_boot`` resamples (rows) of the outcome per checkpoint (columns): raters, and images
        within each checkpoint (and within the real set), drawn with replacement."""
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(n_boot):
            rater_weight = np.bincount(rng.integers(0, len(self.raters), len(self.raters)), minlength=len(self.raters))
            image_weight = np.zeros(len(self.images))
            for members in self.images_by_group:
                np.add.at(image_weight, rng.choice(members, len(members)), 1)
            values = self.per_checkpoint(rater_weight.astype(float), image_weight)
            draws.append([values.get(name, np.nan) for name in self.checkpoints])
        return pd.DataFrame(draws, columns=self.checkpoints)


def checkpoint_outcomes(frame: pd.DataFrame, outcome: str) -> dict[str, float]:
    """An expert outcome (one of ``OUTCOMES``) per checkpoint: ``{checkpoint name: value}``."""
    return OutcomeData(frame, outcome).per_checkpoint()


def correlate(metric_values: dict[str, float], data: OutcomeData, draws: pd.DataFrame | None = None) -> dict:
    """Spearman and Kendall correlation of a metric with an expert outcome across checkpoints.

    Args:
        metric_values: ``{checkpoint name: metric value}`` (missing or None values are left out).
        data: The outcome's ratings.
        draws: ``data.bootstrap(...)``, shared between metrics; no intervals without it.

    Returns:
        ``outcome, n_checkpoints, spearman, spearman_p, spearman_low, spearman_high, kendall,
        kendall_p, kendall_low, kendall_high, conclusive`` (Spearman's p < 0.05, for this one
        comparison: ``adjust_for_multiplicity`` corrects a table of them), ``note``, and the paired
        ``points`` ``[(checkpoint, metric, outcome)]``.
    """
    observed = data.per_checkpoint()
    names = sorted(name for name in observed if _finite(metric_values.get(name)))
    result = {"outcome": data.outcome, "n_checkpoints": len(names), "conclusive": False,
              "points": [(name, float(metric_values[name]), observed[name]) for name in names]}
    result.update(dict.fromkeys(("spearman", "spearman_p", "spearman_low", "spearman_high",
                                 "kendall", "kendall_p", "kendall_low", "kendall_high")))
    if len(names) < MIN_CHECKPOINTS:
        result["note"] = (f"n = {len(names)} checkpoint(s) with both a metric value and ratings: at least "
                          f"{MIN_CHECKPOINTS} are needed to compute a correlation, and many more to conclude anything")
        return result
    x = np.array([metric_values[name] for name in names], float)
    y = np.array([observed[name] for name in names], float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        result["note"] = "the metric or the outcome is the same for every checkpoint: no correlation defined"
        return result
    result["spearman"], result["spearman_p"] = _spearman(x, y)
    tau = stats.kendalltau(x, y)
    result["kendall"], result["kendall_p"] = float(tau.statistic), float(tau.pvalue)
    if draws is not None:
        for key, low_high in _intervals(x, draws[names].to_numpy(float)).items():
            result[f"{key}_low"], result[f"{key}_high"] = low_high
    result["conclusive"] = bool(result["spearman_p"] < 0.05)
    result["note"] = _note(len(names), result)
    return result


def adjust_for_multiplicity(rows: list[dict]) -> list[dict]:
    """Holm-adjust the Spearman p-values of a table of correlations (``spearman_p_holm``), over
    distinct tests only; a row stays ``conclusive`` only if its adjusted p is below 0.05.

    Two rows are one test when they correlate the same metric with mirrored outcomes (``MIRRORS``:
    ``clinical_gap`` is the real accuracy minus ``pathology_accuracy``) whose checkpoint ranks are
    equal or exactly reversed, as they are whenever every checkpoint shares the real accuracy: they
    have the same |rho| and p, so Holm counts them once and the mirror's note says so. Other
    outcomes that merely happen to rank the checkpoints alike remain tests of their own.
    """
    from statsmodels.stats.multitest import multipletests

    tested = [row for row in rows if row.get("spearman_p") is not None]
    for row in rows:
        row["spearman_p_holm"] = None
    families: dict = {}
    for row in tested:
        families.setdefault(_test_key(row), []).append(row)
    if not families:
        return rows
    adjusted = multipletests([members[0]["spearman_p"] for members in families.values()], method="holm")[1]
    for members, p in zip(families.values(), adjusted):
        for i, row in enumerate(members):
            row["spearman_p_holm"] = float(p)
            if i:
                row["note"] += (f"; same test as {members[0]['outcome']} (its checkpoint ranks mirror it): "
                                "counted once by Holm")
            if row["conclusive"] and p >= 0.05:
                row["conclusive"] = False
                row["note"] += (f"; not significant after Holm's correction for {len(families)} distinct "
                                f"comparisons (p {p:.3f})")
    return rows


def _test_key(row: dict) -> tuple:
    """(metric, outcome or the one it mirrors, checkpoints, outcome ranks up to reversal): rows with
    the same key are one test."""
    names = tuple(point[0] for point in row["points"])
    ranks = stats.rankdata([point[2] for point in row["points"]])
    outcome = MIRRORS.get(row["outcome"], row["outcome"])
    return row["metric"], outcome, names, min(tuple(ranks), tuple(len(ranks) + 1 - ranks))


def image_scores(real_features: np.ndarray, real_labels: list[str], fake_features: np.ndarray,
                 fake_labels: list[str]) -> pd.DataFrame:
    """Per synthetic image: cosine distance to the nearest real image and label-fidelity score.

    The label-fidelity score is the probability of the intended pathology under a logistic
    regression on standardised real features (the real images are the training set; synthetic
    images are never in it). NaN when the real set lacks either pathology.

    Returns:
        DataFrame with ``nearest_real_distance`` and ``label_fidelity_score``, one row per fake.
    """
    real = _unit(np.asarray(real_features, float))
    fake = _unit(np.asarray(fake_features, float))
    nearest = 1.0 - (fake @ real.T).max(axis=1)
    fidelity = np.full(len(fake), np.nan)
    labels = np.asarray(real_labels)
    if all((labels == label).sum() >= 2 for label in LABELS):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        model.fit(real_features, labels)
        proba = model.predict_proba(fake_features)
        column = {label: i for i, label in enumerate(model.classes_)}
        fidelity = np.array([proba[i, column[label]] if label in column else np.nan for i, label in enumerate(fake_labels)])
    return pd.DataFrame({"nearest_real_distance": nearest, "label_fidelity_score": fidelity})


def image_links(frame: pd.DataFrame, scores: pd.DataFrame, min_ratings: int = MIN_IMAGE_RATINGS,
                n_boot: int = 500, seed: int = 0) -> tuple[pd.DataFrame, list[dict]]:
    """Per synthetic image judged-real rate beside its scores, and Spearman links over images.

    Args:
        frame: From ``ratings_frame``.
        scores: Indexed by image sha256, columns such as ``nearest_real_distance``.
        min_ratings: Images with fewer ratings are listed but left out of the correlations.

    Returns:
        (per-image table, one dict per score: ``score, n_images, spearman, p, low, high, note``).
    """
    rows = frame[(frame["trial_kind"] == "normal") & (frame["image_source"] == "synthetic")]
    per_image = rows.groupby("image_sha256").agg(
        checkpoint=("group", "first"), label=("image_label", "first"), n_ratings=("judged_real", "size"),
        judged_real=("judged_real", "mean")).join(scores, how="left")
    enough = per_image[per_image["n_ratings"] >= min_ratings]
    rng = np.random.default_rng(seed)
    links = []
    for score in scores.columns:
        usable = enough[enough[score].notna()]
        link = {"score": score, "n_images": len(usable), "spearman": None, "p": None, "low": None, "high": None}
        if len(usable) < 10 or usable[score].nunique() < 2 or usable["judged_real"].nunique() < 2:
            link["note"] = (f"{len(usable)} images with >= {min_ratings} ratings and a score: too few (or no "
                            "variation) to relate ratings to this score")
        else:
            x, y = usable[score].to_numpy(float), usable["judged_real"].to_numpy(float)
            rho = stats.spearmanr(x, y)
            draws = []
            for _ in range(n_boot):
                pick = rng.integers(0, len(x), len(x))
                if np.ptp(x[pick]) > 0 and np.ptp(y[pick]) > 0:  # a constant resample has no rank correlation
                    draws.append(stats.spearmanr(x[pick], y[pick]).statistic)
            low, high = np.percentile(draws, [2.5, 97.5])
            link.update(spearman=float(rho.statistic), p=float(rho.pvalue), low=float(low), high=float(high),
                        note=f"over {len(usable)} images (bootstrap over images)")
        links.append(link)
    return per_image.reset_index(), links


def _intervals(x: np.ndarray, draws: np.ndarray) -> dict[str, tuple[float, float] | tuple[None, None]]:
    """Percentile intervals of rho and tau over bootstrap draws of the outcome (metric held fixed)."""
    found: dict[str, list[float]] = {"spearman": [], "kendall": []}
    for y in draws:
        keep = np.isfinite(y)
        if keep.sum() >= MIN_CHECKPOINTS and np.ptp(y[keep]) > 0 and np.ptp(x[keep]) > 0:
            found["spearman"].append(stats.spearmanr(x[keep], y[keep]).statistic)
            found["kendall"].append(stats.kendalltau(x[keep], y[keep]).statistic)
    return {key: tuple(float(v) for v in np.percentile(values, [2.5, 97.5])) if len(values) >= 10 else (None, None)
            for key, values in found.items()}


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    rho = float(stats.spearmanr(x, y).statistic)
    if len(x) > EXACT_MAX_N:
        return rho, float(stats.spearmanr(x, y).pvalue)
    # Exact two-sided permutation p-value (the t approximation is poor for a handful of checkpoints).
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    shuffled = ry[np.array(list(itertools.permutations(range(len(ry)))))]
    rx_c = rx - rx.mean()
    sy = shuffled - shuffled.mean(axis=1, keepdims=True)
    rhos = (sy @ rx_c) / (np.linalg.norm(sy, axis=1) * np.linalg.norm(rx_c))
    return rho, float(np.mean(np.abs(rhos) >= abs(rho) - 1e-9))


def _note(n: int, result: dict) -> str:
    smallest = 2.0 / math.factorial(n) if n <= EXACT_MAX_N else 0.0
    if smallest >= 0.05:
        return (f"n = {n} checkpoints: even a perfect rank agreement could not reach p < 0.05 "
                f"(smallest possible two-sided p = {smallest:.3f}); too few to conclude anything")
    if not result["conclusive"]:
        return f"n = {n} checkpoints: no evidence of a monotone link (p >= 0.05); absence of evidence, not evidence of absence"
    return f"n = {n} checkpoints; the metric's own uncertainty is not propagated into the interval"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _finite(value) -> bool:
    return value is not None and math.isfinite(float(value))
