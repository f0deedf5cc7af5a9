"""The mask-conditioned model: a diffusers ControlNet on top of a text-to-image checkpoint.

A ControlNet (Zhang et al. 2023) is a trainable copy of the UNet's encoder whose zero-initialised
outputs are added to the frozen UNet's skip connections; it learns to follow a conditioning image,
here the polyp mask (RGB, 0 background and 1 polyp, at the image size). It is the standard way to
condition Stable Diffusion on a segmentation map, so one folder layout and one loading path serve
our ControlNet on the compact model and a user's ControlNet on their Stable Diffusion.

A ControlNet folder is what ``ControlNetModel.save_pretrained`` writes (``config.json`` and the
weights), plus ``polypturing.json`` naming the base checkpoint it was trained on, its fingerprint,
the step and the training data. A user's ControlNet without it needs the base given explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from common.device import inference_dtype
from generation.checkpoints import CheckpointInfo, CheckpointNotFound, NotACheckpoint, fingerprint, inspect_checkpoint
from generation.families import FAMILIES
from generation.model import atomic_folder, cast_copy, read_metadata, write_metadata
from generation.pipelines import CheckpointLoadError, load_pipeline

logger = logging.getLogger(__name__)

KIND = "controlnet"
"""``polypturing.json`` ``model`` value of a ControlNet folder."""
CONDITIONING = "polyp mask: RGB image at the output size, 0 background, 1 (white) polyp"


@dataclass(frozen=True)
class ControlNetInfo:
    """One loadable ControlNet and the base checkpoint it steers.

    Attributes:
        path: The ControlNet folder.
        name: Display name (the folder name).
        step: Training step (``polypturing.json``, else ``controlnet-<N>``, else 0).
        base: The base checkpoint, as discovery describes it.
        fingerprint: sha256 over the ControlNet's and the base's weight fingerprints: the weights
            that made an image, together.
        controlnet_fingerprint: Fingerprint of the ControlNet folder alone.
        metadata: ``polypturing.json`` (empty for a user's ControlNet).
    """

    path: Path
    name: str
    step: int
    base: CheckpointInfo
    fingerprint: str
    controlnet_fingerprint: str
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def image_size(self) -> int:
        """Side in pixels of the images (and masks) it was trained at."""
        recorded = self.metadata.get("image_size") or self.base.metadata.get("image_size")
        return int(recorded) if recorded else 512


def conditioning_channels(vae_scale_factor: int) -> tuple[int, ...]:
    """Widths of the ControlNet's mask encoder: one stride-2 level per factor 2 of the autoencoder.

    The encoder must bring the mask from pixels to the latent size: Stable Diffusion's factor 8
    gives diffusers' default (16, 32, 96, 256); the compact model's factor 4 gives (16, 32, 96).

    Raises:
        ValueError: If the factor is not a power of two between 1 and 8.
    """
    levels = math.log2(vae_scale_factor) if vae_scale_factor > 0 else -1
    if not levels.is_integer() or not 0 <= levels <= 3:
        raise ValueError(f"vae_scale_factor must be 1, 2, 4 or 8, got {vae_scale_factor!r}")
    return (16, 32, 96, 256)[: int(levels) + 1]


def build_controlnet(unet, vae_scale_factor: int):
    """A ControlNet initialised from ``unet``'s encoder (its weights copied), for RGB mask images.

    Args:
        unet: The base checkpoint's ``UNet2DConditionModel``.
        vae_scale_factor: Pixels per latent of the base's autoencoder.
    """
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=conditioning_channels(vae_scale_factor), conditioning_channels=3,
    )


def mask_condition(mask: np.ndarray, size: int) -> Image.Image:
    """The conditioning image of a mask: RGB, white polyp on black, ``size`` x ``size``.

    Raises:
        ValueError: If the mask is not square at ``size`` (frame it with ``mask_shapes.square_mask`` first).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (size, size):
        raise ValueError(f"mask must be {size}x{size} (the model's image size), got {mask.shape[1]}x{mask.shape[0]}")
    return Image.fromarray(mask.astype(np.uint8) * 255, "L").convert("RGB")


def write_controlnet_folder(out: Path, controlnet, metadata: dict[str, Any], dtype: torch.dtype = torch.float32) -> None:
    """Write ``controlnet`` and its ``polypturing.json`` to ``out``, atomically (``generation.model.atomic_folder``)."""
    with atomic_folder(out) as tmp:
        cast_copy(controlnet, dtype).save_pretrained(tmp)
        write_metadata(tmp, {"model": KIND, **metadata})


def inspect_controlnet(path: Path, base: Path | None = None, base_of_base: Path | None = None) -> ControlNetInfo:
    """Describe one ControlNet folder and its base checkpoint.

    Args:
        path: A folder with a ControlNetModel ``config.json`` (ours or a user's).
        base: The base checkpoint; overrides the one recorded in ``polypturing.json``.
        base_of_base: For a base that is itself a training output ``checkpoint-<N>/``, its base pipeline.

    Raises:
        CheckpointNotFound: If ``path`` or the base does not exist.
        NotACheckpoint: If ``path`` is not a ControlNet folder, no base is known, or the base is
            not a checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFound(f"ControlNet {path} does not exist")
    _controlnet_config(path)
    try:
        metadata = read_metadata(path)
    except ValueError as err:
        raise NotACheckpoint(f"{path}/polypturing.json is not valid JSON: {err}") from err
    recorded = metadata.get("base")
    base_path = Path(base) if base else (Path(recorded) if recorded else None)
    if base_path is None:
        raise NotACheckpoint(f"{path} is a ControlNet but names no base checkpoint; pass --base PATH pointing at "
                             "the Stable Diffusion pipeline (or compact checkpoint) it was trained on")
    base_info = inspect_checkpoint(base_path, base_of_base)
    require_controlnet_family(base_info, f"ControlNet {path}")
    recorded_fp = metadata.get("base_fingerprint")
    if recorded_fp and base is None and recorded_fp != base_info.fingerprint:
        logger.warning("ControlNet %s was trained on base weights %s, but %s now holds %s",
                       path, recorded_fp[:12], base_path, base_info.fingerprint[:12])
    own = fingerprint(path)
    combined = hashlib.sha256(f"controlnet:{own}\nbase:{base_info.fingerprint}".encode()).hexdigest()
    step = metadata.get("step", _step_from_name(path))
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise NotACheckpoint(f"{path}/polypturing.json has step {step!r}; expected a whole number of 0 or more")
    return ControlNetInfo(path, path.name, step, base_info, combined, own, metadata)


CONTROLNET_FAMILIES = ("sd", "sdxl")
"""Families a mask-conditioned ControlNet pipeline exists for (diffusers' SD and SDXL ControlNet pipelines)."""


def require_controlnet_family(base: CheckpointInfo, what: str, families: tuple[str, ...] = CONTROLNET_FAMILIES) -> None:
    """Refuse a base whose family has no mask-conditioned ControlNet here.

    Raises:
        NotACheckpoint: Naming the base, its family and the families that have one.
    """
    if base.family not in families:
        titles = " and ".join(FAMILIES[name].title for name in families)
        raise NotACheckpoint(f"{what}: mask-conditioned ControlNets exist for {titles} bases; {base.path} is "
                             f"{base.family_spec.title}, which has none here. Generate its images without masks.")


def discover_controlnets(roots: Sequence[Path], base_of_base: Path | None = None) -> list[ControlNetInfo]:
    """Every ControlNet folder at, directly under, or two levels under the existing ``roots``, by step.

    Folders that are not ControlNets are passed over; a ControlNet whose base cannot be found is
    skipped with a warning.
    """
    found = []
    for root in (Path(r) for r in roots):
        if not root.is_dir():
            continue
        candidates = [root, *root.iterdir(), *(g for c in root.iterdir() if c.is_dir() for g in c.iterdir())]
        for folder in candidates:
            if folder.is_dir() and not folder.name.startswith(".") and _is_controlnet(folder):
                try:
                    found.append(inspect_controlnet(folder, base_of_base=base_of_base))
                except (NotACheckpoint, CheckpointNotFound) as err:
                    logger.warning("skipping ControlNet %s: %s", folder, err)
    return sorted(found, key=lambda info: (info.step, str(info.path)))


def _is_controlnet(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("_class_name") == "ControlNetModel"
    except (OSError, ValueError, AttributeError):
        return False


def load_controlnet_pipeline(info: ControlNetInfo, device: torch.device, base_pipe=None, dtype: torch.dtype | None = None):
    """A ControlNet pipeline (SD or SDXL, after the base's family) of the base checkpoint's components and the ControlNet.

    Args:
        info: From ``inspect_controlnet``.
        device: Where to run it.
        base_pipe: The base checkpoint's loaded pipeline, to share (e.g. from the app's cache);
            loaded with ``generation.pipelines.load_pipeline`` when None. Its components are
            shared, not copied; the new pipeline gets its own scheduler.
        dtype: Overrides the dtype chosen for ``device`` (fp16 on cuda, fp32 on the CPU).

    Raises:
        CheckpointLoadError: If the ControlNet cannot be read or does not fit the base UNet.
        TextEncoderMissing, CheckpointLoadError: From loading the base.
    """
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline


    dtype = dtype or inference_dtype(device)
    base_pipe = base_pipe if base_pipe is not None else load_pipeline(info.base, device, dtype)
    try:
        controlnet = ControlNetModel.from_pretrained(info.path, dtype=dtype)
    except (OSError, ValueError, RuntimeError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointLoadError(f"could not load ControlNet {info.path}: {err}") from err
    _check_fits(info, controlnet.config, base_pipe.unet.config)
    scheduler = type(base_pipe.scheduler).from_config(base_pipe.scheduler.config)
    if info.base.family == "sdxl":
        pipe = StableDiffusionXLControlNetPipeline(
            vae=base_pipe.vae, text_encoder=base_pipe.text_encoder, text_encoder_2=base_pipe.text_encoder_2,
            tokenizer=base_pipe.tokenizer, tokenizer_2=base_pipe.tokenizer_2, unet=base_pipe.unet,
            controlnet=controlnet.to(device), scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionControlNetPipeline(
            vae=base_pipe.vae, text_encoder=base_pipe.text_encoder, tokenizer=base_pipe.tokenizer, unet=base_pipe.unet,
            controlnet=controlnet.to(device), scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _check_fits(info: ControlNetInfo, controlnet_config, unet_config) -> None:
    for key in ("block_out_channels", "cross_attention_dim", "in_channels", "layers_per_block"):
        ours, theirs = controlnet_config.get(key), unet_config.get(key)
        if ours is not None and theirs is not None and list(np.atleast_1d(ours)) != list(np.atleast_1d(theirs)):
            raise CheckpointLoadError(
                f"ControlNet {info.path} does not fit base {info.base.path}: its {key} is {ours} but the base UNet's is "
                f"{theirs}; use the base it was trained on ({info.metadata.get('base') or 'not recorded'})"
            )


def _controlnet_config(path: Path) -> dict:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise NotACheckpoint(f"{path} is not a ControlNet folder: expected {config_file} (a ControlNetModel config) "
                             "and its weights, as ControlNetModel.save_pretrained writes them")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise NotACheckpoint(f"{config_file} is not valid JSON: {err}") from err
    if config.get("_class_name") != "ControlNetModel":
        raise NotACheckpoint(f"{config_file} describes a {config.get('_class_name')!r}, not a ControlNetModel")
    return config


def _step_from_name(path: Path) -> int:
    digits = path.name.rsplit("-", 1)[-1]
    return int(digits) if path.name.startswith("controlnet-") and digits.isdigit() else 0


def data_digest(sha256s: Sequence[str]) -> str:
    """sha256 of the sorted image sha256s, one a line: names a training set in a few characters."""
    return hashlib.sha256("\n".join(sorted(sha256s)).encode()).hexdigest()
