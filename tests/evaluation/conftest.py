"""Fixtures for evaluation tests: seeded tiny image sets, a tiny extractor, the real extractors, the served app."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from evaluation.features import FeatureExtractor, get_extractor


def write_image_set(folder: Path, n: int, size: tuple[int, int] = (32, 32), seed: int = 0,
                    low: int = 0, high: int = 256, suffix: str = ".png") -> Path:
    """Write ``n`` seeded random RGB images of ``size`` (W, H) into ``folder`` and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(low, high, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img-{i:03d}{suffix}")
    return folder


def random_images(n: int, size: tuple[int, int] = (32, 32), seed: int = 0, low: int = 0, high: int = 256):
    """``n`` seeded HxWx3 uint8 arrays."""
    rng = np.random.default_rng(seed)
    return [rng.integers(low, high, (size[1], size[0], 3), dtype=np.uint8) for _ in range(n)]


def make_tiny_extractor(seed: int = 0) -> FeatureExtractor:
    """A real ``FeatureExtractor`` around a seeded 2-layer CNN: 16x16 input, 8-d features, no weights file."""
    generator = torch.Generator().manual_seed(seed)
    network = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.AdaptiveAvgPool2d(1))
    with torch.no_grad():
        for param in network.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return FeatureExtractor("tiny", network, 8, (16, 16), (127.5,) * 3, (127.5,) * 3, "bilinear_aa",
                            f"tiny seeded test CNN (seed {seed}), global average pool")


@pytest.fixture
def tiny_extractor() -> FeatureExtractor:
    return make_tiny_extractor()


@pytest.fixture(scope="session")
def inception() -> FeatureExtractor:
    return get_extractor("inception")


@pytest.fixture(scope="session")
def efficientnet() -> FeatureExtractor:
    return get_extractor("efficientnet")
