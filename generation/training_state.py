"""A training run's full state, written beside its checkpoints so that ``--resume`` continues the same curve.

``checkpoint-<N>/training_state/`` (and ``autoencoder-<N>/training_state/`` during the autoencoder
stage) holds ``state.pth``, everything a resumed run needs (the trained weights in fp32, the moving
average, the optimisers and learning-rate schedule, the random-number states of torch, CUDA and the
batch generator of every process, the step), and ``state.json``, what a person or ``--resume``
reads first (phase, step, processes, the flags of the run). ``state.json`` is written last: a
folder without it is incomplete and never resumed from.

The weights file is ``.pth``, a suffix checkpoint fingerprints do not read
(``generation.checkpoints.fingerprint``), so a checkpoint's fingerprint is the same with or without
its training state.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from generation.checkpoints import NotACheckpoint
from generation.model import atomic_folder

logger = logging.getLogger(__name__)

STATE_FOLDER = "training_state"
STATE_FILE = "state.pth"
INFO_FILE = "state.json"
PHASES: tuple[str, ...] = ("autoencoder", "model")
"""The order of a run's phases: a state of a later phase is newer than any of an earlier one."""
_RUN_FOLDER = re.compile(r"^(autoencoder|checkpoint|controlnet)-(\d+)$")


class TrainingStateError(NotACheckpoint):
    """``--resume`` names no training state, or one that does not fit this run."""


def write_state(folder: Path, payload: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write ``folder/training_state/`` (replacing an older one); returns it.

    Args:
        folder: The checkpoint (or ``autoencoder-<N>``) folder.
        payload: Tensors and state dicts, saved with ``torch.save``.
        info: JSON-able facts (``phase``, ``step``, ...), written last as ``state.json``.
    """
    out = Path(folder) / STATE_FOLDER
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp:
        tmp.mkdir(parents=True)
        torch.save(payload, tmp / STATE_FILE)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
    return out


def read_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payload and ``state.json`` of a ``training_state/`` folder (see ``find_state``)."""
    info = json.loads((Path(folder) / INFO_FILE).read_text())
    payload = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    return payload, info


def find_state(path: Path) -> Path:
    """The ``training_state/`` folder that ``--resume PATH`` means.

    ``PATH`` is a checkpoint folder (its own state), a ``training_state/`` folder, or a run's
    ``--out`` folder (its newest complete state: the highest step of the latest phase).

    Raises:
        TrainingStateError: If ``PATH`` does not exist or holds no complete training state.
    """
    path = Path(path)
    if not path.is_dir():
        raise TrainingStateError(f"--resume {path}: no such folder; give a checkpoint-<N>/ folder or the run's --out folder")
    for candidate in (path, path / STATE_FOLDER):
        if (candidate / INFO_FILE).is_file():
            return candidate
    found = [(PHASES.index(_phase(child)), step, child / STATE_FOLDER) for child, step in _run_folders(path)
             if (child / STATE_FOLDER / INFO_FILE).is_file()]
    if not found:
        raise TrainingStateError(
            f"--resume {path}: no training state there; expected {path}/{STATE_FOLDER}/{INFO_FILE} or "
            f"{path}/checkpoint-<N>/{STATE_FOLDER}/{INFO_FILE} (a run with --save-state none writes none)")
    return max(found)[2]


def prune_states(out: Path, keep: Path) -> None:
    """Remove every training state in the run folder ``out`` but ``keep`` (``--save-state last``).

    ``autoencoder-<N>/`` folders hold nothing else and go entirely.
    """
    for child, _ in _run_folders(Path(out)):
        state = child / STATE_FOLDER
        if state.resolve() == Path(keep).resolve():
            continue
        if child.name.startswith("autoencoder-"):
            shutil.rmtree(child, ignore_errors=True)
        elif state.is_dir():
            shutil.rmtree(state, ignore_errors=True)


def _run_folders(out: Path) -> list[tuple[Path, int]]:
    if not out.is_dir():
        return []
    return [(child, int(match.group(2))) for child in sorted(out.iterdir())
            if child.is_dir() and (match := _RUN_FOLDER.match(child.name))]


def _phase(folder: Path) -> str:
    return "autoencoder" if folder.name.startswith("autoencoder-") else "model"


# -- what a state holds -----------------------------------------------------------------------------
def module_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``module`` a state keeps, as fp32 CPU copies: the trained ones (all, or a LoRA
    adapter's), or every weight of a frozen module (the autoencoder after its stage, a moving average)."""
    params = _kept(module)
    return {name: p.detach().to("cpu", torch.float32, copy=True) for name, p in params.items()}


def load_module_state(module: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``module_state`` back into ``module``.

    Raises:
        TrainingStateError: If the state's weights are not this module's.
    """
    params = _kept(module)
    if set(params) != set(weights) or any(params[k].shape != weights[k].shape for k in params):
        missing, extra = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
        raise TrainingStateError(
            f"the training state's weights do not fit this model ({len(missing)} missing, {len(extra)} unexpected, "
            "or shapes differ): resume with the same --preset, --image-size, --base and --lora-rank")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name].to(param.device, param.dtype))


def _kept(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    params = dict(module.named_parameters())
    trained = {name: p for name, p in params.items() if p.requires_grad}
    return trained or params


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """This process's random-number states: the batch generator, torch's, CUDA's and Python's."""
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def restore_rng(states: dict[str, Any], generator: torch.Generator) -> None:
    """Put back what ``capture_rng`` took."""
    generator.set_state(states["generator"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    random.setstate(states["python"])
