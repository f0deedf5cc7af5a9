"""Checkpoint discovery: which folders are diffusers checkpoints, with their step and stage.

These layouts are recognised, each with its family (``generation.families``):

* a **pipeline folder**: ``model_index.json`` plus component folders, of any supported family
  (our compact checkpoints, a user's SD, SDXL, SD3, FLUX, PixArt or Kandinsky 2.2 pipeline), or a
  Kandinsky 2.2 folder holding ``prior/`` and ``decoder/`` pipelines;
* a **training output** ``checkpoint-<N>/`` holding ``unet/`` and/or ``unet_ema/`` (as diffusers'
  training scripts and ``generation.train --base`` write them), loaded on top of a base pipeline;
  ``unet_ema/`` is preferred when both are there;
* a **LoRA adapter**: a folder (a ``checkpoint-<N>/`` too) holding ``pytorch_lora_weights.safetensors``,
  applied to a base pipeline from ``--base`` or named in the adapter's metadata;
* a **single file** ``.safetensors`` / ``.ckpt`` (A1111, kohya) with a local config folder
  (``--config DIR``: a diffusers pipeline folder of the same family), never looked up on the hub.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from generation.families import FAMILIES, Family, UnknownFamily, detect_family, is_kandinsky_pair
from generation.model import read_metadata

logger = logging.getLogger(__name__)

_STEP_IN_NAME = re.compile(r"checkpoint-(\d+)$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt")
_FULL_HASH_LIMIT = 64 * 2**20
_SAMPLE_BYTES = 4 * 2**20
LORA_FILE = "pytorch_lora_weights.safetensors"
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


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
        kind: ``pipeline`` (complete by itself: a pipeline folder, a single file) or
            ``training-output`` (loaded on top of ``base``: a UNet or a LoRA adapter).
        base: The base pipeline folder a training output or adapter is loaded on top of.
        fingerprint: sha256 over the weight files (see ``fingerprint``); for an adapter, over the
            adapter's, the base's and the scale, since all three decide the pixels.
        metadata: ``polypturing.json`` (empty for folders we did not write).
        family: The family name (a key of ``generation.families.FAMILIES``).
        layout: ``pipeline``, ``kandinsky-pair``, ``unet``, ``unet_ema``, ``lora`` or ``single-file``.
        config: For a single file, the local diffusers folder its configs and tokenizers come from.
        adapter_scale: For a LoRA, the scale it is fused with.
        base_fingerprint: Fingerprint of ``base`` (training outputs and adapters).
        adapter_fingerprint: Fingerprint of the adapter's weights alone.
    """

    path: Path
    name: str
    step: int
    stage: int | None
    kind: str
    fingerprint: str
    base: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    family: str = "sd"
    layout: str = "pipeline"
    config: Path | None = None
    adapter_scale: float | None = None
    base_fingerprint: str | None = None
    adapter_fingerprint: str | None = None

    @property
    def family_spec(self) -> Family:
        return FAMILIES[self.family]

    @property
    def loading(self) -> dict[str, Any]:
        """How this checkpoint is loaded, for provenance: family, layout and, where they apply, base,
        config, adapter fingerprint and scale."""
        found = {"family": self.family, "layout": self.layout}
        for key in ("base", "config"):
            if getattr(self, key) is not None:
                found[key] = str(getattr(self, key))
        for key in ("base_fingerprint", "adapter_fingerprint", "adapter_scale"):
            if getattr(self, key) is not None:
                found[key] = getattr(self, key)
        return found

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
        if self.family != "sd":
            parts.append(self.family_spec.title)
        if self.layout == "unet_ema":
            parts.append("EMA weights (unet_ema/)")
        elif self.layout == "lora":
            parts.append(f"LoRA ×{self.adapter_scale:g} on {Path(self.base).name}")
        elif self.layout == "single-file":
            parts.append(f"single file, config {Path(self.config).name}")
        if self.is_phantom:
            parts.append("phantom demo")
        return " · ".join(parts)


