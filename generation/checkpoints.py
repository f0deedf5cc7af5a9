"""Checkpoint discovery: which folders are diffusers checkpoints, with their step and stage.

Two layouts are recognised:

* a **pipeline folder**: ``model_index.json`` plus component folders (our compact checkpoints,
  a user's fine-tuned Stable Diffusion);
* a **training output** ``checkpoint-<N>/`` holding ``unet/`` (as diffusers' training scripts and
  ``generation.train --base`` write them), loaded on top of a base pipeline.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from generation.model import read_metadata

logger = logging.getLogger(__name__)

_STEP_IN_NAME = re.compile(r"checkpoint-(\d+)$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")
_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BYTES = 4 * 2**20


class CheckpointNotFound(FileNotFoundError):
    """A checkpoint path, or any checkpoint under a folder, does not exist."""


class NotACheckpoint(ValueError):
    """A folder exists but is neither a pipeline folder nor a training output."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One loadable checkpoint.

    Attributes:
        path: The checkpoint folder.
        name: Display name: the folder name, with its run folder when discovered one level down.
        step: Training step (from ``polypturing.json``, else from ``checkpoint-<N>``, else 0).
        stage: 1 (appearance) or 2 (pathology) when recorded, else None.
        kind: ``pipeline`` or ``training-output``.
        base: The base pipeline folder a training output is loaded on top of.
        fingerprint: sha256 over the weight files (see ``fingerprint``).
        metadata: ``polypturing.json`` (empty for folders we did not write).
    """

    path: Path
    name: str
    step: int
    stage: int | None
    kind: str
    fingerprint: str
    base: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_phantom(self) -> bool:
        """True when the checkpoint was trained on procedural phantoms (the embedded demo)."""
        return bool(self.metadata.get("training_data", {}).get("phantom"))

    @property
    def label(self) -> str:
        """A one-line description for pickers: step, stage, name, phantom flag."""
        parts = [f"step {self.step}"]
        if self.stage:
            parts.append(f"stage {self.stage} ({'appearance' if self.stage == 1 else 'pathology'})")
        parts.append(self.name)
        if self.is_phantom:
            parts.append("phantom demo")
        return " · ".join(parts)


def inspect_checkpoint(path: Path, base: Path | None = None) -> CheckpointInfo:
    """Describe one checkpoint folder.

    Args:
        path: A pipeline folder or a training output ``checkpoint-<N>/``.
        base: Base pipeline for a training output; overrides the base recorded in its metadata.

    Raises:
        CheckpointNotFound: If ``path`` does not exist.
        NotACheckpoint: If it is neither layout, or a training output has no base.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFound(f"checkpoint {path} does not exist")
    metadata = _safe_metadata(path)
    step = metadata.get("step", _step_from_name(path))
    stage = metadata.get("stage")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise NotACheckpoint(f"{path}/polypturing.json has step {step!r}; expected a whole number of 0 or more")
    if stage not in (1, 2, None):
        raise NotACheckpoint(f"{path}/polypturing.json has stage {stage!r}; expected 1 (appearance), 2 (pathology) or none")
    if (path / "model_index.json").is_file():
        return CheckpointInfo(path, path.name, step, stage, "pipeline", fingerprint(path), None, metadata)
    if (path / "unet" / "config.json").is_file():
        recorded = metadata.get("base")
        base = Path(base) if base else (Path(recorded) if recorded else None)
        if base is None:
            raise NotACheckpoint(
                f"{path} is a training output (it holds unet/) but no base pipeline was given; "
                "pass --base PATH pointing at the pipeline folder it was trained from"
            )
        return CheckpointInfo(path, path.name, step, stage, "training-output", fingerprint(path), base, metadata)
    raise NotACheckpoint(
        f"{path} is not a diffusers checkpoint: expected {path}/model_index.json (a pipeline folder) "
        f"or {path}/unet/config.json (a training output checkpoint-<N>/ loaded on top of --base)"
    )


def discover_checkpoints(root: Path, base: Path | None = None) -> list[CheckpointInfo]:
    """Every checkpoint at ``root``, directly under it, or in run folders under it, sorted by step.

    ``root/checkpoint-500/`` and ``root/run1/checkpoint-500/`` (a training ``--out`` folder put in
    the checkpoints folder) are both found; the latter is named ``run1/checkpoint-500``.

    Raises:
        CheckpointNotFound: If ``root`` does not exist.
        NotACheckpoint: If ``root`` is a file, or neither it nor any folder under it is a checkpoint.
    """
    root = Path(root)
    if not root.exists():
        raise CheckpointNotFound(f"checkpoint folder {root} does not exist")
    if not root.is_dir():
        raise NotACheckpoint(f"{root} is a file; expected a checkpoint folder or a folder of checkpoints")
    if _looks_like_checkpoint(root):
        return [inspect_checkpoint(root, base)]
    found = []
    for child in _subfolders(root):
        candidates = [child] if _looks_like_checkpoint(child) else [g for g in _subfolders(child) if _looks_like_checkpoint(g)]
        for folder in candidates:
            try:
                info = inspect_checkpoint(folder, base)
            except NotACheckpoint as err:
                logger.warning("skipping %s", err)
                continue
            found.append(info if folder.parent == root else replace(info, name=f"{child.name}/{info.name}"))
    if not found:
        raise NotACheckpoint(
            f"no checkpoint in {root}: expected pipeline folders (with model_index.json) or training "
            "outputs checkpoint-<N>/ holding unet/, directly in it or in run folders one level down"
        )
    return sorted(found, key=lambda info: (info.step, info.name))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def fingerprint(folder: Path) -> str:
    """sha256 over the weight files of ``folder`` (relative path, size and content).

    Files up to 64 MiB are hashed whole; larger ones (a Stable Diffusion UNet) by their size and
    their first and last 4 MiB, which changes whenever fine-tuning touches the weights' layout or
    values at either end, and keeps discovery of a folder of large checkpoints quick.
    """
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(folder).as_posix()}\0{size}\0".encode())
        with file.open("rb") as handle:
            if size <= _FULL_HASH_LIMIT:
                for chunk in iter(lambda: handle.read(2**20), b""):
                    digest.update(chunk)
            else:
                digest.update(handle.read(_SAMPLE_BYTES))
                handle.seek(size - _SAMPLE_BYTES)
                digest.update(handle.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def _looks_like_checkpoint(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file()


def _step_from_name(path: Path) -> int:
    match = _STEP_IN_NAME.search(path.name)
    return int(match.group(1)) if match else 0


def _safe_metadata(path: Path) -> dict[str, Any]:
    try:
        return read_metadata(path)
    except ValueError as err:
        raise NotACheckpoint(f"{path}/polypturing.json is not valid JSON: {err}") from err
