"""Shared fixtures: tiny labelled image sets, a tiny trained compact model, a tiny random SD pipeline."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from PIL import Image

from generation import train  # noqa: E402  (after the environment above: OpenMP reads it when torch loads)

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLE = REPO.parent / "shared" / "data" / "real-sample"


def write_labelled_folder(root: Path, per_label: int = 4, size: tuple[int, int] = (40, 32), seed: int = 0) -> Path:
    """``root/AD/*.png`` and ``root/NonAD/*.png`` with random pixels (AD redder, so labels differ)."""
    rng = np.random.default_rng(seed)
    for label, tint in (("AD", (60, 0, 0)), ("NonAD", (0, 30, 30))):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            pixels = rng.integers(0, 190, (size[1], size[0], 3)) + np.array(tint)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / label / f"{label}-{i}.png")
    return root


def train_tiny(data: Path, out: Path, *extra: str) -> Path:
    """Run the real trainer on a tiny model: 2 autoencoder steps, 2 steps of each stage."""
    args = train.parse_args([
        "--data", str(data), "--out", str(out), "--tiny", "--vae-steps", "2", "--stage1-steps", "2",
        "--stage2-steps", "2", "--checkpoint-every", "2", "--batch-size", "4", "--device", "cpu", *extra,
    ])
    assert train.main(args) == 0
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return write_labelled_folder(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    """A folder of tiny compact checkpoints: checkpoint-2 (stage 1) and checkpoint-4 (stage 2)."""
    return train_tiny(tiny_data, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion pipeline folder in the standard layout (CLIP text encoder included)."""
    return make_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


def make_tiny_sd(out: Path) -> Path:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    vocab_dir = out / "_vocab"
    vocab_dir.mkdir(parents=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789-,.")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + letters + [f"{c}</w>" for c in letters]
    (vocab_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (vocab_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(vocab_dir / "vocab.json"), str(vocab_dir / "merges.txt"), model_max_length=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokens), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(4, 8), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=4, sample_size=16,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=PNDMScheduler(skip_prk_steps=True), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = out / "tiny-sd"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory):
    """``tiny_family(name)``: the tiny random pipeline folder of a family (``tests.tiny_pipelines.BUILDERS``), built once."""
    from tests.tiny_pipelines import BUILDERS

    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = BUILDERS[name](tmp_path_factory.mktemp(f"tiny-{name}"))
        return built[name]

    return get


@contextmanager
def serve(config) -> Iterator:
    """The whole app for ``config``, queued and launched on a free local port; yields a ``gradio_client.Client``."""
    from gradio_client import Client

    from app import create_app  # the front door, for the tests that serve the whole app over HTTP

    app = create_app(config).queue()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, show_error=True, quiet=True)
    try:
        yield Client(app.local_url, verbose=False)
    finally:
        app.close()
