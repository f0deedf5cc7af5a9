"""Validation while training: a checkpoint's images against the run's held-out images, as metric results.

``TrainingValidator`` is the callback ``generation.train.Trainer`` calls at each checkpoint
(``python -m generation.train`` passes one; see ``generation.cli``). For the checkpoint just written
it generates images of each pathology with the label's default prompt, extracts features of them and
of the held-out real images (once per run), and computes FID (bootstrap CI) and KID per scope (AD,
NonAD, pooled) with ``evaluation.metrics.evaluate_features``, and label fidelity with
``evaluation.utility.label_fidelity`` (a classifier fitted on the held-out real images, as the
scorecard fits it on its reference set). Rows are stored as metric results of the checkpoint
(``database.metric_results``), so the Evaluate tab plots them over steps; ``details.reference``
says they were measured against the held-out split, and computing metrics for the same checkpoint
in the Evaluate tab (against a registered reference set) replaces them. The generated images are not
stored: they serve the metrics only.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from database import checkpoints as checkpoint_store
from database import metric_results as metric_store
from database.connection import connect
from evaluation.features import EXTRACTORS, FeatureExtractor, extract, get_extractor
from evaluation.metrics import MetricSettings, MetricsReport, evaluate_features
from evaluation.scorecard import jsonable
from evaluation.utility import label_fidelity
from generation.checkpoints import inspect_checkpoint
from generation.pipelines import load_pipeline
from generation.sampling import SamplingRequest, generate

logger = logging.getLogger(__name__)

REFERENCE = "held-out split of the training data (generation.train --val-fraction)"
SCOPES: tuple[str, ...] = ("AD", "NonAD", "pooled")


class TrainingValidator:
    """The validation callback of ``generation.train``: metrics of each checkpoint, stored and returned.

    Args:
        extractor: A registered extractor name (checked now, loaded at the first checkpoint).
        db_path: The study database the metric results go to; None stores nothing.
        settings: How the metrics are computed (bootstrap replicates, KID subsets, seed).
        registry: Extractor name -> factory(device); default ``evaluation.features.EXTRACTORS``.

    Raises:
        ValueError: If ``extractor`` is not registered.
    """

    def __init__(self, extractor: str = "inception", db_path: Path | None = None,
                 settings: MetricSettings = MetricSettings(n_boot=50, kid_subsets=50),
                 registry: Mapping[str, Callable[..., FeatureExtractor]] | None = None) -> None:
        self.registry = EXTRACTORS if registry is None else registry
        if extractor not in self.registry:
            raise ValueError(f"--val-extractor: {extractor!r} is not a known extractor; allowed: {sorted(self.registry)}")
        self.name, self.db_path, self.settings = extractor, db_path, settings
        self._extractor: FeatureExtractor | None = None
        self._real: dict[str, np.ndarray] = {}

    def __call__(self, request) -> dict:
        """Validate the checkpoint of a ``generation.train.ValidationRequest``; returns what its polypturing.json records."""
        extractor = self._load(request.device)
        real_labels = np.array(request.labels)
        real = self._real_features(request.real, extractor)
        fake_images, fake_labels = _generate(request)
        fake = extract(fake_images, extractor, batch_size=self.settings.batch_size)
        rows = metric_rows(real, real_labels, fake, np.array(fake_labels), extractor, self.settings)
        stored = self._store(request, rows) if self.db_path is not None else None
        summary = {f"{row['metric']}_{row['scope']}" if row["scope"] != "pooled" else row["metric"]: row["value"]
                   for row in rows}
        return {"extractor": extractor.name, "preprocessing": extractor.preprocessing, "reference": REFERENCE,
                "n_real": len(real_labels), "n_fake": len(fake_labels), "sampling_steps": request.steps,
                "summary": summary, "stored_in": stored,
                "metrics": [{key: row[key] for key in ("scope", "metric", "value", "ci_low", "ci_high")} for row in rows]}

    def _load(self, device) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = get_extractor(self.name, device=device, registry=self.registry)
        return self._extractor

    def _real_features(self, real, extractor: FeatureExtractor) -> np.ndarray:
        """The held-out images' features, computed at the first checkpoint only (they do not change in a run)."""
        images = [image.permute(1, 2, 0).numpy() for image in real.cpu()]
        key = hashlib.sha256(b"".join(image.tobytes() for image in images)).hexdigest()
        if key not in self._real:
            self._real[key] = extract(images, extractor, batch_size=self.settings.batch_size)
        return self._real[key]

    def _store(self, request, rows: list[dict]) -> str:
        info = inspect_checkpoint(Path(request.checkpoint))
        with connect(self.db_path) as db, db.atomic():
            checkpoint_id = checkpoint_store.upsert_checkpoint(
                db, path=str(Path(info.path).resolve()), name=request.name, step=info.step, stage=info.stage,
                kind=info.kind, fingerprint=info.fingerprint, base_path=str(info.base) if info.base else None,
                metadata={**info.metadata, "loading": info.loading})
            metric_store.save_results(db, [{**row, "checkpoint_id": checkpoint_id} for row in rows])
        logger.info("stored %d validation metric results of %s in %s", len(rows), request.name, self.db_path)
        return str(self.db_path)


