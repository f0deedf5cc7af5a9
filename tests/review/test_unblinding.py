"""Attack 1 of issue 14: regenerate the demo checkpoints' images, present them, hash, match what a rater is served.

With seeds 0, 1, 2... and the default prompt, a rater matched every synthetic image of a study. Study
images are now generated from seeds drawn with ``secrets``: the same attack finds nothing, while a
control with the server's own (secret) seeds shows that the attack itself works.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from appconfig import AppConfig, Services
from database import images as image_store
from database import studies as study_store
from database.connection import open_db
from generation.checkpoints import inspect_checkpoint
from generation.demo import DEMO_STEPS
from generation.pipelines import load_pipeline
from generation.prompts import load_prompts
from generation.sampling import SamplingRequest, generate
from review import studies, study_setup
from review.design import StudyDesign
from review.presentation import encode, encoded_length, present
from review.study_setup import RaterSpec
from tests.review.conftest import ADMIN_PASSWORD, add_images

DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "assets" / "demo" / f"checkpoint-{DEMO_STEPS[0]}"
SIZE = 64


def _presented_hashes(pipe, info, label: str, seeds: list[int]) -> set[str]:
    """What an attacker computes: the default prompt's images for ``seeds``, presented and hashed."""
    book = load_prompts()
    hashes = set()
    for seed in seeds:
        request = SamplingRequest(label=label, prompt=book.default_prompt(label), negative_prompt=book.negative,
                                  n=1, seed=seed)
        for item in generate(pipe, info, request):
            hashes.add(hashlib.sha256(encode(present(item.image, SIZE))).hexdigest())
    return hashes


def test_regenerating_with_small_seeds_and_the_default_prompt_matches_nothing_served(tmp_path):
    db_path = tmp_path / "study.db"
    db = open_db(db_path)
    add_images(db, tmp_path / "real", n_real=2, n_synthetic=0, checkpoints=0)
    studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
    session = studies.sign_in(db, "admin", ADMIN_PASSWORD)
    services = Services(AppConfig(data_dir=tmp_path / "data", checkpoints_dir=tmp_path / "ckpts", db_path=db_path,
                                  device="cpu"))
    ids = study_setup.ensure_images(services, [str(DEMO_CHECKPOINT)], per_label=1)
    design = StudyDesign(mode="single", checkpoint_ids=tuple(ids), images_per_cell=1, real_per_label=1, size=SIZE)
    created = study_setup.create_study(db, tmp_path / "data", session, "attack 1", design, [RaterSpec("rater")])
    rows = study_store.study_images(db, created.study_id)
    files = [Path(row["presented_path"]).read_bytes() for row in rows]
    served = {hashlib.sha256(data).hexdigest() for data in files}
    assert {len(data) for data in files} == {encoded_length(SIZE, SIZE)}  # real or synthetic: the same length
    synthetic = [image_store.get_image(db, row["sha256"]) for row in rows if row["role"] == "synthetic"]
    assert len(synthetic) == 2 and all(image["seed"] > 1000 for image in synthetic)  # not 0, 1, 2...

    info = inspect_checkpoint(DEMO_CHECKPOINT)
    pipe = load_pipeline(info, torch.device("cpu"))
    attack = set().union(*(_presented_hashes(pipe, info, label, list(range(4))) for label in ("AD", "NonAD")))
    assert len(attack) == 8 and not attack & served

    # Control: with the seeds the server keeps, the same steps reproduce exactly what was served.
    control = set().union(*(_presented_hashes(pipe, info, image["label"], [image["seed"]]) for image in synthetic))
    assert control <= served
    db.close()
