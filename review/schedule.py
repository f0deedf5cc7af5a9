"""Blinded study design: which images a Turing-style study shows, to whom, and in which order.

Pure, seeded functions; no database and no UI:

1. ``StudyDesign`` is the frozen design an admin sets; it is stored as JSON (``to_dict``).
2. ``select_items`` picks the study's images from the registered pools.
   (Both live in ``review.design``.)
3. ``make_schedules`` gives each rater a list of ``Trial``: who rates which image, on which side,
   in which order, with planned repeats (intra-rater reliability) and attention checks.
4. ``summarise`` counts the result for tests and the admin tab.

Everything is a function of ``design.seed`` and the inputs. Inputs are sorted (images by sha256,
raters by ``repr``) before any random draw, so the order in which they are given does not matter.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from common.labels import LABELS
from review.design import (
    ATTENTION_CELL,
    KINDS,
    MAX_RUN,
    REPEAT_GAP,
    SIDES,
    DesignError,
    StudyDesign,
    StudyItem,
    check_choice,
    check_sha256,
    reject_duplicates,
    seeded_rng,
)


@dataclass(frozen=True)
class Trial:
    """One screen of a rater's schedule.

    Attributes:
        position: 0-based place in the rater's schedule.
        kind: ``"normal"``, ``"repeat"`` or ``"attention"``.
        images: sha256s shown: one in single mode; two in pair mode, left then right.
        synthetic_side: Pair mode: the side of the synthetic (or attention) image; else ``None``.
        repeat_of: For a repeat, the position of the trial it repeats; else ``None``.
        cell: The design cell (``"ckpt3/AD/synthetic"``, ``"real/NonAD"``, ``"attention"``);
            for the server only, never sent to a rater.
    """

    position: int
    kind: str
    images: tuple[str, ...]
    synthetic_side: str | None
    repeat_of: int | None
    cell: str

    def __post_init__(self) -> None:
        check_choice("Trial.kind", self.kind, KINDS)
        if len(self.images) not in (1, 2):
            raise DesignError(f"Trial.images must hold 1 (single) or 2 (pair) sha256s, got {self.images!r}")
        sides = (None,) if len(self.images) == 1 else SIDES
        if self.synthetic_side not in sides:
            raise DesignError(f"Trial.synthetic_side {self.synthetic_side!r} is not valid; allowed: {sides}")
        if (self.kind == "repeat") != (self.repeat_of is not None):
            raise DesignError(f"Trial.repeat_of must be set exactly for repeats, got {self.repeat_of!r}")


@dataclass(eq=False)
class _Draft:
    """A trial before its final position is known; identity (not value) tells drafts apart."""

    kind: str
    images: tuple[str, ...]
    side: str | None
    cell: str
    original: _Draft | None = None


def make_schedules(
    design: StudyDesign,
    items: Iterable[StudyItem],
    rater_ids: Iterable[Hashable],
    attention_images: Iterable[str] = (),
) -> dict[Hashable, list[Trial]]:
    """Make every rater's trial schedule.

    A study unit (single mode: an image; pair mode: a synthetic image beside a real one of the
    same label) is rated by exactly ``ratings_per_image`` distinct raters. Units are dealt cell by
    cell (seeded shuffle) round-robin along one seeded cycle of raters, so raters' totals and their
    counts in every cell (checkpoint x label x source) differ by at most one. Pair mode gives each
    rater distinct real partners, taken in turn from a seeded cycle of the label's real images so
    that usage is spread evenly. Per rater, with a generator derived from (seed, rater id): sides
    are counterbalanced within each cell, the order is shuffled avoiding more than ``MAX_RUN``
    trials of one cell in a row, ``repeats`` trials are shown again at least ``REPEAT_GAP``
    positions later (pair mode: sides swapped), and ``attention_checks`` attention trials are put
    one in each equal stretch of the schedule, never first and never adjacent.

    Global balance is preferred over per-rater independence: adding a rater changes which units
    others get. Given the same units (and real partners), a rater's order, sides, repeats and
    checks do not change.

    Args:
        design: The study design.
        items: The study's images, as ``select_items`` returns them.
        rater_ids: Distinct, hashable rater ids (e.g. database ids).
        attention_images: sha256s of attention-check images (``review.attention``).

    Returns:
        ``{rater_id: [Trial, ...]}`` with positions 0..n-1, in the order ``rater_ids`` were given.

    Raises:
        DesignError: If the raters, images or attention images cannot make the design.
    """
    raters = _check_raters(design, rater_ids)
    units, reals = _units(design, list(items))
    attention = _check_attention(design, attention_images, units, reals)
    order = sorted(raters, key=repr)
    seeded_rng(design.seed, "raters").shuffle(order)
    assigned = _assign(design, units, order)
    partners = _partners(design, assigned, reals, order) if design.mode == "pair" else {}
    return {r: _rater_schedule(design, r, assigned[r], partners.get(r), attention) for r in raters}


def _check_raters(design: StudyDesign, rater_ids: Iterable[Hashable]) -> list[Hashable]:
    raters = list(rater_ids)
    if len(set(raters)) != len(raters):
        raise DesignError(f"rater ids must be distinct, got {raters!r}")
    if design.ratings_per_image > len(raters):
        raise DesignError(
            f"ratings_per_image={design.ratings_per_image} needs at least {design.ratings_per_image} raters; "
            f"got {len(raters)}")
    return raters


def _units(design: StudyDesign, items: list[StudyItem]) -> tuple[list[StudyItem], dict[str, list[str]]]:
    for item in items:
        if not isinstance(item, StudyItem):
            raise DesignError(f"items must be StudyItems, got {item!r}")
    reject_duplicates(items)
    for item in items:
        if item.source == "synthetic" and item.checkpoint_id not in design.checkpoint_ids:
            raise DesignError(f"image {item.sha256[:12]} comes from checkpoint id {item.checkpoint_id}, "
                              f"not one of the design's {design.checkpoint_ids}")
    reals = {label: sorted(i.sha256 for i in items if i.source == "real" and i.label == label) for label in LABELS}
    units = items if design.mode == "single" else [i for i in items if i.source == "synthetic"]
    return sorted(units, key=lambda item: item.sha256), reals


def _check_attention(
    design: StudyDesign, attention_images: Iterable[str], units: list[StudyItem], reals: dict[str, list[str]]
) -> list[str]:
    cards = list(attention_images)
    for sha in cards:
        check_sha256("attention image sha256", sha)
    study = {u.sha256 for u in units} | {sha for shas in reals.values() for sha in shas}
    if len(set(cards)) != len(cards) or study & set(cards):
        raise DesignError("attention images must be distinct and not among the study's images")
    if design.attention_checks > 0 and not cards:
        raise DesignError(f"attention_checks={design.attention_checks} needs attention images; none were given")
    return sorted(cards)


def _assign(design: StudyDesign, units: list[StudyItem], order: list[Hashable]) -> dict[Hashable, list[StudyItem]]:
    """Deal units cell by cell along one cycle of raters: each unit to k consecutive raters."""
    k, n = design.ratings_per_image, len(order)
    if len(units) * k < n:
        raise DesignError(f"{n} raters but only {len(units) * k} ratings planned ({len(units)} units x "
                          f"ratings_per_image={k}); every rater needs at least one trial")
    by_cell = defaultdict(list)
    for unit in units:
        by_cell[unit.cell].append(unit)
    assigned: dict[Hashable, list[StudyItem]] = {rater: [] for rater in order}
    rng, start = seeded_rng(design.seed, "assign"), 0
    for cell in sorted(by_cell):
        for i in rng.permutation(len(by_cell[cell])):
            for j in range(k):
                assigned[order[(start + j) % n]].append(by_cell[cell][i])
            start = (start + k) % n
    return assigned


def _partners(
    design: StudyDesign, assigned: dict, reals: dict[str, list[str]], order: list[Hashable]
) -> dict[Hashable, tuple[dict[str, list[str]], list[str]]]:
    """Per rater: distinct real images per label (pairs first, then attention checks) and the
    attention checks' labels; each label's reals are taken in turn from one seeded cycle."""
    cycles = {label: [reals[label][i] for i in seeded_rng(design.seed, "partners", label).permutation(len(reals[label]))]
              for label in LABELS}
    start = dict.fromkeys(LABELS, 0)
    partners = {}
    for rater in order:
        need = Counter(unit.label for unit in assigned[rater])
        attention_labels = _attention_labels(design, rater, need, {label: len(cycles[label]) for label in LABELS})
        need.update(attention_labels)
        taken = {}
        for label, pool in cycles.items():
            if need[label] > len(pool):
                raise DesignError(f"too few real {label} images for pairs: rater {rater!r} needs {need[label]} "
                                  f"distinct ones (pairs plus attention checks), {len(pool)} exist")
            taken[label] = [pool[(start[label] + i) % len(pool)] for i in range(need[label])]
            start[label] = (start[label] + need[label]) % max(len(pool), 1)
        partners[rater] = (taken, attention_labels)
    return partners


def _attention_labels(design: StudyDesign, rater: Hashable, need: Counter, sizes: dict[str, int]) -> list[str]:
    """Labels of the real images beside a rater's attention cards: alternating, seeded start,
    switching label when one has no unused real image left for this rater."""
    first = int(seeded_rng(design.seed, "attention-labels", rater).integers(len(LABELS)))
    spare = {label: sizes[label] - need[label] for label in LABELS}
    labels = []
    for i in range(design.attention_checks):
        label = LABELS[(first + i) % len(LABELS)]
        if spare[label] <= 0:
            label = max(LABELS, key=spare.__getitem__)
        spare[label] -= 1
        labels.append(label)
    return labels


def _rater_schedule(
    design: StudyDesign, rater: Hashable, units: list[StudyItem], partners: tuple | None, attention: list[str]
) -> list[Trial]:
    rng = seeded_rng(design.seed, "rater", rater)
    reals, attention_labels = partners or ({}, [])
    reals = {label: [shas[i] for i in rng.permutation(len(shas))] for label, shas in reals.items()}
    normal = _normal_trials(design.mode, units, reals, rng)
    if design.repeats > len(normal):
        raise DesignError(f"repeats={design.repeats} but rater {rater!r} has only {len(normal)} trials to repeat")
    sequence = _insert_repeats(_order(normal, rng), design.repeats, rng)
    if design.attention_checks > len(sequence):
        raise DesignError(f"attention_checks={design.attention_checks} but rater {rater!r} has only "
                          f"{len(sequence)} other trials to put them between")
    checks = _attention_trials(design, attention, reals, attention_labels, rng)
    return _finalise(_insert_attention(sequence, checks, rng))


def _normal_trials(
    mode: str, units: list[StudyItem], reals: dict[str, list[str]], rng: np.random.Generator
) -> list[_Draft]:
    by_cell = defaultdict(list)
    for unit in units:
        by_cell[unit.cell].append(unit)
    drafts = []
    for cell in sorted(by_cell):
        if mode == "single":
            drafts += [_Draft("normal", (unit.sha256,), None, cell) for unit in by_cell[cell]]
            continue
        for unit, side in zip(by_cell[cell], _balanced_sides(len(by_cell[cell]), rng)):
            drafts.append(_pair("normal", unit.sha256, reals[unit.label].pop(), side, cell))
    return drafts


def _pair(kind: str, synthetic: str, real: str, side: str, cell: str) -> _Draft:
    images = (synthetic, real) if side == "left" else (real, synthetic)
    return _Draft(kind, images, side, cell)


def _balanced_sides(n: int, rng: np.random.Generator) -> list[str]:
    """Half left, half right in seeded order; the odd one out is seeded too."""
    first = int(rng.integers(2))
    sides = [SIDES[(first + i) % 2] for i in range(n)]
    return [sides[i] for i in rng.permutation(n)]


def _order(drafts: list[_Draft], rng: np.random.Generator) -> list[_Draft]:
    """A seeded shuffle that avoids more than ``MAX_RUN`` trials of one cell in a row where it can.

    Each step draws a cell in proportion to its trials left (a uniform shuffle, absent the rule),
    except that a cell too numerous to be spread out later must be taken now.
    """
    by_cell = defaultdict(list)
    for i in rng.permutation(len(drafts)):
        by_cell[drafts[i].cell].append(drafts[i])
    ordered: list[_Draft] = []
    while len(ordered) < len(drafts):
        left = {cell: len(by_cell[cell]) for cell in sorted(by_cell) if by_cell[cell]}
        total = sum(left.values())
        tail = {draft.cell for draft in ordered[-MAX_RUN:]}
        banned = tail.pop() if len(ordered) >= MAX_RUN and len(tail) == 1 else None
        allowed = [cell for cell in left if cell != banned] or [banned]
        urgent = [cell for cell in allowed if left[cell] > MAX_RUN * (total - left[cell])]
        pool = urgent or allowed
        weights = np.array([left[cell] for cell in pool], dtype=float)
        ordered.append(by_cell[pool[rng.choice(len(pool), p=weights / weights.sum())]].pop())
    return ordered


def _insert_repeats(normal: list[_Draft], n: int, rng: np.random.Generator) -> list[_Draft]:
    """Re-show ``n`` trials, each at least ``REPEAT_GAP`` positions after its original if the
    schedule is long enough (originals are then drawn from all but its last ``REPEAT_GAP``)."""
    sequence = list(normal)
    if n == 0:
        return sequence
    eligible = normal[: len(normal) - REPEAT_GAP] if len(normal) - REPEAT_GAP >= n else normal
    for i in sorted(rng.choice(len(eligible), size=n, replace=False)):
        original = eligible[i]
        slots = list(range(min(sequence.index(original) + REPEAT_GAP, len(sequence)), len(sequence) + 1))
        calm = [j for j in slots if _run_at(sequence, j, original.cell) <= MAX_RUN]
        choices = calm or slots
        sequence.insert(choices[int(rng.integers(len(choices)))], _repeat(original))
    return sequence


def _repeat(original: _Draft) -> _Draft:
    if original.side is None:
        return _Draft("repeat", original.images, None, original.cell, original)
    flipped = SIDES[1 - SIDES.index(original.side)]
    return _Draft("repeat", original.images[::-1], flipped, original.cell, original)


def _run_at(sequence: list[_Draft], j: int, cell: str) -> int:
    """Length of the run of ``cell`` that inserting a trial of ``cell`` at ``j`` would make."""
    before = j
    while before > 0 and sequence[before - 1].cell == cell:
        before -= 1
    after = j
    while after < len(sequence) and sequence[after].cell == cell:
        after += 1
    return after - before + 1


def _attention_trials(
    design: StudyDesign, cards: list[str], reals: dict[str, list[str]], labels: list[str], rng: np.random.Generator
) -> list[_Draft]:
    n = design.attention_checks
    if n == 0:
        return []
    order = rng.permutation(len(cards))  # distinct cards per rater while there are enough
    chosen = [cards[order[i % len(cards)]] for i in range(n)]
    if design.mode == "single":
        return [_Draft("attention", (card,), None, ATTENTION_CELL) for card in chosen]
    sides = _balanced_sides(n, rng)
    return [_pair("attention", card, reals[label].pop(), side, ATTENTION_CELL)
            for card, label, side in zip(chosen, labels, sides)]


def _insert_attention(sequence: list[_Draft], checks: list[_Draft], rng: np.random.Generator) -> list[_Draft]:
    """Put one check after a seeded trial in each of ``len(checks)`` equal stretches: never first,
    never two adjacent (each follows a different trial)."""
    if not checks:
        return sequence
    after = {int(rng.choice(stretch)) for stretch in np.array_split(np.arange(len(sequence)), len(checks))}
    pending = iter(checks)
    out = []
    for i, draft in enumerate(sequence):
        out.append(draft)
        if i in after:
            out.append(next(pending))
    return out


def _finalise(sequence: list[_Draft]) -> list[Trial]:
    position = {id(draft): i for i, draft in enumerate(sequence)}
    return [
        Trial(i, d.kind, d.images, d.side, None if d.original is None else position[id(d.original)], d.cell)
        for i, d in enumerate(sequence)
    ]


def summarise(schedules: Mapping[Hashable, list[Trial]]) -> dict:
    """Count schedules per rater and per cell.

    Args:
        schedules: ``make_schedules`` output.

    Returns:
        ``{"raters": {rater_id: {"trials", "normal", "repeat", "attention": int, "cells": {cell: n},
        "sides": {cell: {"left": n, "right": n}}}}, "cells": {cell: n}, "ratings_per_unit":
        {ratings: units}, "trials": int}``; cell counts are of normal trials, a unit is the
        single image or the pair's synthetic image, and ``sides`` is empty in single mode.
    """
    raters, cells, per_unit = {}, Counter(), Counter()
    for rater, trials in schedules.items():
        normal = [t for t in trials if t.kind == "normal"]
        kinds = Counter(t.kind for t in trials)
        sides: dict[str, dict[str, int]] = {}
        for trial in normal:
            if trial.synthetic_side is not None:
                sides.setdefault(trial.cell, dict.fromkeys(SIDES, 0))[trial.synthetic_side] += 1
            per_unit[trial.images[0 if trial.synthetic_side in (None, "left") else 1]] += 1
        counts = Counter(t.cell for t in normal)
        raters[rater] = {"trials": len(trials), **{kind: kinds[kind] for kind in KINDS},
                         "cells": dict(sorted(counts.items())), "sides": dict(sorted(sides.items()))}
        cells.update(counts)
    return {"raters": raters, "cells": dict(sorted(cells.items())),
            "ratings_per_unit": dict(sorted(Counter(per_unit.values()).items())),
            "trials": sum(len(trials) for trials in schedules.values())}
