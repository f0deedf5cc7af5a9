"""The blinding audit: can real and synthetic images be told apart by cues that are not content?

Usage::

    python -m review.audit --real DIR --fake DIR [--size N] [--threshold X] [--seed S] [--json]

For every image the audit measures nuisance cues only (``CUES``: frame size, file size,
compression, metadata, border, corners, overlay text, field size; never the mucosa), twice: on
the file as it is (raw) and on what a rater's browser would receive (``present`` + ``encode``).
It then asks how well these cues predict real versus synthetic:

* ``auc_raw`` / ``auc_presented``: cross-validated ROC AUC of a logistic regression on the
  standardised cues (``StratifiedKFold``, at most 5 folds and never more than the smaller class,
  shuffled with ``seed``; AUC of the pooled out-of-fold probabilities). Logistic regression was
  chosen over a random forest because it is deterministic, stable with a few dozen images and
  needs no tuning; the per-cue AUCs below catch strong single cues whatever their shape.
* ``cues_raw`` / ``cues_presented``: per cue, the AUC of the cue alone, as ``max(auc, 1 - auc)``
  (0.5: no information, 1: separates perfectly).
* ``leaks``: cues whose presented AUC exceeds ``threshold`` (default 0.75), strongest first.
  Every cue counts, file size included: a rater's browser sees the file's length as surely as
  its pixels (the presentation stores its PNGs uncompressed so that the length is the same for
  every image of a study).
* ``passed``: ``auc_presented <= threshold`` and no leaks.

With a few dozen images these AUCs are noisy (about +-0.1); a pass is evidence, not proof.

``audit_verdict`` and ``audit_rows`` put a stored audit into plain words for the Studies tab (each cue
explained in ``CUE_WORDS``, beside ``CUES``, so that a new cue gets its words where it is defined);
that is why this module runs a little over 400 lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from common.cli import run_cli
from common.images import scan_image_files
from common.numbers import show
from review.presentation import (
    Field,
    PresentationError,
    PresentationSettings,
    decode,
    encode,
    find_field,
    hull_fraction,
    present,
    read_image,
    to_rgb_array,
)

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.75
MAX_FOLDS = 5
CUES: dict[str, str] = {
    "width": "frame width in pixels",
    "height": "frame height in pixels",
    "aspect": "width / height",
    "bytes_per_pixel": "file size over width x height",
    "is_jpeg": "1 if the file is a JPEG",
    "blockiness": "mean step across 8x8 block edges over the mean step elsewhere, central half (JPEG grid)",
    "metadata_keys": "number of metadata entries (EXIF, ICC, JFIF, text chunks, dpi...)",
    "has_exif_or_icc": "1 if the file carries EXIF or an ICC profile",
    "border_mean": "mean luminance of the outer frame strips (3% of the shorter side)",
    "border_std": "standard deviation of luminance in the outer frame strips",
    "border_r": "mean red of the outer frame strips",
    "border_g": "mean green of the outer frame strips",
    "border_b": "mean blue of the outer frame strips",
    "corner_mean": "mean luminance of the four corner squares (12% of the shorter side)",
    "corner_std": "standard deviation of luminance in the corner squares",
    "overlay_fraction": "share of bright, high-contrast pixels (text) in the strips and corners",
    "field_fraction": "area of the endoscopic field's convex hull over the frame's area, to 0.01",
    "rim_ratio": "mean luminance of the field circle's rim (85-95% of its radius) over its inner half (vignetting)",
}
"""The nuisance cues measured on every image, in the order of the feature vectors."""
CUE_WORDS: dict[str, tuple[str, str]] = {
    "width": ("Image width", "how many pixels wide the file is"),
    "height": ("Image height", "how many pixels high the file is"),
    "aspect": ("Shape", "how much wider than high the image is"),
    "bytes_per_pixel": ("File size", "how many bytes the file takes per pixel; the browser sees the size of every file"),
    "is_jpeg": ("JPEG file", "whether the file is a JPEG rather than, say, a PNG"),
    "blockiness": ("JPEG blocks", "how visible the 8x8 pixel grid of JPEG compression is"),
    "metadata_keys": ("Metadata", "how many metadata entries (camera, colour profile, resolution) the file carries"),
    "has_exif_or_icc": ("Camera data", "whether the file carries camera (EXIF) data or a colour profile"),
    "border_mean": ("Border brightness", "how bright the thin strip along the image's edges is"),
    "border_std": ("Border texture", "how much the brightness varies along the image's edges"),
    "border_r": ("Border red", "how red the strip along the edges is"),
    "border_g": ("Border green", "how green the strip along the edges is"),
    "border_b": ("Border blue", "how blue the strip along the edges is"),
    "corner_mean": ("Corner brightness", "how bright the four corners are (real frames often have dark corners)"),
    "corner_std": ("Corner texture", "how much the brightness varies in the corners"),
    "overlay_fraction": ("Burned-in text", "how much bright text or overlay (time, patient data) is in the edges and corners"),
    "field_fraction": ("Field size", "how much of the image the round endoscopic view fills"),
    "rim_ratio": ("Dark rim", "how much darker the edge of the round view is than its centre (vignetting)"),
}
"""Each cue in plain words: a short name and what it looks at, for people reading an audit."""


class TooFewImages(ValueError):
    """Not enough images in one of the two sets for a cross-validated audit."""


@dataclass(frozen=True)
class AuditResult:
    """The outcome of a blinding audit; ``to_dict()`` is what a study stores.

    Attributes:
        auc_raw: Cross-validated AUC of all cues on the files as they are.
        auc_presented: The same on the presented bytes.
        cues_raw: Per cue, single-feature ``max(auc, 1 - auc)`` on the raw files.
        cues_presented: The same on the presented bytes.
        leaks: ``{"cue", "auc"}`` for presented cues above ``threshold``, strongest first.
        n_real: Number of real images.
        n_fake: Number of synthetic images.
        threshold: Largest acceptable AUC, for the classifier and for each cue.
        passed: ``auc_presented <= threshold`` and no leaks.
        settings: The presentation settings audited.
        folds: Number of cross-validation folds.
        seed: Seed of the fold shuffling.
        model: What predicted real versus synthetic.
    """

    auc_raw: float
    auc_presented: float
    cues_raw: dict[str, float]
    cues_presented: dict[str, float]
    leaks: list[dict]
    n_real: int
    n_fake: int
    threshold: float
    passed: bool
    settings: PresentationSettings
    folds: int
    seed: int
    model: str = "logistic regression (C=1) on standardised cues, stratified k-fold"

    def to_dict(self) -> dict:
        """JSON-ready values; ``settings`` as ``PresentationSettings.to_dict()``."""
        return {
            "auc_raw": self.auc_raw, "auc_presented": self.auc_presented, "leaks": list(self.leaks),
            "cues_raw": dict(self.cues_raw), "cues_presented": dict(self.cues_presented), "n_real": self.n_real,
            "n_fake": self.n_fake, "threshold": self.threshold, "passed": self.passed,
            "settings": self.settings.to_dict(), "folds": self.folds, "seed": self.seed, "model": self.model,
            "cue_descriptions": dict(CUES),
        }


def _blockiness(luma: np.ndarray) -> float:
    """Mean absolute step across 8-pixel block edges over the mean step elsewhere (1: no grid).

    Measured on the central half of the image, which lies inside the field in raw and presented
    images alike: the field's own edge would otherwise add steps at fixed places. Its origin is a
    multiple of 8, so it stays aligned with a JPEG grid.
    """
    height, width = luma.shape
    top, left = height // 4 // 8 * 8, width // 4 // 8 * 8
    centre = luma[top:top + height // 2, left:left + width // 2]
    ratios = []
    for steps in (np.abs(np.diff(centre, axis=1)), np.abs(np.diff(centre, axis=0)).T):
        if steps.shape[1] < 16:
            continue
        on_edge = (np.arange(steps.shape[1]) % 8) == 7
        ratios.append((steps[:, on_edge].mean() + 1e-3) / (steps[:, ~on_edge].mean() + 1e-3))
    return float(np.mean(ratios)) if ratios else 1.0


def _frame_regions(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the outer frame strips and of the four corner squares."""
    strip = max(1, round(0.03 * min(height, width)))
    corner = max(2, round(0.12 * min(height, width)))
    strips = np.ones((height, width), dtype=bool)
    strips[strip:height - strip, strip:width - strip] = False
    corners = np.zeros((height, width), dtype=bool)
    for rows in (slice(0, corner), slice(height - corner, height)):
        for cols in (slice(0, corner), slice(width - corner, width)):
            corners[rows, cols] = True
    return strips, corners


