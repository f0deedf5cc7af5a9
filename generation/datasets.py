"""Finding and validating labelled image files: a folder of ``AD/`` and ``NonAD/`` or a CSV.

Nothing here touches the database; ``review.register`` stores what ``scan_labelled`` finds.
Every file is fully decoded once, so a truncated or corrupt file is reported here, by name,
instead of failing later in a study or a metric.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from common.files import IMAGE_SUFFIXES, is_image_file, sha256_file
from common.images import file_problem, refused_file
from common.labels import LABELS
from generation.prompts import load_prompts

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

CSV_COLUMNS: tuple[str, ...] = ("file", "label")

MANIFEST_FILE = "PHANTOM.json"
"""What a phantom set (``generation.phantom``) records about each of its images."""

DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
"""What Pillow raises for files it cannot identify or decode (truncated, corrupt, too large)."""

_EXPECTED = "expected image files in DIR/AD/ and DIR/NonAD/ or a CSV with file,label"


@dataclass(frozen=True)
class LabelledFile:
    """An image file that decoded completely, with its label and content hash."""

    path: Path
    label: str
    sha256: str
    width: int
    height: int


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class ScanResult:
    """What a scan found.

    Attributes:
        files: Usable images, one per distinct content hash, in scan order.
        problems: Files skipped because they are not readable images.
        duplicates: ``(duplicate, first)`` pairs of files with the same sha256; only ``first``
            is in ``files``.
    """

    files: list[LabelledFile]
    problems: list[Problem]
    duplicates: list[tuple[Path, Path]]


class DatasetError(ValueError):
    """The source as a whole is unusable (missing, wrong layout, bad CSV, no usable images).

    Attributes:
        problems: The per-file problems found before giving up (may be empty).
    """

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.problems: list[Problem] = list(problems or [])


def scan_labelled(source: Path) -> ScanResult:
    """Find, decode and hash the labelled images in a folder or CSV.

    Accepted layouts:

    * a folder holding ``AD/`` and/or ``NonAD/``; the files directly inside them are read in
      name order (hidden files are ignored, subfolders are reported as problems);
    * a CSV file with a header containing ``file`` and ``label``; ``file`` is relative to the
      CSV's folder or absolute. Rows are read in file order.

    Unsupported suffixes, dangling links and files that do not decode completely are reported as
    problems and skipped; a FIFO, a device or a link loop refuses the whole source before any file
    is opened. Files with the same content hash are kept once: the first seen goes in ``files``,
    later ones in ``duplicates``.

    Args:
        source: The folder or CSV file.

    Returns:
        The usable files, the problems and the duplicates.

    Raises:
        DatasetError: If the source is missing, has neither ``AD/`` nor ``NonAD/``, is a CSV
            without the ``file,label`` columns or with a label not in ``LABELS``, or holds no
            usable image.
    """
    source = Path(source)
    if not source.exists():
        raise DatasetError(f"data source {str(source)!r} does not exist; {_EXPECTED}")
    if source.is_dir():
        candidates = _folder_candidates(source)
    elif source.suffix.lower() == ".csv":
        candidates = _csv_candidates(source)
    else:
        raise DatasetError(
            f"data source {str(source)!r} is neither a folder nor a .csv file; {_EXPECTED}"
        )

    result = _check_candidates(candidates)
    if not result.files:
        raise DatasetError(_no_usable_message(source, result.problems), result.problems)
    logger.info(
        "scanned %s: %d usable images, %d duplicates, %d problems",
        source, len(result.files), len(result.duplicates), len(result.problems),
    )
    return result


def _folder_candidates(folder: Path) -> list[tuple[Path, str]]:
    label_dirs = [(folder / label, label) for label in LABELS if (folder / label).is_dir()]
    if not label_dirs:
        found = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        raise DatasetError(
            f"data folder {str(folder)!r} has no {' or '.join(l + '/' for l in LABELS)} subfolder "
            f"(subfolders found: {', '.join(found) or 'none'}); {_EXPECTED}"
        )
    return [
        (path, label)
        for label_dir, label in label_dirs
        for path in sorted(label_dir.iterdir(), key=lambda p: p.name)
        if not path.name.startswith(".")
    ]


def _csv_candidates(csv_path: Path) -> list[tuple[Path, str]]:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in (reader.fieldnames or [])]
        missing = [column for column in CSV_COLUMNS if column not in header]
        if missing:
            raise DatasetError(
                f"CSV {str(csv_path)!r} lacks column(s) {', '.join(missing)} "
                f"(header found: {','.join(header) or 'empty'}); expected a header with file,label"
            )
        reader.fieldnames = header
        candidates: list[tuple[Path, str]] = []
        bad_rows: list[str] = []
        for row_number, row in enumerate(reader, start=1):
            name = (row.get("file") or "").strip()
            label = (row.get("label") or "").strip()
            where = f"row {row_number} (line {reader.line_num})"
            if label not in LABELS:
                bad_rows.append(f"{where}: label {label!r} is not valid")
            elif not name:
                bad_rows.append(f"{where}: empty file name")
            else:
                path = Path(name)
                candidates.append((path if path.is_absolute() else csv_path.parent / path, label))
    if bad_rows:
        more = f"; and {len(bad_rows) - 5} more" if len(bad_rows) > 5 else ""
        raise DatasetError(
            f"CSV {str(csv_path)!r} has invalid rows: {'; '.join(bad_rows[:5])}{more}; "
            f"expected a file name and one of the valid labels: {', '.join(LABELS)}"
        )
    return candidates


def _check_candidates(candidates: list[tuple[Path, str]]) -> ScanResult:
    files: list[LabelledFile] = []
    problems: list[Problem] = []
    duplicates: list[tuple[Path, Path]] = []
    first_by_hash: dict[str, LabelledFile] = {}
    for path, label in candidates:
        checked = _check_file(path, label)
        if isinstance(checked, Problem):
            logger.warning("skipping %s: %s", checked.path, checked.reason)
            problems.append(checked)
            continue
        first = first_by_hash.get(checked.sha256)
        if first is None:
            first_by_hash[checked.sha256] = checked
            files.append(checked)
            continue
        duplicates.append((path, first.path))
        if first.label != label:
            logger.warning(
                "%s (%s) has the same content as %s (%s); keeping the first label",
                path, label, first.path, first.label,
            )
        else:
            logger.info("%s is a duplicate of %s", path, first.path)
    return ScanResult(files=files, problems=problems, duplicates=duplicates)


def _check_file(path: Path, label: str) -> LabelledFile | Problem:
    if path.is_dir():
        return Problem(path, "is a folder; only files directly inside AD/ and NonAD/ are read")
    refused = refused_file(path)
    if refused is not None:  # a FIFO would block the scan for ever; a loop never resolves
        raise DatasetError(f"{path} is {refused}; nothing was registered: remove it and run again")
    if path.is_symlink() and not path.exists():
        return Problem(path, f"file not found: {file_problem(path)}")
    if not path.exists():
        return Problem(path, "file not found")
    if not is_image_file(path):
        shown = repr(path.suffix) if path.suffix else "(no suffix)"
        return Problem(
            path, f"unsupported file type {shown} (supported: {', '.join(IMAGE_SUFFIXES)})"
        )
    size = decoded_size(path)
    if isinstance(size, Problem):
        return size
    width, height = size
    try:
        digest = sha256_file(path)
    except OSError as error:
        return Problem(path, f"unreadable file: {error}")
    return LabelledFile(path=path, label=label, sha256=digest, width=width, height=height)


def decoded_size(path: Path) -> tuple[int, int] | Problem:
    """The (width, height) of an image file decoded completely, or the ``Problem`` that it is unreadable."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes every byte, so truncated files fail here
            return image.size
    except DECODE_ERRORS as error:
        return Problem(path, f"unreadable image: {error}")


