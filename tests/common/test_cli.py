"""Tests for common.cli: a user's mistake is one ``error:`` line and exit status 2; a bug keeps its traceback."""

from __future__ import annotations

import pytest

from common.cli import refuse, run_cli


class Mistake(ValueError):
    pass


def test_a_listed_error_becomes_one_line_and_status_2(capsys) -> None:
    def command() -> int:
        raise Mistake("label 'X' is not a valid pathology label")

    assert run_cli(command, (Mistake,), prefix="cannot do it: ") == 2
    assert capsys.readouterr().err == "error: cannot do it: label 'X' is not a valid pathology label\n"


def test_success_returns_the_commands_status(capsys) -> None:
    assert run_cli(lambda: 0, (Mistake,)) == 0
    assert run_cli(lambda: 3, (Mistake,)) == 3
    assert capsys.readouterr().err == ""


def test_other_errors_keep_their_traceback() -> None:
    def command() -> int:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_cli(command, (Mistake,))


def test_refuse_prints_and_returns_2(capsys) -> None:
    assert refuse("add --yes") == 2
    assert capsys.readouterr().err == "error: add --yes\n"