def _overlay_fraction(luma: np.ndarray, region: np.ndarray) -> float:
    """Share of ``region`` pixels that are bright and differ sharply from a neighbour (text)."""
    step = np.zeros_like(luma)
    step[:, 1:] = np.abs(np.diff(luma, axis=1))
    step[1:, :] = np.maximum(step[1:, :], np.abs(np.diff(luma, axis=0)))
    text = (luma > 128) & (step > 40)
    return float(text[region].mean())


def _field_fraction(luma: np.ndarray) -> float:
    """Share of the frame inside the field's convex hull, measured independently of ``present``.

    Field: pixels brighter than the corners' median plus 10 (the border's own level; the
    transform's black border is 0) on a copy at most 256 pixels wide, opened to drop text, the
    largest component; the whole frame when the corners are bright. Rounded to 0.01: smaller differences are invisible to a rater.
    """
    step = max(1, int(np.ceil(max(luma.shape) / 256)))
    height, width = luma.shape[0] // step * step, luma.shape[1] // step * step
    small = luma[:height, :width].reshape(height // step, step, width // step, step).mean(axis=(1, 3))
    _, corners = _frame_regions(*small.shape)
    border_level = float(np.median(small[corners]))
    if border_level > 40:  # bright corners: no border, the field is the whole frame
        return 1.0
    mask = ndi.uniform_filter(small, size=3, mode="nearest") > border_level + 10
    mask = ndi.binary_opening(mask, iterations=max(1, round(0.01 * min(small.shape))))
    labels, count = ndi.label(mask)
    if count == 0:
        return 0.0
    largest = labels == 1 + int(np.argmax(ndi.sum_labels(mask, labels, np.arange(1, count + 1))))
    return round(hull_fraction(ndi.binary_fill_holes(largest)), 2)


def _rim_ratio(luma: np.ndarray, field: Field) -> float:
    """Mean luminance of the field circle's rim over that of its inner half (1: no vignetting)."""
    (cx, cy), radius = field.centre, field.radius
    rows, cols = np.ogrid[:luma.shape[0], :luma.shape[1]]
    distance = np.hypot(cols + 0.5 - cx, rows + 0.5 - cy) / max(radius, 1e-6)
    rim, inner = luma[(distance >= 0.85) & (distance < 0.95)], luma[distance < 0.5]
    if rim.size == 0 or inner.size == 0:
        return 1.0
    return float((rim.mean() + 1.0) / (inner.mean() + 1.0))


def image_cues(data: bytes, image: Image.Image) -> dict[str, float]:
    """The nuisance cues (``CUES``) of one image file.

    Args:
        data: The file's bytes (their length is the file size).
        image: The decoded image (``format`` and ``info`` as read).

    Returns:
        Cue name to value, in ``CUES`` order.
    """
    rgb = to_rgb_array(image).astype(np.float32)
    height, width = rgb.shape[:2]
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    strips, corners = _frame_regions(height, width)
    field = find_field(rgb.astype(np.uint8))
    info_keys = set(image.info)
    colour = rgb[strips].mean(axis=0)
    values = {
        "width": width, "height": height, "aspect": width / height,
        "bytes_per_pixel": len(data) / (width * height),
        "is_jpeg": float(image.format == "JPEG"), "blockiness": _blockiness(luma),
        "metadata_keys": len(info_keys), "has_exif_or_icc": float(bool(info_keys & {"exif", "icc_profile"})),
        "border_mean": luma[strips].mean(), "border_std": luma[strips].std(),
        "border_r": colour[0], "border_g": colour[1], "border_b": colour[2],
        "corner_mean": luma[corners].mean(), "corner_std": luma[corners].std(),
        "overlay_fraction": _overlay_fraction(luma, strips | corners),
        "field_fraction": _field_fraction(luma), "rim_ratio": _rim_ratio(luma, field),
    }
    return {name: float(values[name]) for name in CUES}


def file_cues(path: Path | str, settings: PresentationSettings) -> tuple[dict[str, float], dict[str, float]]:
    """The cues of an image file as it is, and of its presented bytes.

    Raises:
        UnreadableImage, EmptyImage: Naming the file.
    """
    data, image = read_image(path)
    presented = encode(present(image, settings.size))
    return image_cues(data, image), image_cues(presented, decode(presented, f"{path} (presented)"))


def single_cue_auc(labels: np.ndarray, values: np.ndarray) -> float:
    """``max(auc, 1 - auc)`` of one cue; 0.5 for a cue that is the same everywhere."""
    auc = float(roc_auc_score(labels, values))
    return max(auc, 1.0 - auc)


def cross_validated_auc(features: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> float:
    """AUC of pooled out-of-fold probabilities of a logistic regression on standardised features."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, features, labels, cv=splitter, method="predict_proba")[:, 1]
    return float(roc_auc_score(labels, scores))


def _check_counts(n_real: int, n_fake: int) -> int:
    """The number of folds; raises ``TooFewImages`` below 2 images in either set."""
    if min(n_real, n_fake) < 2:
        raise TooFewImages(
            f"the audit needs at least 2 real and 2 synthetic images for 2-fold cross-validation, "
            f"got {n_real} real and {n_fake} synthetic")
    return min(MAX_FOLDS, n_real, n_fake)


def audit_files(
    real_paths: Sequence[Path | str], fake_paths: Sequence[Path | str],
    settings: PresentationSettings | None = None, threshold: float = DEFAULT_THRESHOLD, seed: int = 0,
) -> AuditResult:
    """Audit whether real and synthetic files can be told apart by nuisance cues.

    Args:
        real_paths: Real image files.
        fake_paths: Synthetic image files.
        settings: The presentation to audit (default ``PresentationSettings()``).
        threshold: Largest acceptable AUC, between 0.5 and 1.
        seed: Seed of the fold shuffling.

    Returns:
        The ``AuditResult``.

    Raises:
        TooFewImages: If either set has fewer than 2 images.
        ValueError: If ``threshold`` is outside [0.5, 1].
        UnreadableImage, EmptyImage: Naming a file that cannot be read.
    """
    settings = settings or PresentationSettings()
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.5 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0.5 and 1, got {threshold!r}")
    folds = _check_counts(len(real_paths), len(fake_paths))
    pairs = [file_cues(path, settings) for path in [*real_paths, *fake_paths]]
    labels = np.array([1] * len(real_paths) + [0] * len(fake_paths))
    raw = np.array([[cues[name] for name in CUES] for cues, _ in pairs])
    shown = np.array([[cues[name] for name in CUES] for _, cues in pairs])
    cues_raw, cues_presented = _cue_aucs(labels, raw), _cue_aucs(labels, shown)
    leaks = _above(cues_presented, threshold, list(CUES))
    auc_raw = round(cross_validated_auc(raw, labels, folds, seed), 4)
    auc_presented = round(cross_validated_auc(shown, labels, folds, seed), 4)
    logger.info("audit of %d real and %d synthetic images: AUC raw %.3f, presented %.3f, %d leaks",
                len(real_paths), len(fake_paths), auc_raw, auc_presented, len(leaks))
    return AuditResult(
        auc_raw=auc_raw, auc_presented=auc_presented, cues_raw=cues_raw, cues_presented=cues_presented,
        leaks=leaks, n_real=len(real_paths),
        n_fake=len(fake_paths), threshold=float(threshold), passed=auc_presented <= threshold and not leaks,
        settings=settings, folds=folds, seed=seed,
    )


def _cue_aucs(labels: np.ndarray, features: np.ndarray) -> dict[str, float]:
    return {name: round(single_cue_auc(labels, features[:, i]), 4) for i, name in enumerate(CUES)}


def _above(aucs: dict[str, float], threshold: float, names: Sequence[str]) -> list[dict]:
    """``{"cue", "auc"}`` for the named cues above ``threshold``, strongest first."""
    found = [{"cue": name, "auc": aucs[name]} for name in names if aucs[name] > threshold]
    return sorted(found, key=lambda leak: (-leak["auc"], leak["cue"]))


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, by suffix: ``common.files.IMAGE_SUFFIXES``), sorted by path.

    Every other entry (another file type, a dangling link, a link loop, a FIFO) is logged as
    skipped, with the reason; none is opened.

    Raises:
        FileNotFoundError: If ``folder`` is not a directory.
    """
    if not Path(folder).is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files, skipped = scan_image_files(folder)
    for path, reason in skipped:
        logger.warning("skipped %s: %s", path, reason)
    return files


def format_summary(result: AuditResult) -> str:
    """A short human-readable summary of ``result``."""
    lines = [
        (f"blinding audit: {result.n_real} real, {result.n_fake} synthetic, {result.folds}-fold CV, "
         f"presented at {result.settings.size}px ({result.settings.version})"),
        (f"  AUC from nuisance cues: raw {result.auc_raw:.3f} -> presented {result.auc_presented:.3f} "
         f"(threshold {result.threshold:.2f})"),
        "  cue                 raw    presented",
    ]
    lines += [f"  {name:<18} {result.cues_raw[name]:.3f}  {result.cues_presented[name]:.3f}" for name in CUES]
    lines.append("  leaks: " + (", ".join(f"{leak['cue']} ({leak['auc']:.3f})" for leak in result.leaks) or "none"))
    lines.append(f"  {'PASSED' if result.passed else 'FAILED'}")
    return "\n".join(lines)


AUC_WORDS = "AUC 0.50: no better than a coin toss; 1.00: tells every real image from every synthetic one"


def audit_verdict(audit: dict | None) -> str:
    """A stored audit (``AuditResult.to_dict()``) as plain sentences: passed or not, and why (Markdown)."""
    if not audit:
        return "The blinding audit has not been run for this study: press *Run blinding audit*."
    if audit.get("passed"):
        text = "**Passed**: once presented, no cue tells real from synthetic images apart better than the threshold."
    else:
        leaks = [CUE_WORDS.get(leak["cue"], (leak["cue"], ""))[0] for leak in audit.get("leaks", [])]
        text = ("**Failed**: " + (f"{', '.join(leaks)} still " + ("gives" if len(leaks) == 1 else "give")
                                  + " the synthetic images away" if leaks else "the cues together still give the "
                                  "synthetic images away") + " once presented. Fix the images, or open the study "
                "with an override reason (it is recorded).")
    if "auc_presented" in audit:
        text += (f" All cues together: AUC {show(audit['auc_presented'], 'statistic')} on what raters see, "
                 f"{show(audit.get('auc_raw'), 'statistic')} on the files (at most "
                 f"{show(audit.get('threshold', DEFAULT_THRESHOLD), 'statistic')} passes).")
    if "n_real" in audit and "n_fake" in audit:
        text += (f" {audit['n_real']} real and {audit['n_fake']} synthetic images, "
                 f"{audit.get('folds', '?')}-fold cross-validation.")
    return text


def audit_rows(audit: dict | None) -> list[list[str]]:
    """One row per cue of a stored audit: cue, what it looks at, AUC on the files and on what raters see, verdict.

    The verdict: *gives it away* (presented AUC above the threshold), *removed by the presentation*
    (only the raw files differed), *within the threshold* or *no difference* (AUC 0.5); rows in that order,
    strongest cue first.
    """
    if not audit or "cues_presented" not in audit:
        return []
    threshold = audit.get("threshold", DEFAULT_THRESHOLD)
    rows = []
    for name, presented in audit["cues_presented"].items():
        raw = audit.get("cues_raw", {}).get(name)
        title, words = CUE_WORDS.get(name, (name, CUES.get(name, "")))
        if presented > threshold:
            rank, verdict = 0, "✗ gives it away"
        elif raw is not None and raw > threshold:
            rank, verdict = 1, "✓ removed by the presentation"
        else:
            rank, verdict = 2, "✓ no difference" if presented <= 0.5 else "✓ within the threshold"
        rows.append(((rank, -presented, -(raw or 0), title),
                     [title, words, show(raw, "statistic"), show(presented, "statistic"), verdict]))
    return [row for _, row in sorted(rows)]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m review.audit",
        description="Blinding audit: how well nuisance cues (size, compression, metadata, border, overlay text) "
        "tell real from synthetic images, on the files and after the presentation transform.",
        epilog="exit status: 0 audited (passed or not), 2 unusable input",
    )
    parser.add_argument("--real", type=Path, required=True, help="folder of real images (searched recursively)")
    parser.add_argument("--fake", type=Path, required=True, help="folder of synthetic images (searched recursively)")
    parser.add_argument("--size", type=int, default=PresentationSettings().size, help="presentation size in pixels")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="largest acceptable AUC (default 0.75)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(lambda: _audit(args), (FileNotFoundError, TooFewImages, PresentationError, ValueError))


def _audit(args: argparse.Namespace) -> int:
    settings = PresentationSettings(size=args.size)
    result = audit_files(image_files(args.real), image_files(args.fake), settings, args.threshold, args.seed)
    print(json.dumps(result.to_dict(), sort_keys=True) if args.json else format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
