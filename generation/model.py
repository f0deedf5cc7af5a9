"""The compact text-conditioned latent diffusion model: its configuration, parts and folder layout.

A compact checkpoint is a Stable Diffusion pipeline folder (``model_index.json`` naming
``StableDiffusionPipeline``, with ``unet/``, ``vae/`` and ``scheduler/``) plus ``polypturing.json``
(step, stage, text encoder, training data). The MiniLM text encoder is not copied into it; see
``generation.text_encoder``. So the loader that reads a user's fine-tuned Stable Diffusion folder
reads ours too.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from common.files import atomic_path

METADATA_FILE = "polypturing.json"
METADATA_FORMAT = 1


@dataclass(frozen=True)
class CompactModelConfig:
    """Sizes of the compact model. Defaults are the demo model (v3): 128 px images, 32x32x4 latents.

    Why these sizes (measured on phantoms, 2-core CPU; docs/benchmarks.md): the v1 demo (64 px,
    16x16x4 latents) lost the lesion in the autoencoder. v2 (128 px, 16x16x8 latents, 8x
    downsampling) kept it, but its autoencoder alone scored FID 104 against phantoms (2.5x two
    phantom sets' 42): 8x downsampling blurred vessels and highlights, and neither twice the latent
    channels nor decoder fine-tunes of up to 500 steps (pixel, perceptual or adversarial losses)
    changed that. v3 downsamples 4x into 4 channels (twice v2's numbers per image): the same
    autoencoder training scores FID 64.5. Its UNet adds a 32x32 level without attention in front
    of v2's three (v2's UNet itself on 32x32 latents, attending at 32x32, took 3.9x as long); a
    forward pass of a batch of 16 takes 308 ms against v2's 270 ms. The
    autoencoder has no mid-block attention, which cost over a quarter of a training step at 128 px;
    the widths keep four fp16 demo checkpoints under ``assets/``'s 60 MB.
    """

    image_size: int = 128
    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (32, 40, 80, 160)
    unet_plain_levels: int = 1
    """Leading (finest) UNet levels without cross-attention; the coarsest level never has it."""
    attention_heads: int = 4
    text_dim: int = 384
    norm_groups: int = 8
    vae_attention: bool = False

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)

    @classmethod
    def tiny(cls) -> "CompactModelConfig":
        """A model small enough for tests: 16 px images, 8x8 latents."""
        return cls(image_size=16, vae_channels=(4, 8), latent_channels=4, unet_channels=(8, 16), unet_plain_levels=0,
                   attention_heads=2, norm_groups=4)


PRESETS: Mapping[str, CompactModelConfig] = MappingProxyType({
    "tiny": CompactModelConfig.tiny(),
    "demo": CompactModelConfig(),
    # 256 px (512 px with --image-size 512) on one GPU: 32x32 latents (64x64 at 512 px) as Stable Diffusion's
    # 8x autoencoder, attention on every UNet level but the coarsest.
    "base": CompactModelConfig(image_size=256, vae_channels=(64, 128, 256, 256), latent_channels=4,
                               unet_channels=(128, 256, 512, 512), unet_plain_levels=0, attention_heads=8, norm_groups=32,
                               vae_attention=True),
})
"""The model sizes of ``python -m generation.train --preset``: ``demo`` is the embedded demo's (the defaults)."""

PRESET_PARAMETERS: Mapping[str, tuple[int, int]] = MappingProxyType({
    "tiny": (11_219, 81_444),
    "demo": (648_375, 5_323_708),
    "base": (15_481_255, 93_268_228),
})
"""(autoencoder, UNet) parameter counts of each preset, shown by ``--help`` without building the models;
``tests/generation/test_presets.py`` counts the built models and says which numbers to write here."""


def build_vae(config: CompactModelConfig) -> AutoencoderKL:
    """A fresh AutoencoderKL that maps RGB images to ``latent_channels`` x ``latent_size``^2 latents."""
    levels = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=config.vae_channels,
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_groups,
        sample_size=config.image_size,
        mid_block_add_attention=config.vae_attention,
    )


