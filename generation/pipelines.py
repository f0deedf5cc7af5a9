"""The one loading path for every checkpoint: ours and a user's fine-tuned Stable Diffusion.

Both are ``StableDiffusionPipeline`` folders for ``DiffusionPipeline.from_pretrained``. Our compact
checkpoints leave out the MiniLM text encoder (it ships in a package) and say so in
``polypturing.json``; this module passes it in. Training outputs get their UNet swapped into the
base pipeline.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch

from common.device import inference_dtype
from generation.checkpoints import CheckpointInfo
from generation.model import read_metadata
from generation.text_encoder import TextEncoderMissing, load_minilm

logger = logging.getLogger(__name__)


class CheckpointLoadError(RuntimeError):
    """A checkpoint folder was found but could not be loaded (missing or corrupt files)."""


class _ExpectedTypesFilter(logging.Filter):
    """Drops diffusers' warning that a BertModel is not the CLIPTextModel StableDiffusionPipeline names."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Expected types for text_encoder")


def load_pipeline(info: CheckpointInfo, device: torch.device, dtype: torch.dtype | None = None):
    """Load a checkpoint as a diffusers pipeline on ``device`` (fp16 on cuda, fp32 on the CPU).

    Args:
        info: The checkpoint, from discovery.
        device: Where to run it.
        dtype: Overrides the dtype chosen for ``device``.

    Raises:
        TextEncoderMissing: If the folder lists a text encoder that is neither in it nor in a package.
        CheckpointLoadError: If diffusers cannot read the folder.
    """
    from diffusers import DiffusionPipeline, UNet2DConditionModel

    dtype = dtype or inference_dtype(device)
    pipeline_dir = info.base if info.kind == "training-output" else info.path
    extras = _text_encoder_extras(Path(pipeline_dir), dtype)
    utils_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    if not any(isinstance(f, _ExpectedTypesFilter) for f in utils_logger.filters):
        utils_logger.addFilter(_ExpectedTypesFilter())
    try:
        pipe = DiffusionPipeline.from_pretrained(
            pipeline_dir, dtype=dtype, safety_checker=None, requires_safety_checker=False,
            local_files_only=True, **extras,
        )
        if info.kind == "training-output":
            pipe.unet = UNet2DConditionModel.from_pretrained(info.path / "unet", dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointLoadError(f"could not load checkpoint {info.path}: {err}") from err
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _text_encoder_extras(folder: Path, dtype: torch.dtype) -> dict:
    """The text encoder and tokenizer to pass in when the folder lists them but does not hold them."""
    index_file = folder / "model_index.json"
    try:
        index = json.loads(index_file.read_text())
    except FileNotFoundError as err:
        raise CheckpointLoadError(f"{folder} has no model_index.json; it is not a pipeline folder") from err
    except json.JSONDecodeError as err:
        raise CheckpointLoadError(f"{index_file} is corrupt: {err}") from err
    lists_encoder = index.get("text_encoder", [None, None])[0] is not None
    if not lists_encoder or (folder / "text_encoder").is_dir():
        return {}
    spec = read_metadata(folder).get("text_encoder")
    if not spec:
        raise TextEncoderMissing(
            f"{folder} lists a text encoder in model_index.json but has no text_encoder/ folder and no "
            "polypturing.json naming a packaged one; copy the text encoder it was trained with into "
            f"{folder}/text_encoder and {folder}/tokenizer"
        )
    encoder, tokenizer = load_minilm(max_length=int(spec.get("max_length", 48)))
    # Passed-in components are not cast by from_pretrained: match the UNet's dtype here.
    return {"text_encoder": encoder.to(dtype), "tokenizer": tokenizer}


class _Entry:
    """A cache slot: the pipeline (None until loaded) and the lock that guards loading and use."""

    def __init__(self):
        self.pipe = None
        self.lock = threading.Lock()


class PipelineCache:
    """A bounded, thread-safe cache of loaded pipelines, least recently used evicted first.

    Keyed by checkpoint path, base, fingerprint and device, so a checkpoint rewritten on disk
    is loaded again. A pipeline is not safe to call from two threads at once (its scheduler
    holds the timesteps of the call in progress), so ``use`` hands it out under its own lock.
    """

    def __init__(self, device: torch.device, max_items: int = 2):
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.device = device
        self.max_items = max_items
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, info: CheckpointInfo):
        """The loaded pipeline for ``info``, loading it (and evicting the oldest) if needed.

        For inspection only: to run the pipeline, take it with ``use`` so no other thread runs it at once.
        """
        return self._entry(info).pipe

    @contextmanager
    def use(self, info: CheckpointInfo):
        """The loaded pipeline for ``info``, held exclusively by the caller inside the ``with`` block."""
        entry = self._entry(info)
        with entry.lock:
            yield entry.pipe

    def _entry(self, info: CheckpointInfo) -> "_Entry":
        key = (str(info.path), str(info.base), info.fingerprint, str(self.device))
        with self._lock:  # held briefly: loading happens under the entry's own lock
            entry = self._items.get(key) or _Entry()
            self._items[key] = entry
            self._items.move_to_end(key)
        with entry.lock:
            if entry.pipe is None:
                try:
                    entry.pipe = load_pipeline(info, self.device)
                except BaseException:
                    with self._lock:  # a failed load keeps no slot and evicts nothing
                        if self._items.get(key) is entry:
                            del self._items[key]
                    raise
        with self._lock:
            while len(self._items) > self.max_items:
                evicted, _ = self._items.popitem(last=False)
                logger.info("evicted pipeline %s from the cache", evicted[0])
        return entry

    def __len__(self) -> int:
        return len(self._items)
