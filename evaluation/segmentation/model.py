"""The network of the segmentation test: a small U-Net, its training (Dice + BCE, Adam, flips) and prediction."""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.segmentation.data import SegmentationSet
from evaluation.segmentation.settings import SegmentationSettings

logger = logging.getLogger(__name__)


def _block(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    """(3x3 conv, norm, ReLU) x 2, as in Ronneberger et al. (2015) with normalisation added."""
    def norm_layer():
        return nn.BatchNorm2d(c_out) if norm == "batch" else nn.GroupNorm(min(8, c_out), c_out)

    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), norm_layer(), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), norm_layer(), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net (Ronneberger et al. 2015): encoder, decoder, skip connections, 1-channel logits.

    Each level is a double 3x3 convolution (padded, so output size = input size) with normalisation
    and ReLU; 2x2 max-pooling goes down, a 2x2 stride-2 transposed convolution goes up, and the
    encoder's feature map at that level is concatenated before the decoder's double convolution.
    Channels are ``width * 2**level``. Input sides must be divisible by ``2**depth``.

    Trainable parameters (BatchNorm and GroupNorm alike): width 16, depth 3 (the default) 482,737
    (0.48 M); width 8, depth 2 (the tests) 29,625; width 64, depth 4 (the paper's channels) 31.0 M.

    Args:
        width: Channels at the first level (>= 1; >= 8 for GroupNorm's groups of 8 to divide).
        depth: Number of down-samplings (>= 1).
        norm: ``"batch"`` (BatchNorm) or ``"group"`` (GroupNorm, for very small batches).
        in_channels: Image channels (3 for RGB).
    """

    def __init__(self, width: int = 16, depth: int = 3, norm: str = "batch", in_channels: int = 3):
        super().__init__()
        channels = [width * 2 ** level for level in range(depth + 1)]
        self.encoder = nn.ModuleList([_block(in_channels, channels[0], norm)] +
                                     [_block(channels[i - 1], channels[i], norm) for i in range(1, depth + 1)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(channels[i], channels[i - 1], 2, stride=2)
                                 for i in range(depth, 0, -1)])
        self.decoder = nn.ModuleList([_block(2 * channels[i - 1], channels[i - 1], norm) for i in range(depth, 0, -1)])
        self.head = nn.Conv2d(channels[0], 1, 1)
        for module in self.modules():  # He-normal, as in the paper: PyTorch's default left some seeds stuck
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] -> (N, 1, H, W) logits."""
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice (per image, smoothed by 1), equally weighted."""
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    dice = (2 * (prob * target).sum(1) + 1) / (prob.sum(1) + target.sum(1) + 1)
    return bce + (1 - dice).mean()


def _flip(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal and vertical flips, drawn per image."""
    for dim in (3, 2):
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(dim), x)
        y = torch.where(flip[:, None, None, None], y.flip(dim), y)
    return x, y


def train_unet(train: SegmentationSet, settings: SegmentationSettings = SegmentationSettings(), seed: int = 0,
               device: str | torch.device = "cpu") -> UNet:
    """Train a fresh U-Net on ``train`` with Dice + BCE loss, Adam and random flips.

    Weights, batch order and flips come from ``seed`` alone (torch's global RNG is restored after
    initialisation), so a run on the CPU is reproducible.

    Args:
        train: Training pairs at ``settings.size``.
        settings: Network, step count, batch size and learning rate.
        seed: Seed of weights, batch order and flips.
        device: Where to train, e.g. ``"cpu"`` or ``"cuda"``.

    Returns:
        The trained network in eval mode, on ``device``.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UNet(settings.width, settings.depth, settings.norm).to(device)
    generator = torch.Generator().manual_seed(seed)
    images, masks = _to_tensor(train.images), torch.from_numpy(train.masks).float()[:, None]
    batch = min(settings.batch_size, len(train))
    per_epoch = math.ceil(len(train) / batch)
    steps = settings.epochs * per_epoch if settings.epochs else settings.steps
    optimiser = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    model.train()
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < batch:  # a fresh permutation per epoch; the remainder of the last one is dropped
            order = torch.randperm(len(train), generator=generator)
        index, order = order[:batch], order[batch:]
        x, y = _flip(images[index], masks[index], generator)
        loss = _loss(model(x.to(device)), y.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    logger.info("trained U-Net on %d pairs for %d steps (last loss %.3f)", len(train), steps, loss.item())
    return model.eval()


@torch.inference_mode()
def predict_masks(model: nn.Module, images: np.ndarray, threshold: float = 0.5, batch_size: int = 32,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Boolean masks (N, S, S) where sigmoid(logit) > ``threshold`` for (N, S, S, 3) uint8 images."""
    model.eval()
    out = [torch.sigmoid(model(_to_tensor(images[i:i + batch_size]).to(device)))[:, 0].cpu() > threshold
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()
