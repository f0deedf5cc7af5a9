"""Analyse one study: its ratings joined with its images, metric results and features.

``analyse_study`` gathers what the Analysis tab, the CSV exports and the HTML report show:
expert outcomes per checkpoint and pathology, agreement (inter-rater, intra-rater from repeats,
attention checks), the Bradley-Terry ranking (pair studies), metric-vs-expert correlations and
per-image links. ``study_images`` and ``embedding_points`` give the joint t-SNE/UMAP view.
Everything reads the study database through the ``database`` room's functions; nothing here writes.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from common.device import resolve_device
from database import checkpoints as checkpoint_store
from database import images as image_store
from database import ratings as rating_store
from database import studies as study_store
from database.metric_results import list_results
from evaluation.cache import FeatureCache, features_for
from evaluation.features import get_extractor
from evaluation.images import load_images
from evaluation.segmentation.scorecard import SEGMENTATION_EXTRACTOR
from evaluation.study import agreement, concordance, consistency, outcomes, ranking
from evaluation.study.embedding import embed
from evaluation.study.notes import SMALL_RATERS, SMALL_RATINGS, StudyContext
from evaluation.study.outcomes import AnalysisError

logger = logging.getLogger(__name__)

THUMBNAIL_PX = 72
SINGLE_QUESTIONS = (("real_or_synthetic", ("real", "synthetic"), False),
                    ("realism", (1, 2, 3, 4, 5), True),
                    ("pathology_call", ("AD", "NonAD", "cannot tell"), False))
PAIR_QUESTIONS = (("correct_source", ("found", "missed"), False),
                  ("pathology_call", ("AD", "NonAD", "cannot tell"), False))


@dataclass
class StudyAnalysis:
    """Everything shown about one study. Tables are lists of dicts (one per row)."""

    study: dict
    frame: pd.DataFrame
    stratify: str
    extractor: str
    outcomes: list[dict]
    clinical_gap: list[dict]
    agreement: list[dict]
    intra_rater: list[dict]
    attention: list[dict]
    ranking: list[dict]
    ranking_note: str
    metrics: list[dict]
    correlations: list[dict]
    images: pd.DataFrame
    image_links: list[dict]
    warnings: list[str] = field(default_factory=list)
    n_boot: int = 300
    seed: int = 0
    context: StudyContext | None = None

    def caption(self) -> str:
        """What the whole analysis rests on, for figure captions and the report's header."""
        if self.context is None:
            return f"{self.frame['rater'].nunique()} raters, {self.frame['trial_id'].nunique()} ratings"
        text = self.context.describe()
        return text + ("; n too small to conclude" if self.context.too_small() else "")

    @property
    def simulated(self) -> bool:
        return bool(self.study.get("simulated"))

    @property
    def checkpoints(self) -> list[str]:
        return [group for group in outcomes.group_order(self.frame) if group != "real"]


@dataclass
class StudyImages:
    """The images of a study's analysis: every registered real image and every stored image of
    the study's checkpoints (rated or not), with features from one extractor."""

    table: pd.DataFrame  # sha256, source, label, checkpoint, checkpoint_step, path
    features: np.ndarray


def study_list(db) -> list[dict]:
    """Every study, newest first (for choosing one to analyse)."""
    return sorted(study_store.list_studies(db), key=lambda s: -s["id"])


def require_ratings(db, study_id) -> None:
    """Fail early, before any feature is computed, for an unknown study or one without ratings.

    Raises:
        AnalysisError: Saying which.
    """
    outcomes.ratings_frame(rating_store.export_rows(db, _study(db, study_id)["id"]))


def preferred_extractor(db, default: str = "efficientnet") -> str:
    """The extractor of the most recently computed metric results (what the Evaluate tab last used)."""
    rows = list_results(db)
    return max(rows, key=lambda r: r["computed_at"])["extractor"] if rows else default


