"""Tests for review.schedule: study design, image selection and per-rater trial schedules."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict

import pytest

from review.design import REPEAT_GAP, DesignError, StudyDesign, StudyItem, select_items
from review.schedule import Trial, make_schedules, summarise

CHECKPOINTS = (3, 7)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def synthetic_pool(per_cell: int = 8, checkpoints: tuple[int, ...] = CHECKPOINTS) -> list[StudyItem]:
    return [StudyItem(sha(f"s{c}-{label}-{i}"), "synthetic", label, c)
            for c in checkpoints for label in ("AD", "NonAD") for i in range(per_cell)]


def real_pool(per_label: int = 30) -> list[StudyItem]:
    return [StudyItem(sha(f"r-{label}-{i}"), "real", label) for label in ("AD", "NonAD") for i in range(per_label)]


ATTENTION = [sha(f"attention-{i}") for i in range(6)]


def design(mode: str = "single", **overrides) -> StudyDesign:
    values = dict(mode=mode, checkpoint_ids=CHECKPOINTS, images_per_cell=4, ratings_per_image=2,
                  repeats=3, attention_checks=2, seed=11)
    return StudyDesign(**{**values, **overrides})


def schedules_for(d: StudyDesign, raters=(1, 2, 3), attention=ATTENTION, reals: int = 30):
    items = select_items(d, synthetic_pool(), real_pool(reals))
    return items, make_schedules(d, items, list(raters), attention)


# --- design -----------------------------------------------------------------------------------


def test_design_round_trips_through_json() -> None:
    d = design("pair", real_per_label=5, size=512)
    again = StudyDesign.from_dict(json.loads(json.dumps(d.to_dict())))
    assert again == d and again.checkpoint_ids == CHECKPOINTS
    assert design(checkpoint_ids=[7, 3]).checkpoint_ids == (7, 3)  # stored as a hashable tuple


def test_design_balances_real_and_synthetic_by_default() -> None:
    assert design().real_images_per_label == 4 * len(CHECKPOINTS)
    assert design(real_per_label=3).real_images_per_label == 3


@pytest.mark.parametrize(("field", "value", "words"), [
    ("mode", "triple", ["mode", "'triple'", "'single'", "'pair'"]),
    ("size", 32, ["size", "32", "64..1024"]),
    ("size", 2048, ["size", "2048", "64..1024"]),
    ("images_per_cell", 0, ["images_per_cell", "0", ">= 1"]),
    ("ratings_per_image", True, ["ratings_per_image", "integer", "True"]),
    ("repeats", -1, ["repeats", "-1", ">= 0"]),
    ("seed", -5, ["seed", "-5", ">= 0"]),
    ("checkpoint_ids", (), ["checkpoint_ids", "()"]),
    ("checkpoint_ids", (3, 3), ["checkpoint_ids", "distinct"]),
    ("checkpoint_ids", "37", ["checkpoint_ids", "'37'"]),
    ("checkpoint_ids", (3, "7"), ["checkpoint_ids", "integer", "'7'"]),
])
def test_design_rejects_bad_values_naming_field_value_and_allowed(field, value, words) -> None:
    with pytest.raises(DesignError) as error:
        design(**{field: value})
    for word in words:
        assert word in str(error.value)


def test_design_from_dict_rejects_unknown_and_missing_fields() -> None:
    with pytest.raises(DesignError, match="unknown StudyDesign field.*colour"):
        StudyDesign.from_dict({**design().to_dict(), "colour": "red"})
    with pytest.raises(DesignError, match="missing: images_per_cell"):
        StudyDesign.from_dict({"mode": "single", "checkpoint_ids": [1]})


def test_study_item_is_validated() -> None:
    with pytest.raises(DesignError, match="label.*AD, NonAD"):
        StudyItem(sha("x"), "real", "Serrated")
    with pytest.raises(DesignError, match="checkpoint_id"):
        StudyItem(sha("x"), "synthetic", "AD")
    with pytest.raises(DesignError, match="checkpoint_id must be None"):
        StudyItem(sha("x"), "real", "AD", 3)
    with pytest.raises(DesignError, match="sha256"):
        StudyItem("abc", "real", "AD")


# --- selection --------------------------------------------------------------------------------


def test_select_items_takes_each_cell_and_ignores_pool_order() -> None:
    d = design(real_per_label=5)
    chosen = select_items(d, synthetic_pool(), real_pool())
    cells = Counter(item.cell for item in chosen)
    assert cells == {"ckpt3/AD/synthetic": 4, "ckpt3/NonAD/synthetic": 4, "ckpt7/AD/synthetic": 4,
                     "ckpt7/NonAD/synthetic": 4, "real/AD": 5, "real/NonAD": 5}
    assert select_items(d, synthetic_pool()[::-1], real_pool()[::-1]) == chosen
    assert select_items(design(real_per_label=5, seed=12), synthetic_pool(), real_pool()) != chosen


def test_select_items_in_pair_mode_keeps_every_real_image() -> None:
    chosen = select_items(design("pair"), synthetic_pool(), real_pool(9))
    assert sum(item.source == "real" for item in chosen) == 18


def test_select_items_names_the_cell_that_is_short() -> None:
    pool = [item for item in synthetic_pool() if not (item.checkpoint_id == 7 and item.label == "NonAD")]
    pool += synthetic_pool(2, (7,))[2:]  # two ckpt7/NonAD images
    short = r"checkpoint id 7, label NonAD, source synthetic: the design needs 4, 2 exist"
    with pytest.raises(DesignError, match=short):
        select_items(design(), pool, real_pool())
    with pytest.raises(DesignError, match=r"label AD, source real: the design needs 8, 3 exist"):
        select_items(design(), synthetic_pool(), real_pool(3))


def test_select_items_rejects_wrong_source_and_duplicates() -> None:
    with pytest.raises(DesignError, match="synthetic pool"):
        select_items(design(), real_pool(), real_pool())
    with pytest.raises(DesignError, match="duplicated"):
        select_items(design(), synthetic_pool() * 2, real_pool())


# --- schedules: invariants --------------------------------------------------------------------


def check_invariants(d: StudyDesign, items: list[StudyItem], schedules: dict[int, list[Trial]]) -> None:
    by_sha = {item.sha256: item for item in items}
    units = [i for i in items if d.mode == "single" or i.source == "synthetic"]
    raters_of = defaultdict(list)
    for rater, trials in schedules.items():
        assert [t.position for t in trials] == list(range(len(trials)))
        kinds = Counter(t.kind for t in trials)
        assert (kinds["repeat"], kinds["attention"]) == (d.repeats, d.attention_checks)
        seen = [sha for t in trials if t.kind != "repeat" for sha in t.images]
        assert len(seen) == len(set(seen)), "an image shown twice to one rater outside repeats"
        for t in trials:
            if t.kind == "normal":
                unit = t.images[0] if d.mode == "single" else t.images[SIDES_INDEX[t.synthetic_side]]
                raters_of[unit].append(rater)
                assert by_sha[unit].cell == t.cell
            if d.mode == "pair" and t.kind != "attention":
                left, right = (by_sha[s] for s in t.images)
                synthetic, real = (left, right) if t.synthetic_side == "left" else (right, left)
                assert (synthetic.source, real.source, real.label) == ("synthetic", "real", synthetic.label)
        check_repeats(trials, d)
        check_attention(trials, d)
    for unit in units:
        assert len(raters_of[unit.sha256]) == len(set(raters_of[unit.sha256])) == d.ratings_per_image
    check_balance(d, summarise(schedules))


SIDES_INDEX = {"left": 0, "right": 1}


def check_repeats(trials: list[Trial], d: StudyDesign) -> None:
    normal = sum(t.kind == "normal" for t in trials)
    for t in trials:
        if t.kind != "repeat":
            continue
        original = trials[t.repeat_of]
        assert original.kind == "normal" and original.cell == t.cell and t.repeat_of < t.position
        if d.mode == "single":
            assert t.images == original.images
        else:
            assert t.images == original.images[::-1] and t.synthetic_side != original.synthetic_side
        if normal - REPEAT_GAP >= d.repeats:
            assert t.position - t.repeat_of >= REPEAT_GAP


def check_attention(trials: list[Trial], d: StudyDesign) -> None:
    positions = [t.position for t in trials if t.kind == "attention"]
    assert 0 not in positions
    assert all(b - a > 1 for a, b in zip(positions, positions[1:]))
    if len(positions) >= 2:
        assert positions[0] < len(trials) / 2 < positions[-1], "checks bunched in one half"
    for t in trials:
        if t.kind == "attention":
            assert t.cell == "attention"
            card = t.images[0] if d.mode == "single" else t.images[SIDES_INDEX[t.synthetic_side]]
            assert card in ATTENTION


def check_balance(d: StudyDesign, summary: dict) -> None:
    raters = summary["raters"].values()
    totals = [r["normal"] for r in raters]
    assert max(totals) - min(totals) <= 1
    for cell in summary["cells"]:
        counts = [r["cells"].get(cell, 0) for r in raters]
        assert max(counts) - min(counts) <= 1, cell
    for rater in raters:
        for cell, sides in rater["sides"].items():
            assert abs(sides["left"] - sides["right"]) <= 1, (cell, sides)
    assert summary["ratings_per_unit"] == {d.ratings_per_image: len(summary_units(d))}


def summary_units(d: StudyDesign) -> range:
    synthetic = d.images_per_cell * len(d.checkpoint_ids) * 2
    return range(synthetic + (2 * d.real_images_per_label if d.mode == "single" else 0))


@pytest.mark.parametrize("mode", ["single", "pair"])
@pytest.mark.parametrize("n_raters", [1, 3, 20])
def test_schedules_hold_their_invariants_over_seeds(mode: str, n_raters: int) -> None:
    for seed in range(4):
        d = design(mode, seed=seed, ratings_per_image=min(2, n_raters), repeats=1 if n_raters == 20 else 3,
                   attention_checks=1 if n_raters == 20 else 3)
        items, schedules = schedules_for(d, raters=range(100, 100 + n_raters))
        check_invariants(d, items, schedules)


def test_schedules_are_deterministic_and_ignore_input_order() -> None:
    d = design("pair")
    items, first = schedules_for(d)
    assert make_schedules(d, items[::-1], [3, 2, 1], ATTENTION[::-1]) == first
    _, other = schedules_for(design("pair", seed=12))
    assert other != first


def test_order_avoids_three_of_a_cell_in_a_row() -> None:
    for seed in range(5):
        d = design(images_per_cell=6, real_per_label=6, ratings_per_image=1, repeats=4, attention_checks=0, seed=seed)
        items = select_items(d, synthetic_pool(), real_pool())
        for trials in make_schedules(d, items, [1, 2]).values():
            cells = [t.cell for t in trials]
            assert not any(a == b == c for a, b, c in zip(cells, cells[1:], cells[2:])), cells


def test_pair_partners_spread_over_the_real_pool() -> None:
    d = design("pair", ratings_per_image=3, repeats=0, attention_checks=0)
    items, schedules = schedules_for(d, raters=range(6), reals=8)
    usage = Counter(s for trials in schedules.values() for t in trials
                    for s in t.images if s != t.images[SIDES_INDEX[t.synthetic_side]])
    for label in ("AD", "NonAD"):
        counts = [usage[item.sha256] for item in items if item.source == "real" and item.label == label]
        assert max(counts) - min(counts) <= 1, counts


def test_summarise_counts_per_rater_and_cell() -> None:
    d = design(ratings_per_image=1, repeats=2, attention_checks=1)
    _, schedules = schedules_for(d, raters=[1, 2])
    summary = summarise(schedules)
    assert summary["trials"] == sum(len(t) for t in schedules.values())
    assert sum(summary["cells"].values()) == 4 * 4 + 2 * 8
    assert summary["raters"][1]["repeat"] == 2 and summary["raters"][1]["attention"] == 1


# --- schedules: errors ------------------------------------------------------------------------


def test_too_many_ratings_per_image_for_the_raters() -> None:
    with pytest.raises(DesignError, match="ratings_per_image=3 needs at least 3 raters; got 2"):
        schedules_for(design(ratings_per_image=3), raters=[1, 2])


def test_too_few_real_images_for_pairs_names_label_and_numbers() -> None:
    with pytest.raises(DesignError, match=r"too few real (AD|NonAD) images for pairs: rater 1 needs \d+ .*, 2 exist"):
        schedules_for(design("pair", ratings_per_image=1, attention_checks=0), raters=[1], reals=2)


def test_attention_checks_need_attention_images() -> None:
    with pytest.raises(DesignError, match="attention_checks=2 needs attention images"):
        schedules_for(design(), attention=())
    with pytest.raises(DesignError, match="attention images must be distinct"):
        schedules_for(design(), attention=[ATTENTION[0]] * 2)


def test_more_repeats_than_trials_and_idle_raters_are_errors() -> None:
    with pytest.raises(DesignError, match="repeats=40 but rater .* has only"):
        schedules_for(design(repeats=40))
    with pytest.raises(DesignError, match="70 raters but only 64 ratings planned"):
        schedules_for(design(), raters=range(70))


def test_rater_ids_must_be_distinct_and_items_from_the_design() -> None:
    with pytest.raises(DesignError, match="distinct"):
        schedules_for(design(), raters=[1, 1, 2])
    d = design()
    items = select_items(d, synthetic_pool(), real_pool()) + synthetic_pool(1, (99,))
    with pytest.raises(DesignError, match="checkpoint id 99"):
        make_schedules(d, items, [1, 2], ATTENTION)
