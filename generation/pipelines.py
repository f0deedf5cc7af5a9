"""The one loading path for every checkpoint: ours and a user's model of any supported family.

Pipeline folders of every family load with ``DiffusionPipeline.from_pretrained`` (local files
only). Our compact checkpoints leave out the MiniLM text encoder (it ships in a package) and say so
in ``polypturing.json``; this module passes it in. Training outputs get their UNet (``unet_ema/``
when there is one) swapped into the base pipeline; LoRA adapters are fused into the base at their
scale (``peft``); single files load with ``from_single_file`` and their local ``--config`` folder;
a Kandinsky 2.2 ``prior/`` + ``decoder/`` pair becomes one combined pipeline.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch

from generation.checkpoints import LORA_FILE, CheckpointInfo
from generation.families import Family, pipeline_class
from generation.model import read_metadata
from generation.speed import speed_up
from generation.text_encoder import TextEncoderMissing, load_minilm

logger = logging.getLogger(__name__)


class CheckpointLoadError(RuntimeError):
    """A checkpoint folder was found but could not be loaded (missing or corrupt files)."""


class _ExpectedTypesFilter(logging.Filter):
    """Drops diffusers' warning that a BertModel is not the CLIPTextModel StableDiffusionPipeline names."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Expected types for text_encoder")


def family_dtype(device: torch.device, family: Family) -> torch.dtype:
    """fp32 on the CPU; on cuda the family's half precision (bf16 for FLUX, fp16 otherwise), fp32 where
    the GPU has no bf16."""
    if device.type != "cuda":
        return torch.float32
    dtype = getattr(torch, family.cuda_dtype)
    return dtype if dtype != torch.bfloat16 or torch.cuda.is_bf16_supported() else torch.float32


def load_pipeline(info: CheckpointInfo, device: torch.device, dtype: torch.dtype | None = None,
                  compile_denoiser: bool = False):
    """Load a checkpoint as a diffusers pipeline on ``device`` (the family's half precision on cuda, fp32 on the CPU).

    On cuda the settings of ``generation.speed.speed_up`` are applied; on the CPU nothing else changes.

    Args:
        info: The checkpoint, from discovery.
        device: Where to run it.
        dtype: Overrides the dtype chosen for ``device``.
        compile_denoiser: ``torch.compile`` the UNet or transformer (cuda only; the first call is slow).

    Raises:
        TextEncoderMissing: If the folder lists a text encoder that is neither in it nor in a package.
        CheckpointLoadError: If diffusers cannot read the folder, file or adapter.
    """
    dtype = dtype or family_dtype(device, info.family_spec)
    try:
        if info.layout == "single-file":
            pipe = _from_single_file(info, dtype)
        elif info.layout == "kandinsky-pair":
            pipe = _kandinsky_pair(Path(info.path), dtype)
        else:
            pipe = _from_folder(info, dtype)
    except (TextEncoderMissing, CheckpointLoadError):
        raise
    except (OSError, ValueError, RuntimeError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointLoadError(f"could not load checkpoint {info.path}: {err}") from err
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    speed_up(pipe, info.family_spec, device, compile_denoiser)
    return pipe


def _from_folder(info: CheckpointInfo, dtype: torch.dtype):
    from diffusers import DiffusionPipeline, UNet2DConditionModel

    pipeline_dir = info.base if info.kind == "training-output" else info.path
    extras = _text_encoder_extras(Path(pipeline_dir), dtype)
    if info.family == "sd":
        extras.update(safety_checker=None, requires_safety_checker=False)
    utils_logger = logging.getLogger("diffusers.pipelines.pipeline_utils")
    if not any(isinstance(f, _ExpectedTypesFilter) for f in utils_logger.filters):
        utils_logger.addFilter(_ExpectedTypesFilter())
    pipe = DiffusionPipeline.from_pretrained(pipeline_dir, dtype=dtype, local_files_only=True, **extras)
    if info.layout in ("unet", "unet_ema"):
        pipe.unet = UNet2DConditionModel.from_pretrained(Path(info.path) / info.layout, dtype=dtype)
    elif info.layout == "lora":
        _fuse_lora(pipe, info)
    return pipe


def _fuse_lora(pipe, info: CheckpointInfo) -> None:
    """Fuse the adapter into the base's weights at its scale and drop the adapter layers (no per-step cost)."""
    try:
        import peft  # noqa: F401  (diffusers needs it for LoRA; checked here to say so plainly)
    except ImportError as err:
        raise CheckpointLoadError(f"{info.path}/{LORA_FILE} is a LoRA adapter; loading it needs peft "
                                  "(pip install peft==0.21.2, listed in requirements.txt)") from err
    if hasattr(pipe, "load_lora_weights"):
        pipe.load_lora_weights(str(info.path), weight_name=LORA_FILE, adapter_name="adapter", local_files_only=True)
        _require_adapter(any("adapter" in names for names in pipe.get_list_adapters().values()), info)
        pipe.fuse_lora(lora_scale=info.adapter_scale, adapter_names=["adapter"])
        pipe.unload_lora_weights()
        return
    # Kandinsky 2.2 has no pipeline loader: its decoder UNet takes the adapter (saved with or without "unet.").
    from safetensors import safe_open

    with safe_open(str(Path(info.path) / LORA_FILE), "pt") as handle:
        prefix = "unet" if any(key.startswith("unet.") for key in handle.keys()) else None
    pipe.unet.load_lora_adapter(str(info.path), weight_name=LORA_FILE, adapter_name="adapter", prefix=prefix,
                                local_files_only=True)
    _require_adapter("adapter" in getattr(pipe.unet, "peft_config", {}), info)
    pipe.unet.fuse_lora(lora_scale=info.adapter_scale, adapter_names=["adapter"])
    pipe.unet.unload_lora()


def _require_adapter(loaded: bool, info: CheckpointInfo) -> None:
    # diffusers skips keys that match nothing: an adapter for another model would load as no change.
    if not loaded:
        raise CheckpointLoadError(
            f"{info.path}/{LORA_FILE} matched no layer of its base {info.base} ({info.family_spec.title}): "
            "it was trained on another model; pass --base DIR, the pipeline it was trained on")


def _from_single_file(info: CheckpointInfo, dtype: torch.dtype):
    import diffusers
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    cls = getattr(diffusers, pipeline_class(info.config))
    try:
        # config= a local folder: without it diffusers guesses a hub repository (diffusers #8752, #7209).
        return cls.from_single_file(str(info.path), config=str(info.config), local_files_only=True, dtype=dtype)
    except SingleFileComponentError as err:
        raise CheckpointLoadError(f"could not load single file {info.path} with --config {info.config}: {err.message}"
                                  " (a component missing from the file must be in --config with its weights)") from err


def _kandinsky_pair(folder: Path, dtype: torch.dtype):
    from diffusers import KandinskyV22CombinedPipeline, KandinskyV22Pipeline, KandinskyV22PriorPipeline

    prior = KandinskyV22PriorPipeline.from_pretrained(folder / "prior", dtype=dtype, local_files_only=True)
    decoder = KandinskyV22Pipeline.from_pretrained(folder / "decoder", dtype=dtype, local_files_only=True)
    return KandinskyV22CombinedPipeline(
        **decoder.components, **{f"prior_{name}": part for name, part in prior.components.items()},
    )


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
