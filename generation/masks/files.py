"""Polyp masks: reading binary or colour-coded mask files, and pairing them with their images.

A mask is a boolean array (height, width), True on the polyp. Files may be binary (0/255, 0/1,
or any one foreground value on 0; grey-scale, or RGB with equal channels) or colour-coded, where
the colour says the class (e.g. BKAI-IGH NeoPolyp: red neoplastic, green non-neoplastic) and a
``colour_map`` such as ``{"#ff0000": "AD", "#00ff00": "NonAD"}`` says which colour is which label;
black is background. Values that are neither (JPEG-smeared greys, unknown colours) are refused
unless a ``threshold`` is given, so a lossy mask is never binarised silently.

Image and mask folders (``scan_mask_pairs``): ``ROOT/images/`` mirrored by ``ROOT/masks/``,
files matched by relative folder and file stem (any image suffix on either side). The label
comes from an ``AD/`` or ``NonAD/`` folder level, or else from the mask colour. The phantom
generator's layout (``ROOT/AD/``, ``ROOT/NonAD/``, ``ROOT/masks/<label>/``) is read as well.
Nothing here touches the database; ``review.register --masks`` stores what the scan finds.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from common.files import is_image_file, sha256_file
from common.labels import LABELS, validate_label
from generation.datasets import DECODE_ERRORS, MANIFEST_FILE, DatasetError, Problem, decoded_size

logger = logging.getLogger(__name__)

_HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
_LAYOUT = (
    "expected ROOT/images/ mirrored by ROOT/masks/ (same relative folder and file stem), with the "
    "label as an AD/ or NonAD/ folder level or read from the mask colour, or the phantom layout "
    "ROOT/AD/, ROOT/NonAD/ with ROOT/masks/AD/, ROOT/masks/NonAD/"
)


class MaskError(DatasetError):
    """A mask file that cannot be read as a polyp mask (empty, not binary, unknown colours, mixed classes)."""


@dataclass(frozen=True)
class MaskPair:
    """An image and its mask, both decoded completely and of the same size.

    Attributes:
        image_path, mask_path: The two files.
        label: The image's label (from its folder, else from the mask colour).
        sha256, mask_sha256: Content hashes of the image and the mask file.
        width, height: Size of both.
        mask_label: The label the mask colour says, None for binary masks.
        area_fraction: Share of the frame the polyp covers.
        mask_source: ``"phantom"`` for a phantom set's exact masks, else ``"real"``.
        reading: How the mask file was read (``colour_map``, ``threshold``), to read it again alike.
    """

    image_path: Path
    mask_path: Path
    label: str
    sha256: str
    mask_sha256: str
    width: int
    height: int
    mask_label: str | None
    area_fraction: float
    mask_source: str
    reading: dict


@dataclass(frozen=True)
class MaskScan:
    """What ``scan_mask_pairs`` found: usable pairs, skipped files with reasons, duplicate images."""

    pairs: list[MaskPair]
    problems: list[Problem]
    duplicates: list[tuple[Path, Path]]


def parse_colour_map(colour_map: dict | str | Path | None) -> dict[tuple[int, int, int], str] | None:
    """Validate a colour map given as a dict, a JSON text or a JSON file path.

    Returns:
        ``{(r, g, b): label}``, or None when ``colour_map`` is None.

    Raises:
        MaskError: If a key is not ``#rrggbb``, is black (the background) or repeats, or a value is
            not a valid label; the message names the entry and the allowed values.
    """
    if colour_map is None:
        return None
    if isinstance(colour_map, (str, Path)):
        text = Path(colour_map).read_text() if Path(str(colour_map)).is_file() else str(colour_map)
        try:
            colour_map = json.loads(text)
        except json.JSONDecodeError as err:
            raise MaskError(f"colour map {text[:80]!r} is not JSON ({err}); expected e.g. "
                            '{"#ff0000": "AD", "#00ff00": "NonAD"}') from err
    if not isinstance(colour_map, dict) or not colour_map:
        raise MaskError(f"colour map must be a non-empty object of \"#rrggbb\": label, got {colour_map!r}")
    parsed: dict[tuple[int, int, int], str] = {}
    for key, label in colour_map.items():
        if not isinstance(key, str) or not _HEX_COLOUR.fullmatch(key):
            raise MaskError(f"colour map key {key!r} is not a colour; expected \"#rrggbb\", e.g. \"#ff0000\"")
        rgb = tuple(int(key[i:i + 2], 16) for i in (1, 3, 5))
        if rgb == (0, 0, 0):
            raise MaskError("colour map key '#000000' is the background; map only polyp colours")
        if label not in LABELS:
            raise MaskError(f"colour map entry {key!r}: label {label!r} is not valid; valid labels: {', '.join(LABELS)}")
        if rgb in parsed:
            raise MaskError(f"colour map names {key!r} twice (keys are compared case-insensitively)")
        parsed[rgb] = label
    return parsed


def load_mask(
    path: Path, colour_map: dict | str | None = None, threshold: int | None = None,
) -> tuple[np.ndarray, str | None]:
    """Read one mask file.

    Args:
        path: The mask file.
        colour_map: ``{"#rrggbb": label}`` for colour-coded masks (see ``parse_colour_map``);
            None reads a binary mask. Grey masks are read as binary even with a map (unless
            the map names a grey), so binary and colour-coded masks can share a folder.
        threshold: Off by default. A grey level (1-255): pixels at or above it are the polyp,
            for lossy (JPEG) masks; with a colour map, a pixel whose brightest channel reaches it
            is the polyp, of the class of the nearest mapped colour.

    Returns:
        ``(mask, label)``: a boolean (height, width) array and the label the colour says (None
        for binary masks).

    Raises:
        MaskError: If the file is unreadable, holds values that are not binary (or colours not
            in the map) and no threshold is given, is colour-coded but no map is given, holds
            two classes, or is empty. The message names the file, what was found and the fix.
    """
    return _read_mask(Path(path), parse_colour_map(colour_map), threshold)


def _read_mask(path: Path, colours: dict | None, threshold: int | None) -> tuple[np.ndarray, str | None]:
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 255):
        raise MaskError(f"threshold must be a whole grey level between 1 and 255, got {threshold!r}")
    try:
        with Image.open(path) as image:
            image.load()
            array = _as_array(image)
    except DECODE_ERRORS as err:
        raise MaskError(f"mask {path} is unreadable: {err}") from err
    if colours is None or (_is_grey(array) and not any(r == g == b for r, g, b in colours)):
        # A grey mask among colour-coded ones is binary: the class comes from the folder.
        mask, label = _binary(path, array, threshold), None
    else:
        mask, label = _coloured(path, array, colours, threshold)
    if not mask.any():
        raise MaskError(f"mask {path} is empty (no polyp pixel); every image needs a polyp outlined in its mask")
    return mask, label


def _as_array(image: Image.Image) -> np.ndarray:
    """(h, w) for grey-scale modes, (h, w, 3) for colour; 16-bit and 1-bit kept exact."""
    if image.mode in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(image.convert("I") if image.mode.startswith("I;16") else image)
    return np.asarray(image.convert("RGB"))


def _is_grey(array: np.ndarray) -> bool:
    return array.ndim == 2 or (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]))


def _binary(path: Path, array: np.ndarray, threshold: int | None) -> np.ndarray:
    if array.ndim == 3:
        if not _is_grey(array):
            found = ", ".join(_hex(c) for c in _top_colours(array, 4))
            raise MaskError(
                f"mask {path} is colour-coded (colours found: {found}); pass a colour map such as "
                '{"#ff0000": "AD", "#00ff00": "NonAD"} (register --colour-map) to read the class from the colour'
            )
        array = array[..., 0]
    if array.dtype == bool:
        return array.copy()
    if threshold is not None:
        scale = 255.0 / float(array.max()) if array.max() > 255 else 1.0  # 16-bit masks
        return array * scale >= threshold
    values = np.unique(array)
    if len(values) <= 2 and values[0] == 0:
        return array > 0
    if len(values) == 1:  # one non-zero value: the whole frame is the polyp
        return np.ones(array.shape, bool)
    shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise MaskError(
        f"mask {path} is not binary: {len(values)} distinct values ({shown}); expected background 0 and "
        "one polyp value (0/255 or 0/1). Lossy formats (JPEG) smear the edges: re-export the masks as PNG, "
        "or pass threshold=128 (register --mask-threshold 128) to binarise them"
    )


def _coloured(path: Path, array: np.ndarray, colours: dict, threshold: int | None) -> tuple[np.ndarray, str]:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    palette = np.array([(0, 0, 0), *colours], dtype=np.int32)
    labels = [None, *colours.values()]
    pixels = array.reshape(-1, 3).astype(np.int32)
    if threshold is None:
        index = np.full(len(pixels), -1)
        for i, colour in enumerate(palette):
            index[(pixels == colour).all(axis=1)] = i
        if (index < 0).any():
            strays = pixels[index < 0]
            found = ", ".join(_hex(c) for c in _top_colours(strays.reshape(-1, 1, 3), 5))
            raise MaskError(
                f"mask {path} holds colours outside the colour map and black ({int((index < 0).sum())} pixels: {found}); "
                f"mapped colours: {', '.join(_hex(c) for c in colours)}. Add them to the colour map, re-export the "
                "masks losslessly (PNG), or pass threshold=128 (register --mask-threshold 128) to snap each bright "
                "pixel to the nearest mapped colour"
            )
    else:
        distance = ((pixels[:, None, :] - palette[None, 1:, :]) ** 2).sum(axis=2)
        index = np.where(pixels.max(axis=1) >= threshold, distance.argmin(axis=1) + 1, 0)
    present = {label: 0 for label in LABELS}
    for i in range(1, len(palette)):
        present[labels[i]] += int((index == i).sum())
    classes = [label for label, count in present.items() if count]
    if len(classes) > 1 and threshold is not None and min(present.values()) < 0.02 * sum(present.values()):
        classes = [max(present, key=present.get)]  # lossy edges snapped to the other colour: a few pixels
    if len(classes) > 1:
        shown = ", ".join(f"{label} {present[label]} px" for label in classes)
        raise MaskError(f"mask {path} holds two classes ({shown}); one label per image is supported: split or relabel it")
    mask = (index > 0).reshape(array.shape[:2])
    return mask, (classes[0] if classes else None)


def _top_colours(array: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    colours, counts = np.unique(array.reshape(-1, 3), axis=0, return_counts=True)
    return [tuple(int(v) for v in colours[i]) for i in np.argsort(-counts)[:k]]


def _hex(colour) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in colour)


def mask_to_image(mask: np.ndarray) -> Image.Image:
    """A boolean mask as a mode "L" image, 0 background and 255 polyp (the layout masks are written in)."""
    return Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, "L")


# -- folders of image and mask pairs ----------------------------------------------------------


def scan_mask_pairs(root: Path, colour_map: dict | str | None = None, threshold: int | None = None) -> MaskScan:
    """Find, decode and check the image and mask pairs under ``root``.

    Layouts: ``root/images/...`` mirrored by ``root/masks/...`` (files matched by relative folder
    and stem; the label is an ``AD/`` or ``NonAD/`` folder level directly under ``images/``, or the
    mask colour), or the phantom layout ``root/AD/``, ``root/NonAD/`` with ``root/masks/<label>/``.
    Missing partners (either way), size mismatches, unreadable files, empty or non-binary masks,
    unknown labels and folder/colour label conflicts are reported as problems and skipped.

    Args:
        root: The data folder.
        colour_map, threshold: How to read the masks (see ``load_mask``).

    Returns:
        The usable pairs (one per distinct image content), the problems and the duplicates.

    Raises:
        DatasetError: If ``root`` or its ``masks/`` folder is missing, the colour map is invalid,
            or no pair is usable (the message shows the first problems).
    """
    root = Path(root)
    colours = parse_colour_map(colour_map)
    if not root.is_dir():
        raise DatasetError(f"mask data folder {str(root)!r} does not exist or is not a folder; {_LAYOUT}")
    mask_root = root / "masks"
    if not mask_root.is_dir():
        raise DatasetError(f"mask data folder {str(root)!r} has no masks/ folder; {_LAYOUT}")
    image_root = root / "images" if (root / "images").is_dir() else root
    images = _files_by_key(image_root, skip=("masks",) if image_root == root else ())
    if image_root == root:  # phantom layout: only the label folders hold images
        images = {key: paths for key, paths in images.items() if key[0] in LABELS}
    masks = _files_by_key(mask_root)
    if not images:
        raise DatasetError(f"mask data folder {str(root)!r} holds no image; {_LAYOUT}")
    phantom = _is_phantom(root)
    reading = {"colour_map": {_hex(c): l for c, l in colours.items()} if colours else None, "threshold": threshold}
    pairs, problems, duplicates, first = [], [], [], {}
    for key in sorted(set(images) | set(masks)):
        checked = _check_pair(key, images.get(key, []), masks.get(key, []), image_root, mask_root, colours, threshold)
        if isinstance(checked, Problem):
            logger.warning("skipping %s: %s", checked.path, checked.reason)
            problems.append(checked)
            continue
        checked = MaskPair(**{**checked, "mask_source": "phantom" if phantom else "real", "reading": reading})
        if checked.sha256 in first:
            duplicates.append((checked.image_path, first[checked.sha256]))
            continue
        first[checked.sha256] = checked.image_path
        pairs.append(checked)
    if not pairs:
        shown = "; ".join(f"{p.path.name}: {p.reason}" for p in problems[:3])
        raise DatasetError(f"no usable image and mask pair in {str(root)!r} ({len(problems)} problem(s): {shown}); {_LAYOUT}", problems)
    logger.info("scanned %s: %d pairs, %d problems, %d duplicates", root, len(pairs), len(problems), len(duplicates))
    return MaskScan(pairs, problems, duplicates)


def _files_by_key(folder: Path, skip: tuple[str, ...] = ()) -> dict[tuple[str, str], list[Path]]:
    """Image files under ``folder`` keyed by (relative folder, stem); hidden files and ``skip`` folders ignored."""
    found: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or (relative.parts[0] in skip):
            continue
        if path.is_file() and is_image_file(path):
            found.setdefault((relative.parent.as_posix(), path.stem), []).append(path)
    return found


def _check_pair(key, image_paths, mask_paths, image_root, mask_root, colours, threshold) -> dict | Problem:
    folder, stem = key
    where = f"{folder}/{stem}" if folder != "." else stem
    if not mask_paths:
        return Problem(image_paths[0], f"has no mask: expected {mask_root.name}/{where}.* (any image suffix)")
    if not image_paths:
        return Problem(mask_paths[0], f"has no image: expected {image_root.name}/{where}.* (any image suffix)")
    for paths, kind in ((image_paths, "images"), (mask_paths, "masks")):
        if len(paths) > 1:
            return Problem(paths[0], f"{len(paths)} {kind} share the name {where}: {', '.join(p.name for p in paths)}; keep one")
    image_path, mask_path = image_paths[0], mask_paths[0]
    folder_label = folder.split("/")[0] if folder.split("/")[0] in LABELS else None
    size = decoded_size(image_path)
    if isinstance(size, Problem):
        return size
    width, height = size
    try:
        mask, mask_label = _read_mask(mask_path, colours, threshold)
    except MaskError as err:
        return Problem(mask_path, str(err))
    if mask.shape != (height, width):
        return Problem(image_path, f"image is {width}x{height} but its mask {mask_path.name} is "
                                   f"{mask.shape[1]}x{mask.shape[0]}; a mask must have its image's size")
    if folder_label and mask_label and folder_label != mask_label:
        return Problem(image_path, f"lies in {folder_label}/ but its mask colour says {mask_label}; move it or fix the colour map")
    label = folder_label or mask_label
    if label is None:
        return Problem(image_path, f"has no label: put it in images/AD/ or images/NonAD/, or give a colour map "
                                   f"so the mask colour says the class (valid labels: {', '.join(LABELS)})")
    validate_label(label)
    return {
        "image_path": image_path, "mask_path": mask_path, "label": label, "sha256": sha256_file(image_path),
        "mask_sha256": sha256_file(mask_path), "width": width, "height": height, "mask_label": mask_label,
        "area_fraction": float(mask.mean()),
    }


def _is_phantom(root: Path) -> bool:
    manifest = root / MANIFEST_FILE
    try:
        return manifest.is_file() and json.loads(manifest.read_text()).get("kind") == "phantom"
    except (json.JSONDecodeError, OSError, AttributeError):
        return False
