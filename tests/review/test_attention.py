"""Tests for review.attention: test cards and the scoring of attention checks."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from review.attention import ATTENTION_RULE, attention_passed, render_attention_image, write_attention_images
from review.design import StudyDesign, StudyItem
from review.schedule import Trial, make_schedules


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_render_is_deterministic_sized_and_seeded() -> None:
    image = render_attention_image(5, size=128)
    assert (image.mode, image.size) == ("RGB", (128, 128))
    assert image.tobytes() == render_attention_image(5, size=128).tobytes()
    assert image.tobytes() != render_attention_image(6, size=128).tobytes()


def test_card_is_flat_colours_with_a_grey_disc() -> None:
    pixels = np.asarray(render_attention_image(3, size=256))
    assert tuple(pixels[128, 128]) == (128, 128, 128)
    corners = [pixels[0, 0], pixels[0, -1], pixels[-1, 0], pixels[-1, -1]]
    assert all(corner.max() - corner.min() > 100 for corner in corners), "corners should be saturated"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) <= 3  # two colours and the grey disc


@pytest.mark.parametrize(("seed", "size"), [(-1, 256), (0, 32), (0, 4096), (0, 256.0)])
def test_render_rejects_bad_arguments(seed, size) -> None:
    with pytest.raises(ValueError, match="seed|size"):
        render_attention_image(seed, size)


def test_write_attention_images_writes_distinct_reproducible_pngs(tmp_path) -> None:
    paths = write_attention_images(tmp_path / "cards", n=6, seed=1, size=64)
    assert [p.name for p in paths] == [f"attention-1-{i:03d}.png" for i in range(6)]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert len(set(digests)) == 6
    assert all(Image.open(p).size == (64, 64) for p in paths)
    again = write_attention_images(tmp_path / "again", n=6, seed=1, size=64)
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in again] == digests


def test_rule_describes_both_modes() -> None:
    assert "Single mode" in ATTENTION_RULE and "Pair mode" in ATTENTION_RULE


def test_single_mode_passes_on_synthetic() -> None:
    trial = Trial(4, "attention", (sha("card"),), None, None, "attention")
    assert attention_passed("single", {"real_or_synthetic": "synthetic"}, trial)
    assert not attention_passed("single", {"real_or_synthetic": "real"}, trial)
    assert not attention_passed("single", {}, trial)
    with pytest.raises(ValueError, match="real_or_synthetic.*'maybe'"):
        attention_passed("single", {"real_or_synthetic": "maybe"}, trial)


def test_pair_mode_passes_when_the_card_is_picked_in_scheduled_trials() -> None:
    items = [StudyItem(sha(f"s{label}{i}"), "synthetic", label, 1) for label in ("AD", "NonAD") for i in range(6)]
    items += [StudyItem(sha(f"r{label}{i}"), "real", label) for label in ("AD", "NonAD") for i in range(12)]
    cards = [sha(f"card{i}") for i in range(4)]
    design = StudyDesign("pair", (1,), 6, attention_checks=4, seed=2)
    trials = [t for t in make_schedules(design, items, ["a"], cards)["a"] if t.kind == "attention"]
    assert len(trials) == 4
    for trial in trials:
        card_side = "left" if trial.images[0] in cards else "right"
        other = "right" if card_side == "left" else "left"
        assert attention_passed("pair", {"synthetic_side": card_side}, trial)
        assert not attention_passed("pair", {"synthetic_side": other}, trial)
        assert not attention_passed("pair", {"synthetic_side": None}, trial)
    assert {t.synthetic_side for t in trials} == {"left", "right"}


def test_attention_passed_rejects_wrong_trials_and_modes() -> None:
    normal = Trial(0, "normal", (sha("x"),), None, None, "real/AD")
    with pytest.raises(ValueError, match="not an attention check"):
        attention_passed("single", {"real_or_synthetic": "synthetic"}, normal)
    card = Trial(1, "attention", (sha("card"),), None, None, "attention")
    with pytest.raises(ValueError, match="pair mode attention check shows 2"):
        attention_passed("pair", {"synthetic_side": "left"}, card)
    with pytest.raises(ValueError, match="mode 'triple'"):
        attention_passed("triple", {}, card)


def test_review_design_modules_import_no_gradio() -> None:
    code = "import sys, review.attention, review.schedule; print('gradio' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
