"""The one small-n rule, the study context behind every caption, and the banners of a part-rated study."""

from __future__ import annotations

from evaluation.study.analysis import _context_warnings
from evaluation.study.notes import StudyContext, basis_note, is_small, kappa_paradox


def test_small_n_rule_flags_few_ratings_few_raters_and_wide_intervals():
    # 6 ratings by 2 raters: both under the rule (10 ratings, 3 raters); [0, 1] is wider than 0.5.
    note = basis_note(6, 2, 3, interval=(0.0, 1.0))
    assert note.startswith("rests on 6 ratings by 2 raters of 3 images")
    assert "n too small to conclude (fewer than 10 ratings or 3 raters)" in note
    assert "95 % interval [0.00, 1.00] too wide to conclude" in note
    # 40 ratings by 5 raters with a 0.3-wide interval: nothing to flag.
    assert basis_note(40, 5, 12, interval=(0.4, 0.7)) == "rests on 40 ratings by 5 raters of 12 images"
    assert is_small(9, 5) and is_small(40, 2) and not is_small(10, 3)


def test_an_open_part_rated_tiny_study_says_so():
    # An open study, 2 raters, 6 of 10 planned trials rated; then a closed one 64 % rated; then a complete one.
    tiny = StudyContext(status="open", n_planned=10, n_rated=6, n_raters=2, n_ratings=6)
    assert tiny.describe() == "study open (ratings may still change), 60% of 10 planned trials rated; 2 raters, 6 ratings"
    warnings = _context_warnings(tiny)
    assert "close the study before reporting these numbers" in warnings[0]
    assert warnings[1].startswith("only 2 rater(s)") and warnings[2].startswith("only 6 ratings: too few")
    closed = StudyContext(status="closed", n_planned=100, n_rated=64, n_raters=5, n_ratings=64)
    assert _context_warnings(closed) == [
        "study closed, 64% of 100 planned trials rated; 5 raters, 64 ratings: 36 planned trials were never rated"]
    done = StudyContext(status="closed", n_planned=64, n_rated=64, n_raters=5, n_ratings=64)
    assert _context_warnings(done) == [] and not done.too_small()


def test_kappa_paradox_rule():
    assert kappa_paradox(-0.07, 0.79).startswith("kappa paradox: 79% raw agreement but kappa -0.07")
    assert kappa_paradox(0.4, 0.7) == ""  # balanced answers: po 0.7 gives kappa 0.4, no paradox
    assert kappa_paradox(0.5, 0.6, top_share=0.93).startswith("kappa paradox: one category holds 93%")
    assert kappa_paradox(None, 0.9) == ""
