"""GPU speed settings for a loaded pipeline; on the CPU nothing changes.

On cuda: the family's half precision (chosen in ``generation.pipelines.family_dtype``), PyTorch's
scaled-dot-product attention (diffusers' default processors on torch 2; checked here), channels-last
UNets, VAE slicing (decode a batch one image at a time) and, when an image's decode would not fit
in free memory, VAE tiling; an optional ``torch.compile`` of the denoiser; and a batch size picked
from free GPU memory.
"""

from __future__ import annotations

import logging

import torch

from generation.families import Family, native_size

logger = logging.getLogger(__name__)

CPU_BATCH_SIZE = 8
MAX_AUTO_BATCH = 16
# Rough peak activation bytes per output pixel and image at half precision with SDPA, classifier-free
# guidance included (measured orders of magnitude, not exact: the pick keeps 30 % headroom).
_BYTES_PER_PIXEL = {"sd": 4000, "sdxl": 3000, "sd3": 4000, "flux": 6000, "pixart": 4000, "kandinsky22": 4000}
_TILING_BYTES_PER_PIXEL = 2500  # a full-size VAE decode of one image


def speed_up(pipe, family: Family, device: torch.device, compile_denoiser: bool = False) -> list[str]:
    """Apply the GPU settings to ``pipe`` in place; returns what was done, one phrase each (empty on the CPU)."""
    if device.type != "cuda":
        return []
    done = []
    denoiser = getattr(pipe, family.denoiser)
    processors = getattr(denoiser, "attn_processors", {})
    if all("2_0" in type(p).__name__ or "Flux" in type(p).__name__ for p in processors.values()):
        done.append("attention: scaled-dot-product")
    if family.denoiser == "unet":
        denoiser.to(memory_format=torch.channels_last)
        done.append("channels-last UNet")
    vae = getattr(pipe, "vae", None)
    if vae is not None and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
        done.append("VAE slicing")
        width, height = native_size(pipe, family)
        if hasattr(vae, "enable_tiling") and width * height * _TILING_BYTES_PER_PIXEL > 0.5 * free_memory(device):
            vae.enable_tiling()
            done.append("VAE tiling")
    if compile_denoiser:
        denoiser.compile()
        done.append(f"torch.compile({family.denoiser})")
    logger.info("GPU settings: %s", ", ".join(done))
    return done


def free_memory(device: torch.device) -> int:
    """Free bytes on a cuda device (0 elsewhere)."""
    return int(torch.cuda.mem_get_info(device)[0]) if device.type == "cuda" else 0


def pick_batch_size(pipe, family: Family, device: torch.device, requested: int | None = None) -> int:
    """``requested`` when given; on the CPU 8; on cuda as many images as 70 % of free memory holds (1 to 16)."""
    if requested:
        return requested
    if device.type != "cuda":
        return CPU_BATCH_SIZE
    width, height = native_size(pipe, family)
    per_image = width * height * _BYTES_PER_PIXEL.get(family.name, 4000)
    picked = max(1, min(MAX_AUTO_BATCH, int(0.7 * free_memory(device) // per_image)))
    logger.info("batch size %d picked from %.1f GiB free memory", picked, free_memory(device) / 2**30)
    return picked
