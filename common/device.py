"""Device choice: explicit, never at import time."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda")


class DeviceUnavailable(ValueError):
    """An unknown device name, or cuda on a machine without a CUDA GPU."""


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda`` into a torch device; ``auto`` picks cuda when one is present.

    Raises:
        DeviceUnavailable: If ``name`` is not one of ``DEVICES``, or is ``cuda`` on a machine without one.
    """
    if name not in DEVICES:
        raise DeviceUnavailable(f"device {name!r} is not supported; choose one of {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def inference_dtype(device: torch.device) -> torch.dtype:
    """fp16 on cuda, fp32 on the CPU (fp16 convolutions on the CPU are slow and imprecise)."""
    return torch.float16 if device.type == "cuda" else torch.float32