def _generate(request) -> tuple[list[np.ndarray], list[str]]:
    """Images of every held-out label from the checkpoint: as many as are held out of it, or ``n_per_label``."""
    info = inspect_checkpoint(Path(request.checkpoint))
    pipe = load_pipeline(info, request.device)
    images, labels = [], []
    for label, prompt in request.prompts.items():
        n = request.n_per_label or request.labels.count(label)
        made = generate(pipe, info, SamplingRequest(label=label, prompt=prompt, n=n, seed=request.seed, steps=request.steps))
        images += [np.asarray(item.image.convert("RGB")) for item in made]
        labels += [label] * len(made)
    return images, labels


def metric_rows(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
                extractor: FeatureExtractor, settings: MetricSettings) -> list[dict]:
    """FID and KID per scope and label fidelity (pooled and per label), as metric-result rows without a checkpoint.

    A metric that cannot be computed is a row with no value and the reason in ``details.skipped``.
    """
    base = {"extractor": extractor.name, "preprocessing": extractor.preprocessing}
    rows = []
    for scope in SCOPES:
        r_mask = np.ones(len(real_labels), bool) if scope == "pooled" else real_labels == scope
        f_mask = np.ones(len(fake_labels), bool) if scope == "pooled" else fake_labels == scope
        report = evaluate_features(MetricsReport(int(r_mask.sum()), int(f_mask.sum()), extractor.name, extractor.preprocessing),
                                   real[r_mask], fake[f_mask], settings)
        scoped = {**base, "scope": scope, "n_real": report.n_real, "n_fake": report.n_fake}
        details = {"reference": REFERENCE, "warnings": report.warnings}
        rows.append({**scoped, "metric": "fid", "value": report.fid, "ci_low": report.fid_ci_low, "ci_high": report.fid_ci_high,
                     "details": {**details, "n_boot": report.fid_bootstrap, **_skipped(report, "fid")}})
        kid_ci = (None, None) if report.kid_mean is None else (report.kid_mean - report.kid_std, report.kid_mean + report.kid_std)
        rows.append({**scoped, "metric": "kid", "value": report.kid_mean, "ci_low": kid_ci[0], "ci_high": kid_ci[1],
                     "details": {**details, "std": report.kid_std, "subset_size": report.kid_subset_size,
                                 "ci": "mean ± 1 std over subsets", **_skipped(report, "kid")}})
    rows += _fidelity_rows(real, real_labels, fake, fake_labels, base, settings)
    return rows


def _skipped(report: MetricsReport, metric: str) -> dict:
    return {"skipped": report.skipped[metric]} if metric in report.skipped else {}


def _fidelity_rows(real, real_labels, fake, fake_labels, base: dict, settings: MetricSettings) -> list[dict]:
    """Label fidelity pooled and per label, from one classifier fitted on the held-out real images."""
    try:
        report = label_fidelity(real, real_labels, fake, fake_labels, seed=settings.seed)
    except ValueError as error:  # too few real images of a class, say
        logger.warning("label_fidelity not computed: %s", error)
        return [{**base, "scope": scope, "metric": "label_fidelity", "value": None, "ci_low": None, "ci_high": None,
                 "n_real": int(len(real_labels) if scope == "pooled" else (real_labels == scope).sum()),
                 "n_fake": int(len(fake_labels) if scope == "pooled" else (fake_labels == scope).sum()),
                 "details": {"reference": REFERENCE, "skipped": str(error)}} for scope in SCOPES]
    details = {"reference": REFERENCE, **jsonable({key: report[key] for key in ("real_cv", "classifier", "ci_method")})}
    rows = []
    for scope in SCOPES:
        part = report if scope == "pooled" else report["per_label"].get(scope)
        if part is None:
            continue
        rows.append({**base, "scope": scope, "metric": "label_fidelity", "value": part["share"], "ci_low": part["ci"][0],
                     "ci_high": part["ci"][1], "n_real": int(len(real_labels) if scope == "pooled" else (real_labels == scope).sum()),
                     "n_fake": part["n"], "details": {**details, "n_correct": part["n_correct"]}})
    return rows
