"""The house's rules, read from the source with ``ast``: imports point down, gradio stays in the tabs.

Floors, lowest first: ``common`` (labels, clock, device, files, command-line errors), ``database``
(the shared store), then the rooms ``generation`` < ``review`` < ``evaluation``, then ``appconfig``,
the rooms' tabs (``ui.py``, and ``<noun>_tab.py`` for a room's second tab) and the doors (``app.py``, every ``__main__.py`` and ``cli.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "database", "generation", "review", "evaluation")
FLOOR = {"common": 0, "database": 1, "generation": 2, "review": 3, "evaluation": 4, "appconfig": 5}
OWN = {*PACKAGES, "appconfig", "app"}


def _modules() -> list[Path]:
    files = [REPO / "app.py", REPO / "appconfig.py"]
    for package in PACKAGES:
        files += sorted((REPO / package).rglob("*.py"))
    return files


def _is_door(path: Path) -> bool:
    return path.name in ("__main__.py", "cli.py") or path == REPO / "app.py"


def _is_tab(path: Path) -> bool:
    """A room's tab: its ``ui.py``, or a second tab of the room named ``<noun>_tab.py``."""
    return path.name == "ui.py" or path.name.endswith("_tab.py")


def _top(path: Path) -> str:
    return path.relative_to(REPO).parts[0].removesuffix(".py")


def _imports(tree: ast.AST) -> list[tuple[ast.stmt, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # "from review import studies" imports review.studies
            found += [(node, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _allowed(path: Path, imported: str) -> str | None:
    """None if ``path`` may import ``imported``, else why not."""
    top = imported.split(".")[0]
    if top == "gradio":
        return None if _is_tab(path) or _is_door(path) else "only ui.py tabs and the doors import gradio"
    if top not in OWN or _is_door(path):
        return None
    if top == "app":
        return "nothing imports the front door"
    importer = _top(path)
    leaf = imported.split(".")[-1]
    if leaf == "ui" or leaf.endswith("_tab") or ".ui." in f"{imported}.":
        if not _is_tab(path):
            return "only tabs and doors import a tab"
    if top == "appconfig":
        return None if _is_tab(path) else "rooms get their configuration passed in; only tabs and doors import appconfig"
    if FLOOR[top] > FLOOR[importer]:
        return f"{importer} stands below {top}"
    return None


def _entry_point_imports(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside a module's ``main()``: its command line, a door of its own."""
    return {node.lineno for function in ast.walk(tree)
            if isinstance(function, ast.FunctionDef) and function.name == "main"
            for node, _ in _imports(function)}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_imports_point_down(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    doors = _entry_point_imports(tree)
    wrong = [f"line {node.lineno}: {name} ({why})" for node, name in _imports(tree)
             if (why := _allowed(path, name)) and not (name.startswith("appconfig.") and node.lineno in doors)]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_project_imports_inside_functions_say_why(path: Path) -> None:
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, filename=str(path))
    hidden = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node, name in _imports(function):
            if name.split(".")[0] in OWN:
                said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
                if not said:
                    hidden.append(f"line {node.lineno}: {name}")
    assert not hidden, "project imports inside functions without a comment saying why:\n" + "\n".join(hidden)


def test_the_rules_catch_an_upward_import() -> None:
    assert _allowed(REPO / "database" / "images.py", "review.studies") == "database stands below review"
    assert _allowed(REPO / "generation" / "sampling.py", "review.studies") == "generation stands below review"
    assert _allowed(REPO / "review" / "studies.py", "evaluation.metrics") == "review stands below evaluation"
    assert _allowed(REPO / "review" / "studies.py", "gradio") is not None
    assert _allowed(REPO / "review" / "studies.py", "appconfig") is not None
    assert _allowed(REPO / "review" / "studies.py", "generation.ui") is not None
    assert _allowed(REPO / "evaluation" / "ui.py", "generation.ui") is None
    assert _allowed(REPO / "review" / "studies.py", "review.studies_tab") is not None
    assert _allowed(REPO / "review" / "studies_tab.py", "gradio") is None
    assert _allowed(REPO / "review" / "kiosk" / "__main__.py", "evaluation.metrics") is None
    assert _allowed(REPO / "common" / "labels.py", "database.images") == "common stands below database"