def study_images(db, study_id: int, extractor, cache) -> StudyImages:
    """Real images and the study checkpoints' synthetic images, with cached features.

    Raises:
        AnalysisError: If the study does not exist or has no real or synthetic images.
    """
    study = _study(db, study_id)
    checkpoint_ids = {row["checkpoint_id"] for row in study_store.study_images(db, study["id"])
                      if row["role"] == "synthetic"}
    names = {c["id"]: (c["name"], c["step"]) for c in checkpoint_store.list_checkpoints(db)}
    rows = [dict(r, checkpoint=None, checkpoint_step=None) for r in image_store.list_images(db, source="real")]
    for checkpoint_id in sorted(checkpoint_ids, key=lambda i: (names[i][1] or 0, names[i][0])):
        for row in image_store.list_images(db, source="synthetic", checkpoint_id=checkpoint_id):
            rows.append(dict(row, checkpoint=names[checkpoint_id][0], checkpoint_step=names[checkpoint_id][1]))
    if not any(r["source"] == "real" for r in rows) or not checkpoint_ids:
        raise AnalysisError(f"study {study_id} needs registered real images and synthetic images to embed")
    loaded = load_images([r["path"] for r in rows], name="study images")
    got = features_for(loaded, extractor, cache)
    by_sha = {r["sha256"]: r for r in rows}
    table = pd.DataFrame([{key: by_sha[sha][key] for key in ("sha256", "source", "label", "checkpoint",
                                                             "checkpoint_step", "path")} for sha in loaded.sha256s])
    return StudyImages(table, got.features)


def analyse_study(db, study_id: int, extractor: str = "efficientnet", stratify: str = "none",
                  images: StudyImages | None = None, n_boot: int = 300, seed: int = 0) -> StudyAnalysis:
    """Every statistic of one study.

    Args:
        db: The study database.
        study_id: The study.
        extractor: Whose stored metric results to relate to the ratings.
        stratify: Rater stratum for the outcome and agreement tables (``outcomes.STRATA``).
        images: From ``study_images``, for the per-image links; None leaves them out.
        n_boot: Bootstrap resamples for intervals.
        seed: Seed of every bootstrap.

    Raises:
        AnalysisError: For an unknown study or stratum, or a study without ratings.
    """
    study = _study(db, study_id)
    frame = outcomes.ratings_frame(rating_store.export_rows(db, study["id"]))
    outcome_rows = outcomes.outcome_table(frame, stratify, seed=seed, n_boot=n_boot)
    metrics = _metric_rows(db, frame, extractor)
    per_image, links = _image_links(frame, images, n_boot, seed)
    ranked, ranking_note = _ranking(frame, n_boot, seed)
    context = _context(db, study, frame)
    warnings = []
    if study.get("simulated"):
        warnings.append("SIMULATED PANEL: these ratings come from a seeded simulation (review/simulate.py), "
                        "not from experts. They show how the analysis works; they are not evidence.")
    if not any(row["extractor"] == extractor for row in metrics):
        warnings.append(f"no metric results stored for the {extractor} extractor: compute them in the Evaluate tab "
                        f"(or python -m evaluation.scorecard --extractor {extractor}) to relate metrics to ratings")
    warnings += _context_warnings(context)
    return StudyAnalysis(
        study=study, frame=frame, stratify=stratify, extractor=extractor, outcomes=outcome_rows,
        clinical_gap=outcomes.clinical_gap(frame), agreement=_agreement(frame, stratify, n_boot, seed),
        intra_rater=_intra(frame), attention=consistency.attention_pass_rates(outcomes.attention_frame(frame))
        if (frame["trial_kind"] == "attention").any() else [],
        ranking=ranked, ranking_note=ranking_note, metrics=metrics,
        correlations=_correlations(frame, metrics, n_boot, seed), images=per_image, image_links=links,
        warnings=warnings, n_boot=n_boot, seed=seed, context=context)


def _context(db, study: dict, frame: pd.DataFrame) -> StudyContext:
    progress = study_store.study_progress(db, study["id"])
    return StudyContext(status=str(study.get("status") or "unknown"),
                        n_planned=sum(int(r["total"] or 0) for r in progress),
                        n_rated=sum(int(r["rated"] or 0) for r in progress),
                        n_raters=int(frame["rater"].nunique()), n_ratings=int(frame["trial_id"].nunique()))


def _context_warnings(context: StudyContext) -> list[str]:
    """Banners for a study still open or part-rated, and for one too small to conclude anything."""
    out = []
    share = context.share_rated
    if context.status == "open":
        out.append(f"{context.describe()}: close the study before reporting these numbers")
    elif share is not None and share < 1:
        out.append(f"{context.describe()}: {context.n_planned - context.n_rated} planned trials were never rated")
    if context.n_raters < SMALL_RATERS:
        out.append(f"only {context.n_raters} rater(s): agreement statistics are not meaningful, and no number "
                   "here can be generalised beyond these raters")
    if context.n_ratings < SMALL_RATINGS:
        out.append(f"only {context.n_ratings} ratings: too few to conclude anything; intervals show how little is known")
    return out