def _no_usable_message(source: Path, problems: list[Problem]) -> str:
    message = f"no usable images in {str(source)!r}; {_EXPECTED}"
    if problems:
        shown = "; ".join(f"{p.path.name}: {p.reason}" for p in problems[:3])
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        message += f" ({len(problems)} file(s) skipped: {shown}{more})"
    return message


# -- training sets ---------------------------------------------------------------------------


@dataclass
class TrainingSet:
    """Training images in memory: pixels in [-1, 1], labels and per-image stage-2 prompts."""

    pixels: torch.Tensor
    labels: list[str]
    prompts: list[str]
    summary: dict


def load_training_set(source: Path, image_size: int) -> TrainingSet:
    """Read, centre-crop and resize the labelled images; attach stage-2 prompts.

    Prompts come from ``assets/prompts.json``, filled with each image's attributes when the
    folder's ``PHANTOM.json`` records them, else the label's short prompt.

    Raises:
        generation.datasets.DatasetError: If the source is unusable or holds no image.
    """
    import torch  # torch loads only for training, not for scanning a folder

    scan = scan_labelled(Path(source))
    for problem in scan.problems:
        logger.warning("skipping %s: %s", problem.path, problem.reason)
    manifest, attributes = read_manifest(source)
    book = load_prompts()
    pixels, labels, prompts = [], [], []
    for item in scan.files:
        pixels.append(load_frame(item.path, image_size))
        labels.append(item.label)
        prompts.append(book.fill(item.label, attributes.get(item.path.resolve())))
    summary = {
        "source": str(source),
        "n_images": len(labels),
        "per_label": {label: labels.count(label) for label in sorted(set(labels))},
        "phantom": manifest.get("kind") == "phantom",
        "skipped": len(scan.problems),
        "duplicates": len(scan.duplicates),
    }
    return TrainingSet(torch.stack(pixels), labels, prompts, summary)


def read_manifest(source: Path) -> tuple[dict, dict[Path, dict]]:
    """A phantom set's ``PHANTOM.json`` (``{}`` when ``source`` has none) and its entries by resolved image path.

    Raises:
        DatasetError: If the manifest is not valid JSON.
    """
    manifest_file = Path(source) / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    except json.JSONDecodeError as err:
        raise DatasetError(f"{manifest_file} is not valid JSON ({err}); fix or remove it") from err
    return manifest, {(Path(source) / entry["file"]).resolve(): entry for entry in manifest.get("images", [])}


def load_frame(path: Path, size: int) -> torch.Tensor:
    """An image file as the models see it: RGB, centre square resized to ``size``, (3, size, size) in [-1, 1]."""
    with Image.open(path) as image:
        return _to_tensor(_square(image.convert("RGB"), size))


def _square(image, size: int):
    """Centre-crop to a square (the round endoscopic field sits in the middle), then resize."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def _to_tensor(image):
    import numpy as np
    import torch  # torch loads only for training, not for scanning a folder

    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
