"""Train the compact text-to-image model in two stages, or fine-tune a user's Stable Diffusion UNet.

Stage 0 (compact model only) fits the autoencoder. Stage 1 teaches polyp appearance from every
image under one generic prompt; stage 2 continues with pathology-specific prompts. Checkpoints are
written every ``--checkpoint-every`` steps (and at ``--checkpoint-at``), each recording its step
and stage in ``polypturing.json``.

    python -m generation.train --data DIR --out DIR [--stage1-steps N] [--stage2-steps N] ...
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)


@dataclass
class TrainingSet:
    """Training images in memory: pixels in [-1, 1], labels and per-image stage-2 prompts."""

    pixels: torch.Tensor
    labels: list[str]
    prompts: list[str]
    summary: dict


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.train",
        description=(
            "Train the compact text-conditioned latent diffusion model on DIR/AD/* and DIR/NonAD/* images "
            "(or a CSV with file,label) in two stages, writing diffusers checkpoints OUT/checkpoint-<step>/. "
            "With --base, fine-tune that Stable Diffusion pipeline's UNet instead."
        ),
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with AD/ and NonAD/ image folders, or a CSV with file,label")
    parser.add_argument("--out", type=Path, required=True, help="output folder for checkpoint-<step>/ folders")
    parser.add_argument("--base", type=Path, default=None, help="a Stable Diffusion pipeline folder whose UNet to fine-tune (GPU territory)")
    parser.add_argument("--stage1-steps", type=int, default=1000, help="steps of stage 1: generic prompt, all images (default 1000)")
    parser.add_argument("--stage2-steps", type=int, default=3000, help="steps of stage 2: pathology-specific prompts (default 3000)")
    parser.add_argument("--vae-steps", type=int, default=1500, help="autoencoder steps before stage 1, compact model only (default 1500)")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="write a checkpoint every N steps; 0 for none but --checkpoint-at and the last (default 1000)")
    parser.add_argument("--checkpoint-at", type=str, default="", help="extra comma-separated steps to write checkpoints at, e.g. 500,1000,2000")
    parser.add_argument("--batch-size", type=int, default=16, help="UNet batch size (default 16)")
    parser.add_argument("--vae-batch-size", type=int, default=8, help="autoencoder batch size (default 8)")
    parser.add_argument("--lr", type=float, default=2e-4, help="UNet learning rate (default 2e-4)")
    parser.add_argument("--image-size", type=int, default=None, help="training resolution in pixels (default: 64 for the compact model, the base's size with --base)")
    parser.add_argument("--uncond-prob", type=float, default=0.1, help="share of steps trained with an empty prompt, for classifier-free guidance (default 0.1)")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="checkpoints hold an exponential moving average of the UNet weights (default 0.999; 0 to disable)")
    parser.add_argument("--save-dtype", choices=("fp32", "fp16"), default="fp32", help="dtype of saved weights (fp16 halves the size; default fp32)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a tiny model for tests and smoke runs (16 px)")
    parser.add_argument("--log-every", type=int, default=100)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    return args


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("stage1_steps", "stage2_steps", "vae_steps", "checkpoint_every"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.stage1_steps + args.stage2_steps < 1:
        parser.error("--stage1-steps plus --stage2-steps must be at least 1")
    for name in ("batch_size", "vae_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.uncond_prob < 1:
        parser.error(f"--uncond-prob must be in [0, 1), got {args.uncond_prob}")
    if not 0 <= args.ema_decay < 1:
        parser.error(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    try:
        args.checkpoint_steps = sorted({int(s) for s in args.checkpoint_at.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--checkpoint-at must be comma-separated integers, got {args.checkpoint_at!r}")
    if args.image_size is not None and (args.image_size < 8 or args.image_size % 8):
        parser.error(f"--image-size must be a multiple of 8 and at least 8, got {args.image_size}")


def load_training_set(source: Path, image_size: int) -> TrainingSet:
    """Read, centre-crop and resize the labelled images; attach stage-2 prompts.

    Prompts come from ``assets/prompts.json``, filled with each image's attributes when the
    folder's ``PHANTOM.json`` records them, else the label's short prompt.

    Raises:
        generation.datasets.DatasetError: If the source is unusable or holds no image.
    """
    import json

    from PIL import Image

    from generation.datasets import scan_labelled
    from generation.prompts import load_prompts

    scan = scan_labelled(Path(source))
    for problem in scan.problems:
        logger.warning("skipping %s: %s", problem.path, problem.reason)
    manifest_file = Path(source) / "PHANTOM.json" if Path(source).is_dir() else None
    manifest = json.loads(manifest_file.read_text()) if manifest_file and manifest_file.is_file() else {}
    attributes = {(Path(source) / entry["file"]).resolve(): entry for entry in manifest.get("images", [])}
    book = load_prompts()
    pixels, labels, prompts = [], [], []
    for item in scan.files:
        with Image.open(item.path) as image:
            pixels.append(_to_tensor(_square(image.convert("RGB"), image_size)))
        labels.append(item.label)
        prompts.append(book.fill(item.label, attributes.get(item.path.resolve())))
    summary = {
        "source": str(source),
        "n_images": len(labels),
        "per_label": {label: labels.count(label) for label in sorted(set(labels))},
        "phantom": manifest.get("kind") == "phantom",
        "skipped": len(scan.problems),
        "duplicates": len(scan.duplicates),
    }
    return TrainingSet(torch.stack(pixels), labels, prompts, summary)


def _square(image, size: int):
    """Centre-crop to a square (the round endoscopic field sits in the middle), then resize."""
    from PIL import Image

    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def _to_tensor(image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def training_step(unet, noise_scheduler, latents, text_embeddings, optimizer, generator=None) -> float:
    """One denoising step: noise the latents at random timesteps, predict the noise, update the UNet.

    Returns:
        The mean squared error of the noise prediction.
    """
    # 1. Sample noise and a timestep per image.
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    steps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator, device=latents.device)
    # 2. Forward diffusion: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps.
    noisy = noise_scheduler.add_noise(latents, noise, steps)
    # 3. Predict eps from x_t and the prompt, and regress on it.
    prediction = unet(noisy, steps, encoder_hidden_states=text_embeddings).sample
    loss = F.mse_loss(prediction.float(), noise.float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def vae_step(vae, pixels, optimizer, kl_weight: float = 1e-6) -> float:
    """One autoencoder step: reconstruction (L1 + MSE) from the posterior mean, plus a small KL term.

    Decoding the mean rather than a sample: with the small KL weight the posterior variance is
    meaningless, and sampling it (unit variance at the start) blurred short CPU trainings badly.
    """
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.mode()).sample
    loss = F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels) + kl_weight * posterior.kl().mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def main(args: argparse.Namespace) -> int:
    """Run the whole training described by ``args``; see ``parse_args``."""
    from generation.trainer import Trainer

    return Trainer(args).run()


def cli(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, run, report user errors as ``error: ...`` with exit status 2."""
    from generation.errors import run_cli

    return run_cli(parse_args, main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
