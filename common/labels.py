"""Pathology labels: the one place that says which labels exist and how they map to ids."""

from __future__ import annotations

LABELS: tuple[str, ...] = ("AD", "NonAD")
"""Valid pathology labels: adenomatous and non-adenomatous polyps."""

class UnknownLabel(ValueError):
    """A label that is not one of ``LABELS``."""


LABEL_NAMES: dict[str, str] = {"AD": "Adenomatous (AD)", "NonAD": "Non-adenomatous (Non-AD)"}


def validate_label(label: str) -> str:
    """Return ``label`` unchanged if it is a valid pathology label.

    Args:
        label: The label to check, spelled exactly as in ``LABELS``.

    Returns:
        The label.

    Raises:
        UnknownLabel: A ValueError, if the label is unknown; the message lists the valid labels.
    """
    if label not in LABELS:
        raise UnknownLabel(f"label {label!r} is not a valid pathology label; valid labels: {', '.join(LABELS)}")
    return label


def label_id(label: str) -> int:
    """Map a pathology label to its integer id (its index in ``LABELS``).

    Raises:
        UnknownLabel: A ValueError, if the label is unknown; the message lists the valid labels.
    """
    return LABELS.index(validate_label(label))
