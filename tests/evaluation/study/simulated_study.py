"""A study database filled by a simulated panel, with metrics: for the Analysis tab's API and browser tests."""

from __future__ import annotations

from pathlib import Path

from appconfig import AppConfig
from database.connection import connect
from evaluation.cache import FeatureCache
from evaluation.features import get_extractor
from evaluation.metrics import MetricSettings
from evaluation.scorecard import compute_scorecard
from review import studies
from review.design import StudyDesign
from review.simulate import simulate_panel
from tests.review.conftest import ADMIN_PASSWORD


def make_simulated_study(config: AppConfig, images: Path, extractor: str = "efficientnet") -> dict:
    """A database with phantom images of 3 checkpoints, simulated single and pair studies, and metrics."""
    from tests.review.conftest import add_images

    with connect(config.db_path) as db:
        ids = add_images(db, images, n_real=12, n_synthetic=6, checkpoints=3)
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
        studies.create_account(db, "rita", "rater", "rita-password")
        session = studies.sign_in(db, "admin", ADMIN_PASSWORD)
        made = {}
        for mode in ("single", "pair"):
            design = StudyDesign(mode=mode, checkpoint_ids=tuple(ids), images_per_cell=4, real_per_label=6,
                                 ratings_per_image=3, repeats=2, attention_checks=2, size=64, seed=5)
            made[mode] = simulate_panel(db, config.data_dir, session, f"Simulated {mode}", design, 5, 5)["study_id"]
        compute_scorecard(db, get_extractor(extractor), FeatureCache(config.data_dir / "features"),
                          MetricSettings(n_boot=10, utility_repeats=2, diversity_pairs=10))
    return made