@dataclass
class StudyView:
    """A study's analysis with the images, features and embedding behind it (what the tab keeps)."""

    analysis: StudyAnalysis
    images: StudyImages
    fitted: object  # evaluation.study.embedding.Embedding
    points: pd.DataFrame


def analyse_with_embedding(db, study_id, extractor_name: str, stratify: str, method: str, features_dir: Path,
                           device: str = "auto", on_progress=None) -> StudyView:
    """Everything the Analysis tab and ``python -m evaluation.study.report`` show of one study: ratings
    checked first (before any feature is computed), cached features, statistics, joint embedding.

    Raises:
        AnalysisError: Unknown study, no ratings, or an unknown stratum.
        ExtractorUnavailable, EmbeddingError, CacheError: From the steps they name.
    """
    progress = on_progress or (lambda fraction, text: None)
    require_ratings(db, study_id)
    progress(0.1, f"features ({extractor_name})")
    model = get_extractor(extractor_name, device=resolve_device(device))
    images = study_images(db, study_id, model, FeatureCache(features_dir))
    progress(0.4, "statistics")
    analysis = analyse_study(db, study_id, extractor_name, stratify, images)
    progress(0.7, f"embedding ({method})")
    fitted, points = embedding_points(images, analysis.frame, method)
    return StudyView(analysis, images, fitted, points)


def embedding_points(images: StudyImages, frame: pd.DataFrame | None, method: str, seed: int = 0):
    """Joint 2-D embedding of a study's images with what hover shows.

    Returns:
        (``evaluation.study.embedding.Embedding``, DataFrame of the points: ``sha256, source, label,
        checkpoint, x, y, thumbnail`` (a data: URI) and ``ratings`` (a one-line summary)).
    """
    fitted = embed(images.features, method, seed=seed)
    points = images.table.copy()
    points["x"], points["y"] = fitted.coords[:, 0], fitted.coords[:, 1]
    points["thumbnail"] = [_thumbnail(Path(path)) for path in points["path"]]
    points["ratings"] = _rating_summaries(points["sha256"], frame)
    return fitted, points


def _study(db, study_id) -> dict:
    try:
        study = study_store.get_study(db, int(study_id))
    except (TypeError, ValueError):
        study = None
    if study is None:
        raise AnalysisError(f"no study with id {study_id!r}: choose one of the listed studies")
    return study


def _metric_rows(db, frame: pd.DataFrame, extractor: str) -> list[dict]:
    """The study checkpoints' metric results for one extractor, each with its checkpoint's ``group``
    label; diversity (stored per pathology) gets a pooled row: the mean of its AD and NonAD values."""

    labels = outcomes.checkpoint_labels(frame)
    rows = [dict(row, group=labels[row["checkpoint_id"]])
            for row in list_results(db, extractor) + list_results(db, SEGMENTATION_EXTRACTOR)
            if row["checkpoint_id"] in labels]
    pooled = {(r["checkpoint_id"], r["metric"]) for r in rows if r["scope"] == "pooled"}
    for (checkpoint_id, metric), parts in _by_key(r for r in rows if r["scope"] != "pooled").items():
        values = [r["value"] for r in parts if r["value"] is not None]
        if (checkpoint_id, metric) not in pooled and len(values) == len(parts) == 2:
            rows.append(dict(parts[0], scope="pooled", value=float(np.mean(values)), ci_low=None, ci_high=None,
                             n_fake=sum(r["n_fake"] for r in parts),
                             details={"pooled_as": "mean of the AD and NonAD values"}))
    return rows


def _by_key(rows) -> dict:
    grouped: dict = {}
    for row in rows:
        grouped.setdefault((row["checkpoint_id"], row["metric"]), []).append(row)
    return grouped