def inspect_checkpoint(path: Path, base: Path | None = None, config: Path | None = None,
                       adapter_scale: float = 1.0) -> CheckpointInfo:
    """Describe one checkpoint: a pipeline folder, a training output, a LoRA adapter or a single file.

    Args:
        path: The checkpoint folder, or a single ``.safetensors`` / ``.ckpt`` file.
        base: Base pipeline for a training output or a LoRA; overrides the base recorded in its metadata.
        config: For a single file, the local diffusers pipeline folder of its family.
        adapter_scale: For a LoRA, the scale to fuse it with (0 to 2).

    Raises:
        CheckpointNotFound: If ``path`` does not exist.
        NotACheckpoint: If it is none of the layouts, a base or config is missing, or its family
            is not supported.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFound(f"checkpoint {path} does not exist")
    if path.is_file():
        return _single_file(path, config)
    metadata = _safe_metadata(path)
    step = metadata.get("step", _step_from_name(path))
    stage = metadata.get("stage")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise NotACheckpoint(f"{path}/polypturing.json has step {step!r}; expected a whole number of 0 or more")
    if stage not in (1, 2, None):
        raise NotACheckpoint(f"{path}/polypturing.json has stage {stage!r}; expected 1 (appearance), 2 (pathology) or none")
    info = CheckpointInfo(path, path.name, step, stage, "pipeline", "", None, metadata)
    if (path / "model_index.json").is_file() or is_kandinsky_pair(path):
        layout = "pipeline" if (path / "model_index.json").is_file() else "kandinsky-pair"
        return replace(info, fingerprint=fingerprint(path), family=_family(path).name, layout=layout)
    if (path / LORA_FILE).is_file():
        return _lora(info, base, adapter_scale)
    weights = next((w for w in ("unet_ema", "unet") if (path / w / "config.json").is_file()), None)
    if weights:
        base = _base_of(path, base, metadata, "a training output (it holds unet/)")
        if weights == "unet_ema" and (path / "unet" / "config.json").is_file():
            logger.info("%s holds unet/ and unet_ema/: using the EMA weights (unet_ema/)", path)
        return replace(info, kind="training-output", fingerprint=fingerprint(path), base=base, layout=weights,
                       family=_family(base).name, base_fingerprint=fingerprint(base))
    raise NotACheckpoint(
        f"{path} is not a diffusers checkpoint: expected {path}/model_index.json (a pipeline folder) "
        f"or {path}/unet/config.json (a training output checkpoint-<N>/ loaded on top of --base), "
        f"or {path}/{LORA_FILE} (a LoRA adapter on top of --base)"
    )


def _family(folder: Path) -> Family:
    try:
        return detect_family(folder)
    except UnknownFamily as err:
        raise NotACheckpoint(str(err)) from err


def _base_of(path: Path, base: Path | None, metadata: dict, what: str, hint: str = "") -> Path:
    """The base pipeline of a training output or adapter: ``base``, else the one its metadata records."""
    recorded = metadata.get("base") or _recorded_base(path)
    chosen = Path(base) if base else (Path(recorded) if recorded else None)
    if chosen is None:
        raise NotACheckpoint(
            f"{path} is {what} but no base pipeline was given{hint}; "
            "pass --base PATH pointing at the pipeline folder it was trained from"
        )
    if not (chosen / "model_index.json").is_file():
        source = "--base" if base else "its metadata"
        raise NotACheckpoint(
            f"{path} is {what}; the base {source} names, {chosen}, is not a local pipeline folder "
            f"(no {chosen}/model_index.json; nothing is downloaded): pass --base DIR, the pipeline it was trained from"
        )
    return chosen


def _lora(info: CheckpointInfo, base: Path | None, scale: float) -> CheckpointInfo:
    weights = info.path / LORA_FILE
    guessed = _guess_lora_family(weights)
    hint = f" ({guessed} LoRA needs its base: --base DIR)" if guessed else ""
    base = _base_of(info.path, base, info.metadata, f"a LoRA adapter ({LORA_FILE})", hint)
    family = _family(base)
    if not family.lora:
        raise NotACheckpoint(f"{weights} is a LoRA adapter, but its base {base} is {family.title}, which diffusers "
                             "loads no LoRA into; use a base of SD, SDXL, SD3, FLUX or Kandinsky 2.2")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 <= scale <= 2.0:
        raise NotACheckpoint(f"LoRA scale must be between 0 and 2, got {scale!r}")
    own, base_fp = fingerprint(info.path, only=(LORA_FILE,)), fingerprint(base)
    combined = hashlib.sha256(f"lora:{own}\nbase:{base_fp}\nscale:{float(scale)!r}".encode()).hexdigest()
    return replace(info, kind="training-output", fingerprint=combined, base=base, family=family.name, layout="lora",
                   adapter_scale=float(scale), base_fingerprint=base_fp, adapter_fingerprint=own)


def _single_file(path: Path, config: Path | None) -> CheckpointInfo:
    if path.suffix not in SINGLE_FILE_SUFFIXES:
        raise NotACheckpoint(f"{path} is a file but not a single-file checkpoint; expected "
                             f"{' or '.join(SINGLE_FILE_SUFFIXES)}, or a checkpoint folder")
    if config is None:
        raise NotACheckpoint(
            f"{path} is a single-file checkpoint; offline it needs its configs and tokenizers: pass --config DIR, "
            "a local diffusers pipeline folder of the same family (model_index.json, each component's config, "
            "the tokenizer files); it is never looked up on the hub"
        )
    config = Path(config)
    missing = missing_config_parts(config)
    if missing:
        raise NotACheckpoint(f"--config {config} cannot configure {path.name}: it lacks {', '.join(missing)}; "
                             "give the diffusers pipeline folder of the model's family (save_pretrained writes one)")
    family = _family(config)
    step = _step_from_name(path.with_suffix(""))
    return CheckpointInfo(path, path.name, step, None, "pipeline", fingerprint(path.parent, only=(path.name,)),
                          None, {}, family=family.name, layout="single-file", config=config)


def missing_config_parts(config: Path) -> list[str]:
    """What a single file's ``--config`` folder lacks: model_index.json, component configs, tokenizer files."""
    index_file = Path(config) / "model_index.json"
    if not index_file.is_file():
        return [str(index_file)]
    try:
        index = json.loads(index_file.read_text())
    except json.JSONDecodeError:
        return [f"{index_file} (not valid JSON)"]
    missing = []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[-1] is None:
            continue
        folder = Path(config) / name
        wanted = ("tokenizer_config.json",) if "tokenizer" in name else (
            ("scheduler_config.json",) if "scheduler" in name else ("config.json", "preprocessor_config.json"))
        if not any((folder / file).is_file() for file in wanted):
            missing.append(f"{folder}/{wanted[0]}")
    return missing


