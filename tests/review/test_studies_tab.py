"""The Studies tab's New study form offers the image sets, with their kind and size, to admins only."""

from __future__ import annotations

import pytest

from appconfig import AppConfig
from database.connection import connect
from review import studies
from tests.conftest import serve
from tests.review.conftest import ADMIN_PASSWORD, add_images


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("studies-tab")
    config = AppConfig(data_dir=tmp / "data", checkpoints_dir=tmp / "checkpoints", db_path=tmp / "study.db", device="cpu")
    with connect(config.db_path) as db:
        add_images(db, tmp / "images")
        studies.create_account(db, "admin", "admin", ADMIN_PASSWORD)
        studies.create_account(db, "rater", "rater", "rater-password-1")
    with serve(config) as client:
        yield client


def test_refresh_lists_the_image_sets_with_kind_and_counts(served):
    admin = served.predict("admin", ADMIN_PASSWORD, api_name="/sign_in")[0]
    _, _, sets = served.predict(admin, api_name="/list_studies")
    choices = {value: label for label, value in sets["choices"]}
    assert {"default", "demo"} <= set(choices)
    assert choices["default"].startswith("default (clinical, not public; AD ")
    assert "phantom-demo, public" in choices["demo"]


def test_a_rater_gets_no_image_sets(served):
    rater = served.predict("rater", "rater-password-1", api_name="/sign_in")[0]
    with pytest.raises(Exception, match="admin"):
        served.predict(rater, api_name="/list_studies")
