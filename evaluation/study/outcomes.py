"""Expert outcomes of one study, per checkpoint and pathology, from its tidy ratings.

The input is the study's ratings export (``database.ratings.export_rows``: one row per rating
and shown image, documented in docs/review-export.md). ``ratings_frame`` adds the derived
columns every figure uses; ``outcome_table`` summarises them per group (``real`` or a
checkpoint), pathology scope and, optionally, rater stratum:

- single mode: the share of images judged real (for synthetic images, the *fooling rate*) with a
  Wilson interval, and the realism scores;
- pair mode: two-alternative accuracy (the synthetic image picked) with an exact Clopper-Pearson
  interval and a two-sided binomial test against 50 %;
- both: pathology accuracy and the confidence-based ROC AUC of the pathology calls, with "cannot
  tell" read by the one rule of ``evaluation.study.notes`` (not correct; the AUC's middle) and the
  other reading (left out) beside it, and response times.

Every row has a ``note`` saying what it rests on and whether n is too small to conclude.
(About 400 lines: one export's derived columns and every outcome read from them belong together.)

Only ``normal`` trials count: planned repeats would count one rater's view of an image twice and
attention checks are scored apart (``attention_frame``, ``repeat_pairs``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import confint_proportions_2indep

from common.labels import LABELS
from evaluation.study.notes import CANNOT_TELL, basis_note, cannot_tell_note, join
from evaluation.utility import wilson_interval

SCOPES: tuple[str, ...] = (*LABELS, "pooled")
STRATA: dict[str, str | None] = {
    "none": None, "specialty": "rater_specialty", "experience": "experience", "colonoscopies": "rater_colonoscopies",
}
EXPERIENCE_BANDS: tuple[str, ...] = ("<5 years", "5-14 years", ">=15 years", "not given")
REQUIRED_COLUMNS: tuple[str, ...] = (
    "mode", "rater", "trial_id", "trial_kind", "position", "repeat_of", "side", "synthetic_side", "image_sha256",
    "image_source", "image_label", "checkpoint_id", "checkpoint_name", "checkpoint_step", "real_or_synthetic", "source_confidence",
    "realism", "pathology", "pathology_confidence", "synthetic_choice", "choice_confidence", "pathology_left",
    "pathology_right", "response_ms", "rater_specialty", "rater_years_practice", "rater_colonoscopies",
)


class AnalysisError(ValueError):
    """A study that cannot be analysed as asked (no ratings, unknown stratum, bad export)."""


def ratings_frame(rows: list[dict]) -> pd.DataFrame:
    """The study's export rows as a DataFrame with derived columns.

    Added columns: ``group`` (``real``, ``attention`` or the checkpoint name), ``judged_real``
    (1.0 if the rater took this image for real: single mode their call, pair mode the other image
    picked as synthetic), ``correct_source`` (single: the call matches the source, attention images
    being synthetic; pair: the synthetic image was picked), ``pair_item`` (pair mode: the synthetic
    and the real image of the trial), ``pathology_call`` (this image's pathology call),
    ``pathology_correct`` (1/0 on labelled images with an answer, "cannot tell" counting 0; NaN
    otherwise), ``pathology_score``
    (signed confidence that the image shows AD: +c for an AD call, -c for NonAD, 0 for "cannot
    tell"; pair mode has no pathology confidence, so +-1), ``experience`` (years of practice band).

    Raises:
        AnalysisError: If there are no rows, columns are missing, or modes are mixed.
    """
    if not rows:
        raise AnalysisError("the study has no ratings yet: nothing to analyse")
    frame = pd.DataFrame(rows)
    missing = [name for name in REQUIRED_COLUMNS if name not in frame.columns]
    if missing:
        raise AnalysisError(f"ratings export lacks columns {missing}; expected the columns of docs/review-export.md")
    modes = set(frame["mode"])
    if len(modes) != 1 or not modes <= {"single", "pair"}:
        raise AnalysisError(f"one study at a time: modes {sorted(modes)} found, expected one of single, pair")
    single = frame["mode"].iloc[0] == "single"
    source = frame["image_source"]
    frame["group"] = np.where(source == "synthetic", frame["checkpoint_id"].map(checkpoint_labels(frame)), source)
    if single:
        frame["judged_real"] = (frame["real_or_synthetic"] == "real").astype(float)
        # Attention images are synthetic (deliberately flawed): calling them synthetic is correct.
        truth = np.where(source == "real", "real", "synthetic")
        frame["correct_source"] = (frame["real_or_synthetic"] == truth).astype(float)
        frame["pair_item"] = None
        frame["pathology_call"] = frame["pathology"]
        confidence = pd.to_numeric(frame["pathology_confidence"], errors="coerce").fillna(1.0)
    else:
        frame["judged_real"] = (frame["synthetic_choice"] != frame["side"]).astype(float)
        frame["correct_source"] = (frame["synthetic_choice"] == frame["synthetic_side"]).astype(float)
        frame["pathology_call"] = np.where(frame["side"] == "left", frame["pathology_left"], frame["pathology_right"])
        confidence = pd.Series(1.0, index=frame.index)
        frame["pair_item"] = _pair_items(frame)
    answered = frame["pathology_call"].isin((*LABELS, CANNOT_TELL)) & frame["image_label"].isin(LABELS)
    frame["pathology_correct"] = np.where(answered, (frame["pathology_call"] == frame["image_label"]).astype(float),
                                          np.nan)
    sign = frame["pathology_call"].map({"AD": 1.0, "NonAD": -1.0}).fillna(0.0)
    frame["pathology_score"] = sign * confidence
    frame["experience"] = frame["rater_years_practice"].map(_experience_band)
    for name in ("rater_specialty", "rater_colonoscopies"):
        frame[name] = frame[name].fillna("not given").replace("", "not given")
    return frame


def checkpoint_labels(frame: pd.DataFrame) -> dict:
    """``{checkpoint_id: group label}``: the checkpoint's name, with ``(#id)`` added where two
    checkpoints of the study share a name (e.g. retrained into the same folder)."""
    synthetic = frame.loc[frame["image_source"] == "synthetic", ["checkpoint_id", "checkpoint_name"]].drop_duplicates()
    clash = synthetic["checkpoint_name"].duplicated(keep=False)
    return {cid: f"{name} (#{cid})" if twice else str(name)
            for cid, name, twice in zip(synthetic["checkpoint_id"], synthetic["checkpoint_name"], clash)}


def outcome_table(frame: pd.DataFrame, stratify: str = "none", seed: int = 0, n_boot: int = 200) -> list[dict]:
    """Expert outcomes per (stratum, group, scope): one dict per row, ``None`` where not applicable.

    Args:
        frame: From ``ratings_frame``.
        stratify: One of ``STRATA`` (``none``, ``specialty``, ``experience``, ``colonoscopies``).
        seed: Seed of the bootstrap for AUC intervals.
        n_boot: Bootstrap resamples for AUC intervals.

    Returns:
        Rows with ``stratum, group, checkpoint_step, scope, n_ratings, n_images, n_raters,
        judged_real, judged_real_low, judged_real_high`` (single mode), ``accuracy_2afc, accuracy_low,
        accuracy_high, p_vs_chance`` (pair mode, synthetic groups); ``*_low``/``*_high`` are Wilson or
        exact intervals that treat ratings as independent, ``*_boot_low``/``*_boot_high`` the two-way
        (raters x images) cluster bootstrap intervals that do not; ``realism_mean`` and
        ``realism_1`` ... ``realism_5`` (single mode), ``pathology_called, pathology_cannot_tell,
        pathology_accuracy, pathology_low, pathology_high, pathology_auc, auc_low, auc_high`` and
        ``response_ms_median, response_ms_q1, response_ms_q3``.

    Raises:
        AnalysisError: For an unknown ``stratify``.
    """
    column = _stratum_column(stratify)
    normal = frame[frame["trial_kind"] == "normal"]
    rng = np.random.default_rng(seed)
    rows = []
    strata = [("all", normal)] if column is None else sorted(normal.groupby(column, dropna=False), key=lambda kv: str(kv[0]))
    for stratum, part in strata:
        for group in group_order(part):
            members = part[part["group"] == group]
            for scope in SCOPES:
                chosen = members if scope == "pooled" else members[members["image_label"] == scope]
                if len(chosen):
                    rows.append({"stratum": str(stratum), "group": group,
                                 "checkpoint_step": _step(chosen), "scope": scope,
                                 **_outcomes(chosen, rng, n_boot)})
    return rows


def clinical_gap(frame: pd.DataFrame) -> list[dict]:
    """Pathology accuracy on real minus synthetic images, per checkpoint (pooled over pathologies).

    "Cannot tell" counts as not correct (``evaluation.study.notes``); ``gap_called_only`` (with
    ``gap_called_only_low``/``_high``) is the other reading, "cannot tell" left out. The interval
    is Newcombe's hybrid score interval for two independent proportions (statsmodels
    ``confint_proportions_2indep``); ratings of the same raters are not independent, so read it as
    approximate.
    """
    normal = frame[(frame["trial_kind"] == "normal") & frame["pathology_correct"].notna()]
    called = normal[normal["pathology_call"] != CANNOT_TELL]
    rows = []
    for group in group_order(normal):
        if group == "real":
            continue
        row = {"group": group, "checkpoint_step": _step(normal[normal["group"] == group])}
        row.update(_gap(normal, group, ""))
        row.update(_gap(called, group, "_called_only"))
        members = normal[normal["group"].isin(("real", group))]
        row["note"] = join(basis_note(len(members), int(members["rater"].nunique()), int(members["image_sha256"].nunique()),
                                      interval=(row["gap_low"], row["gap_high"])), cannot_tell_note(
            row["gap"], row["gap_called_only"], int((members["pathology_call"] == CANNOT_TELL).sum()), "gap"),
            "Newcombe interval treats ratings as independent (approximate)")
        rows.append(row)
    return rows


def _gap(rows: pd.DataFrame, group: str, suffix: str) -> dict:
    """Real minus ``group`` accuracy over ``rows`` with Newcombe's interval, keys suffixed by ``suffix``."""
    real = rows[rows["group"] == "real"]["pathology_correct"]
    synthetic = rows[rows["group"] == group]["pathology_correct"]
    out = {f"real_accuracy{suffix}": _mean(real), f"synthetic_accuracy{suffix}": _mean(synthetic),
           f"n_real{suffix}": len(real), f"n_synthetic{suffix}": len(synthetic),
           f"gap{suffix}": None, f"gap{suffix}_low": None, f"gap{suffix}_high": None}
    if len(real) and len(synthetic):
        low, high = confint_proportions_2indep(int(real.sum()), len(real), int(synthetic.sum()), len(synthetic),
                                               method="newcomb", compare="diff")
        out.update({f"gap{suffix}": out[f"real_accuracy{suffix}"] - out[f"synthetic_accuracy{suffix}"],
                    f"gap{suffix}_low": float(low), f"gap{suffix}_high": float(high)})
    return out


def attention_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per attention trial: ``rater`` and ``passed`` (called synthetic / picked as synthetic)."""
    rows = frame[(frame["trial_kind"] == "attention") & (frame["image_source"] == "attention")]
    return pd.DataFrame({"rater": rows["rater"].to_numpy(), "passed": (rows["judged_real"] == 0.0).to_numpy()})


def repeat_pairs(frame: pd.DataFrame, answer: str) -> pd.DataFrame:
    """A rater's two answers to the same trial shown twice (``rater, first, second``).

    Args:
        frame: From ``ratings_frame``.
        answer: The answer column compared: e.g. ``real_or_synthetic``, ``realism``, ``pathology_call``,
            or ``judged_real``. For pairs the left/right sides are swapped on the repeat, so compare
            image-level columns (``judged_real``, ``pathology_call``) of the same image.
    """
    if frame["mode"].iloc[0] == "pair" and answer == "judged_real":
        # Both images of a pair carry the same choice, mirrored: compare it once, on the synthetic image.
        frame = frame[frame["image_source"] == "synthetic"]
    repeats = frame[frame["trial_kind"] == "repeat"]
    originals = frame[frame["trial_kind"] != "repeat"]
    merged = repeats.merge(originals, left_on=["rater", "repeat_of", "image_sha256"],
                           right_on=["rater", "position", "image_sha256"], suffixes=("_second", "_first"))
    merged = merged[merged[f"{answer}_first"].notna() & merged[f"{answer}_second"].notna()]
    return pd.DataFrame({"rater": merged["rater"].to_numpy(), "first": merged[f"{answer}_first"].to_numpy(),
                         "second": merged[f"{answer}_second"].to_numpy()})


def item_ratings(frame: pd.DataFrame, answer: str) -> pd.DataFrame:
    """Long-form ratings for agreement statistics: ``item, rater, value`` over normal trials.

    Single mode: items are images. Pair mode, ``correct_source``: items are the pairs themselves
    (the synthetic *and* the real image shown together, ``pair_item``), so two raters agree only
    about the same comparison, and the value is whether the rater found the synthetic image;
    ``pathology_call`` stays per image.
    """
    normal = frame[(frame["trial_kind"] == "normal") & (frame["image_source"] != "attention")]
    items = normal["image_sha256"]
    if frame["mode"].iloc[0] == "pair" and answer == "correct_source":
        normal = normal[normal["image_source"] == "synthetic"]
        items = normal["pair_item"]
        values = normal["correct_source"].map({1.0: "found", 0.0: "missed"})
    else:
        values = normal[answer]
    out = pd.DataFrame({"item": items.to_numpy(), "rater": normal["rater"].to_numpy(), "value": values.to_numpy()})
    return out[out["value"].notna()].reset_index(drop=True)


def group_order(frame: pd.DataFrame) -> list[str]:
    """``real`` first, then checkpoints by training step and name; attention images left out."""
    synthetic = frame[frame["image_source"] == "synthetic"]
    steps = synthetic.groupby("group")["checkpoint_step"].min()
    ordered = sorted(steps.index, key=lambda name: (_number(steps[name]), str(name)))
    return (["real"] if (frame["group"] == "real").any() else []) + ordered


def _outcomes(rows: pd.DataFrame, rng: np.random.Generator, n_boot: int) -> dict:
    single = rows["mode"].iloc[0] == "single"
    synthetic = (rows["image_source"] == "synthetic").all()
    out: dict = {"n_ratings": int(rows["trial_id"].nunique()), "n_images": int(rows["image_sha256"].nunique()),
                 "n_raters": int(rows["rater"].nunique())}
    out.update(dict.fromkeys(("judged_real", "judged_real_low", "judged_real_high", "accuracy_2afc", "accuracy_low",
                              "accuracy_high", "p_vs_chance", "realism_mean", *[f"realism_{k}" for k in range(1, 6)])))
    out.update(dict.fromkeys(("judged_real_boot_low", "judged_real_boot_high", "accuracy_boot_low", "accuracy_boot_high",
                              "pathology_boot_low", "pathology_boot_high")))
    judged = rows["judged_real"]
    if single:
        k, n = int(judged.sum()), len(judged)
        out["judged_real"] = k / n
        out["judged_real_low"], out["judged_real_high"] = wilson_interval(k, n)
        out["judged_real_boot_low"], out["judged_real_boot_high"] = _cluster_interval(rows, judged, rng, n_boot)
        realism = pd.to_numeric(rows["realism"], errors="coerce").dropna()
        if len(realism):
            out["realism_mean"] = float(realism.mean())
            for score in range(1, 6):
                out[f"realism_{score}"] = int((realism == score).sum())
    elif synthetic:
        correct = rows["correct_source"]
        k, n = int(correct.sum()), len(correct)
        test = stats.binomtest(k, n, 0.5)
        interval = test.proportion_ci(confidence_level=0.95, method="exact")
        out.update(accuracy_2afc=k / n, accuracy_low=float(interval.low), accuracy_high=float(interval.high),
                   p_vs_chance=float(test.pvalue))
        out["accuracy_boot_low"], out["accuracy_boot_high"] = _cluster_interval(rows, correct, rng, n_boot)
    out.update(_pathology(rows, rng, n_boot))
    out.update(_mask_fit(rows))
    times = pd.to_numeric(rows.drop_duplicates("trial_id")["response_ms"], errors="coerce").dropna()
    out.update(response_ms_median=_quantile(times, 0.5), response_ms_q1=_quantile(times, 0.25),
               response_ms_q3=_quantile(times, 0.75))
    out["note"] = _outcome_note(rows, out, single)
    return out


def _pathology(rows: pd.DataFrame, rng: np.random.Generator, n_boot: int) -> dict:
    """Accuracy and AUC by the "cannot tell" rule, and both with "cannot tell" left out (``*_called_only``)."""
    answered = rows[rows["pathology_correct"].notna()]
    called = answered[answered["pathology_call"] != CANNOT_TELL]
    out = {"pathology_called": len(called), "pathology_cannot_tell": int((rows["pathology_call"] == CANNOT_TELL).sum()),
           "pathology_accuracy": None, "pathology_low": None, "pathology_high": None,
           "pathology_accuracy_called_only": _mean(called["pathology_correct"]),
           "pathology_auc": None, "auc_low": None, "auc_high": None, "pathology_auc_called_only": None}
    if len(answered):
        correct = answered["pathology_correct"]
        k = int(correct.sum())
        out["pathology_accuracy"] = k / len(answered)
        out["pathology_low"], out["pathology_high"] = wilson_interval(k, len(answered))
        out["pathology_boot_low"], out["pathology_boot_high"] = _cluster_interval(answered, correct, rng, n_boot)
    out["pathology_auc"], out["auc_low"], out["auc_high"] = _auc(answered, rng, n_boot)
    out["pathology_auc_called_only"] = _auc(called, rng, 0)[0]
    return out


def _auc(rows: pd.DataFrame, rng: np.random.Generator, n_boot: int) -> tuple:
    """ROC AUC of ``pathology_score`` against AD, with a percentile bootstrap over ratings (None if undefined)."""
    truth = (rows["image_label"] == "AD").to_numpy(int)
    score = rows["pathology_score"].to_numpy(float)
    if len(set(truth)) < 2:
        return None, None, None
    draws = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(truth), len(truth))
        if len(set(truth[pick])) == 2:
            draws.append(roc_auc_score(truth[pick], score[pick]))
    low, high = (float(v) for v in np.percentile(draws, [2.5, 97.5])) if draws else (None, None)
    return float(roc_auc_score(truth, score)), low, high


def _outcome_note(rows: pd.DataFrame, out: dict, single: bool) -> str:
    """What an outcome row rests on; small n and "cannot tell" flagged."""
    prefix = "judged_real" if single else "accuracy"
    interval = (out.get(f"{prefix}_boot_low"), out.get(f"{prefix}_boot_high"))
    if interval[0] is None:
        interval = (out.get(f"{prefix}_low"), out.get(f"{prefix}_high"))
    note = basis_note(out["n_ratings"], out["n_raters"], out["n_images"], interval=interval)
    if not single and out["accuracy_2afc"] is None:
        note = basis_note(out["n_ratings"], out["n_raters"], out["n_images"])
    return join(note, cannot_tell_note(out["pathology_accuracy"], out["pathology_accuracy_called_only"],
                                        out["pathology_cannot_tell"], "accuracy"))


def _pair_items(frame: pd.DataFrame) -> np.ndarray:
    """Per row of a pair export: ``<synthetic or attention sha256>|<real sha256>`` of its trial."""
    shown = frame["image_source"] != "real"
    first = frame[shown].groupby("trial_id")["image_sha256"].first()
    second = frame[~shown].groupby("trial_id")["image_sha256"].first()
    return (frame["trial_id"].map(first).fillna("") + "|" + frame["trial_id"].map(second).fillna("")).to_numpy()


def _cluster_interval(rows: pd.DataFrame, values: pd.Series, rng: np.random.Generator,
                      n_boot: int) -> tuple[float | None, float | None]:
    """95 % percentile interval of a mean when raters and images are both resampled.

    Ratings by the same rater, or of the same image, are not independent: this two-way cluster
    bootstrap widens the interval accordingly, where Wilson and Clopper-Pearson assume
    independent ratings. None with fewer than 2 raters and 2 images.
    """
    raters, rater_code = np.unique(rows["rater"].to_numpy(str), return_inverse=True)
    images, image_code = np.unique(rows["image_sha256"].to_numpy(str), return_inverse=True)
    if len(raters) < 2 and len(images) < 2:
        return None, None
    x = values.to_numpy(float)
    draws = []
    for _ in range(n_boot):
        weight = (np.bincount(rng.integers(0, len(raters), len(raters)), minlength=len(raters))[rater_code]
                  * np.bincount(rng.integers(0, len(images), len(images)), minlength=len(images))[image_code])
        if weight.sum() > 0:
            draws.append(float(weight @ x / weight.sum()))
    if len(draws) < 10:
        return None, None
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(low), float(high)


def _mask_fit(rows: pd.DataFrame) -> dict:
    """Studies that outline masks: share of "fits" answers (Wilson CI) and of "partly"."""
    out = dict.fromkeys(("mask_fits", "mask_fits_low", "mask_fits_high", "mask_partly"))
    answers = rows["mask_fit"].dropna() if "mask_fit" in rows else pd.Series(dtype=object)
    if len(answers):
        k = int((answers == "fits").sum())
        out["mask_fits"], out["mask_partly"] = k / len(answers), float((answers == "partly").mean())
        out["mask_fits_low"], out["mask_fits_high"] = wilson_interval(k, len(answers))
    return out


def _stratum_column(stratify: str) -> str | None:
    if stratify not in STRATA:
        raise AnalysisError(f"stratify must be one of {', '.join(STRATA)}, got {stratify!r}")
    return STRATA[stratify]


def _experience_band(years) -> str:
    if years is None or (isinstance(years, float) and math.isnan(years)):
        return "not given"
    years = float(years)
    return EXPERIENCE_BANDS[0] if years < 5 else EXPERIENCE_BANDS[1] if years < 15 else EXPERIENCE_BANDS[2]


def _step(rows: pd.DataFrame):
    steps = pd.to_numeric(rows["checkpoint_step"], errors="coerce").dropna()
    return int(steps.iloc[0]) if len(steps) else None


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf


def _mean(values: pd.Series):
    return float(values.mean()) if len(values) else None


def _quantile(values: pd.Series, q: float):
    return float(values.quantile(q)) if len(values) else None