def _recorded_base(path: Path) -> str | None:
    """A base recorded by the trainer: the LoRA file's safetensors metadata or the README's ``base_model:``."""
    weights = path / LORA_FILE
    if weights.is_file():
        try:
            header_size = int.from_bytes(weights.open("rb").read(8), "little")
            with weights.open("rb") as handle:
                handle.seek(8)
                header = json.loads(handle.read(min(header_size, 2**24)))
            recorded = header.get("__metadata__", {})
            for key in ("base_model", "base_model_name_or_path", "ss_sd_model_name"):
                if recorded.get(key):
                    return recorded[key]
        except (OSError, ValueError):
            pass
    readme = path / "README.md"
    if readme.is_file():
        found = re.search(r"^base_model:\s*(\S+)\s*$", readme.read_text(errors="replace"), re.MULTILINE)
        return found.group(1).strip("'\"") if found else None
    return None


def _guess_lora_family(weights: Path) -> str:
    """FLUX, SD3 or SD/SDXL from an adapter's parameter names (for error messages only)."""
    try:
        from safetensors import safe_open

        with safe_open(str(weights), "pt") as handle:
            keys = list(handle.keys())
    except (OSError, ValueError, RuntimeError):
        return ""
    if any("single_transformer_blocks" in k for k in keys):
        return "FLUX"
    if any(k.startswith("transformer.") for k in keys):
        return "SD3"
    return "SD/SDXL" if any(k.startswith(("unet.", "lora_unet_")) for k in keys) else ""


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
            f"no checkpoint in {root}: expected pipeline folders (with model_index.json), training "
            f"outputs checkpoint-<N>/ holding unet/, or LoRA folders holding {LORA_FILE}, directly in it "
            "or in run folders one level down"
        )
    return sorted(found, key=lambda info: (info.step, info.name))


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


_TRAINING_STATE = "training_state"
"""The folder ``generation.training_state`` writes into a checkpoint (see its ``STATE_FOLDER``)."""


def fingerprint(folder: Path, only: tuple[str, ...] | None = None) -> str:
    """sha256 over the weight files of ``folder`` (relative path, size and content).

    Files up to 64 MiB are hashed whole; larger ones (a Stable Diffusion UNet) by their size and
    their first and last 4 MiB, which changes whenever fine-tuning touches the weights' layout or
    values at either end, and keeps discovery of a folder of large checkpoints quick. ``only`` limits
    it to those file names directly in ``folder`` (a LoRA beside a training run's optimizer state).
    """
    digest = hashlib.sha256()
    files = [Path(folder) / name for name in only] if only else Path(folder).rglob("*")
    weights = (p for p in files if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
               and _TRAINING_STATE not in p.relative_to(folder).parts)  # a resumable run's state is not the model
    for file in sorted(weights):
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
    markers = ("model_index.json", "unet/config.json", "unet_ema/config.json", LORA_FILE)
    return any((path / marker).is_file() for marker in markers) or is_kandinsky_pair(path)


def _step_from_name(path: Path) -> int:
    match = _STEP_IN_NAME.search(path.name)
    return int(match.group(1)) if match else 0


def _safe_metadata(path: Path) -> dict[str, Any]:
    try:
        return read_metadata(path)
    except ValueError as err:
        raise NotACheckpoint(f"{path}/polypturing.json is not valid JSON: {err}") from err
