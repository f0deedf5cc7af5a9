"""Cells that a spreadsheet would run as a formula, made inert (OWASP "CSV injection").

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by
Excel, LibreOffice and Google Sheets as a formula (``=HYPERLINK(...)``, ``=cmd|' /C calc'!A0``).
Such text gets a leading apostrophe, which spreadsheets show as plain text. Numbers are left alone:
``-0.5`` stays a number.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: Any) -> Any:
    """``value`` unchanged unless it is text a spreadsheet would run as a formula; then ``"'" + value``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def neutralise_row(row: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``row`` with every cell passed through ``neutralise_cell``."""
    return {key: neutralise_cell(value) for key, value in row.items()}