def _agreement(frame: pd.DataFrame, stratify: str, n_boot: int, seed: int) -> list[dict]:
    column = outcomes.STRATA[stratify]
    questions = SINGLE_QUESTIONS if frame["mode"].iloc[0] == "single" else PAIR_QUESTIONS
    parts = [("all", frame)] if column is None else sorted(frame.groupby(column), key=lambda kv: str(kv[0]))
    rows = []
    for stratum, part in parts:
        for question, categories, ordinal in questions:
            long = outcomes.item_ratings(part, question)
            if question == "realism":
                long["value"] = long["value"].astype(int)
            for row in agreement.agreement_summary(long, list(categories), ordinal=ordinal, n_boot=n_boot, seed=seed):
                rows.append({"stratum": str(stratum), "question": question, **row})
    return rows


def _intra(frame: pd.DataFrame) -> list[dict]:
    rows = []
    for question in ("judged_real", "pathology_call"):
        pairs = outcomes.repeat_pairs(frame, question)
        if len(pairs):
            rows += [{"question": question, **row} for row in consistency.intra_rater(pairs)]
    return rows


def _ranking(frame: pd.DataFrame, n_boot: int, seed: int) -> tuple[list[dict], str]:
    if frame["mode"].iloc[0] != "pair":
        return [], "Bradley-Terry ranking needs pairwise outcomes: create a pair-mode study to rank checkpoints."
    rows = frame[(frame["trial_kind"] == "normal") & (frame["image_source"] == "synthetic")]
    trials = pd.DataFrame({"rater": rows["rater"], "checkpoint": rows["group"], "fooled": rows["judged_real"] == 1.0})
    try:
        rows = ranking.rank_checkpoints(trials, n_boot=n_boot, seed=seed)
    except ranking.RankingError as error:
        return [], str(error)
    return rows, ("Each pair is a match between the checkpoint and the real image: the checkpoint wins when the "
                  "rater took its image for the real one. Strength is relative to real (0); equal records share a "
                  "rank, and ranks overlap where intervals do. " + ranking.prior_note(rows))


def _correlations(frame: pd.DataFrame, metrics: list[dict], n_boot: int, seed: int) -> list[dict]:
    single = frame["mode"].iloc[0] == "single"
    rows = []
    for outcome in concordance.OUTCOMES:
        if outcome == "realism_mean" and not single:
            continue
        data = concordance.OutcomeData(frame, outcome)
        draws = data.bootstrap(n_boot, seed) if len(data.checkpoints) >= concordance.MIN_CHECKPOINTS else None
        segmentation = sorted({r["metric"] for r in metrics if r["metric"].startswith("seg_dice")})
        for metric in (*concordance.METRICS, *segmentation):
            values = {r["group"]: r["value"] for r in metrics if r["metric"] == metric and r["scope"] == "pooled"}
            if not values:
                continue
            rows.append({"metric": metric, **concordance.correlate(values, data, draws)})
    return concordance.adjust_for_multiplicity(rows)


def _image_links(frame: pd.DataFrame, images: StudyImages | None, n_boot: int, seed: int):
    if images is None:
        return pd.DataFrame(), []
    table = images.table
    real = (table["source"] == "real").to_numpy()
    fake = (table["source"] == "synthetic").to_numpy()
    scores = concordance.image_scores(images.features[real], table.loc[real, "label"].tolist(),
                                      images.features[fake], table.loc[fake, "label"].tolist())
    scores.index = table.loc[fake, "sha256"].to_numpy()
    return concordance.image_links(frame, scores, n_boot=n_boot, seed=seed)


def _thumbnail(path: Path) -> str:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except OSError as error:
        logger.warning("no thumbnail for %s: %s", path, error)
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _rating_summaries(shas: pd.Series, frame: pd.DataFrame | None) -> list[str]:
    if frame is None:
        return ["not rated"] * len(shas)
    normal = frame[frame["trial_kind"] == "normal"]
    grouped = normal.groupby("image_sha256").agg(n=("judged_real", "size"), real=("judged_real", "mean"),
                                                 path=("pathology_correct", "mean"))
    out = []
    for sha in shas:
        if sha not in grouped.index:
            out.append("not rated in this study")
            continue
        row = grouped.loc[sha]
        pathology = "" if pd.isna(row["path"]) else f", pathology right {row['path']:.0%}"
        n = int(row["n"])
        out.append(f"{n} rating{'' if n == 1 else 's'}: judged real {row['real']:.0%}{pathology}")
    return out
