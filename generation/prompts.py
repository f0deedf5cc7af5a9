"""Prompt templates per pathology, read from ``assets/prompts.json`` (data, not code)."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from common.labels import LABELS, validate_label

DEFAULT_PROMPTS_FILE = Path(__file__).resolve().parents[1] / "assets" / "prompts.json"


class PromptTemplateError(ValueError):
    """The prompt file is missing, malformed, or lacks a label."""


@dataclass(frozen=True)
class PromptBook:
    """The prompt templates of one prompts file.

    Attributes:
        generic: Stage-1 prompt shared by every image (polyp appearance, no pathology).
        negative: Default negative prompt.
        labels: Per label: ``short`` prompt, ``template`` with ``{placeholders}``, ``defaults``
            for those placeholders and the clinical ``vocabulary`` offered for them.
    """

    generic: str
    negative: str
    labels: Mapping[str, Mapping[str, Any]]

    def default_prompt(self, label: str) -> str:
        """The template of ``label`` filled with its defaults (what the Generate tab shows first)."""
        entry = self.labels[validate_label(label)]
        return self.fill(label, entry.get("defaults", {}))

    def fill(self, label: str, attributes: Mapping[str, Any] | None) -> str:
        """The template of ``label`` filled from ``attributes``.

        Falls back to the label's short prompt when ``attributes`` lack a placeholder, so a real
        image without recorded attributes is described only by what is known about it: its label.
        """
        entry = self.labels[validate_label(label)]
        fields = [name for _, name, _, _ in string.Formatter().parse(entry["template"]) if name]
        attributes = attributes or {}
        if all(name in attributes for name in fields):
            return entry["template"].format(**{name: attributes[name] for name in fields})
        return entry["short"]


def load_prompts(path: Path = DEFAULT_PROMPTS_FILE) -> PromptBook:
    """Read and check a prompts file.

    Raises:
        PromptTemplateError: If the file is missing, not JSON, or lacks a field or a label.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise PromptTemplateError(f"prompts file {path} does not exist") from err
    except json.JSONDecodeError as err:
        raise PromptTemplateError(f"prompts file {path} is not valid JSON: {err}") from err
    for key in ("generic", "labels"):
        if key not in raw:
            raise PromptTemplateError(f"prompts file {path} lacks the field {key!r}")
    for label in LABELS:
        entry = raw["labels"].get(label)
        if not entry or not {"short", "template"} <= set(entry):
            raise PromptTemplateError(
                f"prompts file {path} needs labels.{label} with 'short' and 'template'; labels: {', '.join(LABELS)}"
            )
    return PromptBook(generic=raw["generic"], negative=raw.get("negative", ""), labels=raw["labels"])
