"""Ratings-export rows built by hand (the columns of docs/review-export.md), for analysis tests."""

from __future__ import annotations

import itertools

_trial_ids = itertools.count(1)

BASE = {
    "study_id": 1, "study_name": "test", "study_simulated": 0, "rater_specialty": "gastroenterology",
    "rater_years_practice": 10, "rater_colonoscopies": "1000-5000", "rater_simulated": 0, "repeat_of": None,
    "synthetic_side": None, "image_token": "t", "checkpoint_id": None, "checkpoint_name": None, "checkpoint_step": None,
    "checkpoint_stage": None, "checkpoint_fingerprint": None, "prompt": None, "negative_prompt": None, "seed": None,
    "scheduler": None, "steps": None, "guidance": None, "real_or_synthetic": None, "source_confidence": None,
    "realism": None, "pathology": None, "pathology_confidence": None, "synthetic_choice": None,
    "choice_confidence": None, "pathology_left": None, "pathology_right": None, "artifacts": "[]", "comment": "",
    "response_ms": 2000, "submitted_at": "2026-11-23T00:00:00+00:00", "rating_id": 1,
}


def image(sha: str, source: str, label: str | None, checkpoint: str | None = None, step: int | None = None) -> dict:
    return {"image_sha256": sha, "image_source": source, "image_label": label, "checkpoint_name": checkpoint,
            "checkpoint_step": step, "checkpoint_id": None if checkpoint is None else step}


def single(rater: str, shown: dict, call: str, realism: int = 3, pathology: str = "AD", confidence: int = 3,
           kind: str = "normal", position: int = 0, repeat_of: int | None = None, **extra) -> dict:
    """One single-mode rating row."""
    trial = next(_trial_ids)
    return {**BASE, **shown, "mode": "single", "rater": rater, "trial_id": trial, "rating_id": trial,
            "position": position, "trial_kind": kind, "repeat_of": repeat_of, "side": "single",
            "real_or_synthetic": call, "source_confidence": 3, "realism": realism, "pathology": pathology,
            "pathology_confidence": confidence, **extra}


def pair(rater: str, real: dict, synthetic: dict, picked: str, synthetic_side: str = "left",
         pathology=("AD", "AD"), kind: str = "normal", position: int = 0, repeat_of: int | None = None,
         **extra) -> list[dict]:
    """The two rows of one pair-mode rating; ``picked`` is the side called synthetic."""
    trial = next(_trial_ids)
    left, right = (synthetic, real) if synthetic_side == "left" else (real, synthetic)
    common = {**BASE, "mode": "pair", "rater": rater, "trial_id": trial, "rating_id": trial, "position": position,
              "trial_kind": kind, "repeat_of": repeat_of, "synthetic_side": synthetic_side,
              "synthetic_choice": picked, "choice_confidence": 3, "pathology_left": pathology[0],
              "pathology_right": pathology[1], **extra}
    return [{**common, **left, "side": "left"}, {**common, **right, "side": "right"}]