def build_unet(config: CompactModelConfig) -> UNet2DConditionModel:
    """A fresh UNet2DConditionModel with cross-attention on every level but the coarsest and the
    ``unet_plain_levels`` finest.

    Raises:
        ValueError: If no level would have cross-attention (the prompt could not steer the UNet).
    """
    levels = len(config.unet_channels)
    attended = levels - 1 - config.unet_plain_levels
    if attended < 1 or config.unet_plain_levels < 0:
        raise ValueError(f"unet_plain_levels={config.unet_plain_levels}: a UNet of {levels} levels needs 0 to "
                         f"{max(levels - 2, 0)} plain levels, so that at least one level has cross-attention")
    plain = config.unet_plain_levels
    down = ("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * attended + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * attended + ("UpBlock2D",) * plain
    return UNet2DConditionModel(
        sample_size=config.latent_size,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        layers_per_block=1,
        block_out_channels=config.unet_channels,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=config.text_dim,
        attention_head_dim=config.attention_heads,
        norm_num_groups=config.norm_groups,
    )


def build_noise_scheduler() -> DDPMScheduler:
    """The training noise schedule (Stable Diffusion's scaled-linear betas)."""
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        steps_offset=1,
        prediction_type="epsilon",
    )


def write_pipeline_folder(
    out: Path, *, unet: UNet2DConditionModel, vae: AutoencoderKL, scheduler: DDPMScheduler,
    text_encoder_class: str, tokenizer_class: str, metadata: dict[str, Any], dtype: torch.dtype = torch.float32,
) -> None:
    """Write a StableDiffusionPipeline folder without the text encoder, plus its metadata.

    The folder is written through ``atomic_folder``, so a crash leaves no half-written checkpoint
    that discovery would list.
    """
    with atomic_folder(out) as tmp:
        cast_copy(unet, dtype).save_pretrained(tmp / "unet")
        cast_copy(vae, dtype).save_pretrained(tmp / "vae")
        scheduler.save_pretrained(tmp / "scheduler")
        index = _pipeline_index(scheduler, text_encoder_class, tokenizer_class)
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        write_metadata(tmp, metadata)


@contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out`` that replaces ``out`` (and all in it) on a clean exit.

    ``common.files.atomic_path`` for a folder: the temporary name is the same hidden ``.partial``
    one, and on a failure the temporary folder is removed and ``out`` is left as it was.
    """
    out = Path(out)
    with atomic_path(out) as tmp:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run that crashed
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(out, ignore_errors=True)  # a folder cannot be replaced by a rename while it holds files


def _pipeline_index(scheduler: DDPMScheduler, text_encoder_class: str, tokenizer_class: str) -> dict[str, Any]:
    """``model_index.json`` of a StableDiffusionPipeline folder without a text encoder of its own."""
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": _diffusers_version(),
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(scheduler).__name__],
        "text_encoder": ["transformers", text_encoder_class],
        "tokenizer": ["transformers", tokenizer_class],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def cast_copy(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` with its floating-point weights in ``dtype``; the model itself is untouched."""
    clone = copy.deepcopy(model)
    for tensor in list(clone.parameters()) + list(clone.buffers()):
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(dtype)
    return clone


def write_metadata(folder: Path, metadata: dict[str, Any]) -> None:
    """Write ``polypturing.json`` into ``folder``."""
    payload = {"format": METADATA_FORMAT, **metadata}
    (Path(folder) / METADATA_FILE).write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")


def read_metadata(folder: Path) -> dict[str, Any]:
    """``polypturing.json`` of ``folder``, or ``{}`` when the folder has none (e.g. a user's SD folder)."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def config_to_dict(config: CompactModelConfig) -> dict[str, Any]:
    return asdict(config)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to {METADATA_FILE}")


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__

