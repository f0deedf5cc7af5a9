"""SQL for metric results (schema in ``database.schema``, migration 0003).

A metric result: checkpoint, label scope (AD, NonAD, pooled), metric, value, CI, extractor,
preprocessing, n_real, n_fake, details and when it was computed. Recomputing a metric with the same
extractor and preprocessing replaces the stored row.
"""

from __future__ import annotations

import json
import math

import sqlite_utils

SCOPES: tuple[str, ...] = ("AD", "NonAD", "pooled")


def save_results(db: sqlite_utils.Database, rows: list[dict]) -> int:
    """Store metric results, all or nothing, replacing rows with the same key.

    Args:
        rows: Dicts with checkpoint_id, scope, metric, value, ci_low, ci_high, extractor,
            preprocessing, n_real, n_fake and optional details (JSON-able).

    Returns:
        How many rows were written.
    """
    with db.atomic():
        for row in rows:
            db.execute(
                "INSERT INTO metric_results (checkpoint_id, scope, metric, value, ci_low, ci_high, extractor,"
                " preprocessing, n_real, n_fake, details) VALUES (:checkpoint_id, :scope, :metric, :value,"
                " :ci_low, :ci_high, :extractor, :preprocessing, :n_real, :n_fake, :details)"
                " ON CONFLICT (checkpoint_id, scope, metric, extractor, preprocessing) DO UPDATE SET"
                " value = excluded.value, ci_low = excluded.ci_low, ci_high = excluded.ci_high,"
                " n_real = excluded.n_real, n_fake = excluded.n_fake, details = excluded.details,"
                " computed_at = excluded.computed_at",
                {**row, "value": _finite(row.get("value")), "ci_low": _finite(row.get("ci_low")),
                 "ci_high": _finite(row.get("ci_high")),
                 "details": None if row.get("details") is None else json.dumps(
                     _json_safe(row["details"]), sort_keys=True, default=str, allow_nan=False)},
            )
    return len(rows)


def list_results(db: sqlite_utils.Database, extractor: str | None = None) -> list[dict]:
    """Every stored result joined with its checkpoint's name and step, by step, scope, metric."""
    where, params = ("WHERE metric_results.extractor = ?", [extractor]) if extractor else ("", [])
    rows = db.query(
        "SELECT metric_results.*, checkpoints.name AS checkpoint_name, checkpoints.step AS checkpoint_step"
        f" FROM metric_results JOIN checkpoints ON checkpoints.id = metric_results.checkpoint_id {where}"
        " ORDER BY checkpoints.step, checkpoints.name, scope, metric", params)
    out = []
    for row in rows:
        row["details"] = None if row["details"] is None else json.loads(row["details"])
        out.append(row)
    return out


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_safe(value):
    """NaN and infinities become None: SQLite's json_valid (and JSON) refuse them."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
