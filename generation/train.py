"""Train the compact text-to-image model in two stages, or fine-tune a user's Stable Diffusion UNet.

Stage 0 (compact model only) fits the autoencoder. Stage 1 teaches polyp appearance from every
image under one generic prompt; stage 2 continues with pathology-specific prompts. Checkpoints are
written every ``--checkpoint-every`` steps (and at ``--checkpoint-at``), each recording its step
and stage in ``polypturing.json``.

    python -m generation.train --data DIR --out DIR [--stage1-steps N] [--stage2-steps N] ...
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from generation.checkpoints import inspect_checkpoint
from generation.errors import run_cli
from generation.pipelines import load_pipeline
from generation.text_encoder import MAX_LENGTH, PACKAGE, load_minilm

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

from common.device import resolve_device
from generation.datasets import load_training_set
from generation.model import (
    CompactModelConfig,
    build_noise_scheduler,
    build_unet,
    build_vae,
    cast_copy,
    config_to_dict,
    write_metadata,
    write_pipeline_folder,
)
from generation.prompts import load_prompts

logger = logging.getLogger(__name__)


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


class Trainer:
    """Holds the models, data and schedule of one training run."""

    def __init__(self, args):
        self.args = args
        self.device = resolve_device(args.device)
        self.generator = torch.Generator(self.device).manual_seed(args.seed)
        torch.manual_seed(args.seed)
        self.total_steps = args.stage1_steps + args.stage2_steps
        self.save_steps = self._save_steps()
        self.prompts = load_prompts()
        self.embeddings: dict[str, torch.Tensor] = {}

    def run(self) -> int:
        """Train, writing checkpoints; returns 0."""
        started = time.perf_counter()
        self._setup_models()
        self.data = load_training_set(self.args.data, self.image_size)
        logger.info("training on %d images (%s) at %d px", self.data.summary["n_images"], self.data.summary["per_label"], self.image_size)
        if self.args.base is None:
            self._fit_vae()
        self._encode_latents()
        self._train_unet()
        logger.info("done in %.0f s; checkpoints in %s", time.perf_counter() - started, self.args.out)
        return 0

    # -- set-up -------------------------------------------------------------------------------
    def _setup_models(self) -> None:
        from diffusers import DDPMScheduler, StableDiffusionPipeline

        if self.args.base is not None:
            info = inspect_checkpoint(self.args.base)
            pipe = load_pipeline(info, torch.device("cpu")).to(self.device, torch.float32)
            self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
            self.model_config = None
            self.image_size = self.args.image_size or pipe.unet.config.sample_size * pipe.vae_scale_factor
        else:
            self.model_config = CompactModelConfig.tiny() if self.args.tiny else CompactModelConfig()
            if self.args.image_size:
                self.model_config = CompactModelConfig(**{**config_to_dict(self.model_config), "image_size": self.args.image_size})
            encoder, tokenizer = load_minilm()
            self.noise_scheduler = build_noise_scheduler()
            pipe = StableDiffusionPipeline(
                vae=build_vae(self.model_config), text_encoder=encoder, tokenizer=tokenizer,
                unet=build_unet(self.model_config), scheduler=self.noise_scheduler, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False,
            ).to(self.device)
            self.image_size = self.model_config.image_size
        self.pipe = pipe
        pipe.vae.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        self.ema = copy.deepcopy(pipe.unet).requires_grad_(False) if self.args.ema_decay > 0 else None

    def _save_steps(self) -> set[int]:
        every = self.args.checkpoint_every
        planned = {s for s in range(every, self.total_steps + 1, every)} if every else set()
        return {s for s in planned | set(self.args.checkpoint_steps) if 0 < s <= self.total_steps} | {self.total_steps}

    # -- stage 0: autoencoder -----------------------------------------------------------------
    def _fit_vae(self) -> None:
        # Whole images, not crops: GroupNorm and the mid-block attention see whole-image
        # statistics at inference, and crop-trained autoencoders reconstructed far worse (L1 0.086
        # against 0.048 on the phantoms after 400 steps).
        vae = self.pipe.vae.requires_grad_(True).train()
        optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
        for step in range(1, self.args.vae_steps + 1):
            index = torch.randint(0, len(self.data.pixels), (self.args.vae_batch_size,), generator=self.generator, device=self.device)
            loss = vae_step(vae, self.data.pixels[index.cpu()].to(self.device), optimizer)
            if step % self.args.log_every == 0 or step == self.args.vae_steps:
                logger.info("stage 0 (autoencoder) step %d/%d loss %.4f", step, self.args.vae_steps, loss)
        vae.requires_grad_(False).eval()

    @torch.no_grad()
    def _encode_latents(self) -> None:
        """Encode every image once; the UNet stages train on the posterior means."""
        vae = self.pipe.vae
        self.latents = torch.cat([vae.encode(chunk.to(self.device)).latent_dist.mean for chunk in self.data.pixels.split(64)])
        if self.args.base is None:
            # Unit-variance latents, as Stable Diffusion's 0.18215 does for its autoencoder.
            vae.register_to_config(scaling_factor=float(1.0 / self.latents.std()))
        logger.info("latents %s, scaling factor %.4f", tuple(self.latents.shape), vae.config.scaling_factor)

    # -- stages 1 and 2: UNet -----------------------------------------------------------------
    def _train_unet(self) -> None:
        unet = self.pipe.unet.requires_grad_(True).train()
        optimizer = torch.optim.AdamW(unet.parameters(), lr=self.args.lr, weight_decay=1e-2)
        warmup = min(100, self.total_steps // 10 + 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        started, losses = time.perf_counter(), []
        for step in range(1, self.total_steps + 1):
            stage = 1 if step <= self.args.stage1_steps else 2
            latents, embeddings = self._batch(stage)
            losses.append(training_step(unet, self.noise_scheduler, latents, embeddings, optimizer, self.generator))
            schedule.step()
            self._update_ema(step)
            if step % self.args.log_every == 0 or step == self.total_steps:
                rate = (time.perf_counter() - started) / step
                logger.info("stage %d step %d/%d loss %.4f (%.2f s/step)", stage, step, self.total_steps, sum(losses) / len(losses), rate)
                losses.clear()
            if step in self.save_steps:
                self._save(step, stage)

    def _batch(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(self.latents), (self.args.batch_size,), generator=self.generator, device=self.device)
        latents = self.latents[index] * self.pipe.vae.config.scaling_factor
        drop = torch.rand(len(index), generator=self.generator, device=self.device) < self.args.uncond_prob
        prompts = [
            "" if dropped else (self.prompts.generic if stage == 1 else self.data.prompts[i])
            for i, dropped in zip(index.tolist(), drop.tolist())
        ]
        return latents, torch.stack([self._embed(p) for p in prompts])

    @torch.no_grad()
    def _embed(self, prompt: str) -> torch.Tensor:
        """The text encoding of ``prompt``, computed once through the pipeline's own encode_prompt."""
        if prompt not in self.embeddings:
            embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
            self.embeddings[prompt] = embeds[0]
        return self.embeddings[prompt]

    def _update_ema(self, step: int) -> None:
        if self.ema is None:
            return
        decay = min(self.args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for averaged, current in zip(self.ema.parameters(), self.pipe.unet.parameters()):
                averaged.lerp_(current, 1 - decay)

    # -- checkpoints --------------------------------------------------------------------------
    def _save(self, step: int, stage: int) -> None:
        out = Path(self.args.out) / f"checkpoint-{step}"
        unet = self.ema if self.ema is not None else self.pipe.unet
        dtype = torch.float16 if self.args.save_dtype == "fp16" else torch.float32
        metadata = self._metadata(step, stage)
        if self.args.base is None:
            write_pipeline_folder(
                out, unet=unet, vae=self.pipe.vae, scheduler=self.noise_scheduler,
                text_encoder_class=type(self.pipe.text_encoder).__name__,
                tokenizer_class=type(self.pipe.tokenizer).__name__, metadata=metadata, dtype=dtype,
            )
        else:
            tmp = out.with_name(f".{out.name}.partial")
            shutil.rmtree(tmp, ignore_errors=True)
            cast_copy(unet, dtype).save_pretrained(tmp / "unet")
            write_metadata(tmp, metadata)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        logger.info("wrote %s (stage %d)", out, stage)

    def _metadata(self, step: int, stage: int) -> dict:
        book = self.prompts
        return {
            "step": step,
            "stage": stage,
            "model": "compact" if self.args.base is None else "fine-tuned",
            "base": str(Path(self.args.base).resolve()) if self.args.base else None,
            "model_config": config_to_dict(self.model_config) if self.model_config else None,
            "text_encoder": {"package": PACKAGE, "max_length": MAX_LENGTH} if self.args.base is None else None,
            "image_size": self.image_size,
            "training_data": self.data.summary,
            "prompts": {"generic": book.generic, "templates": {k: v["template"] for k, v in book.labels.items()}},
            "schedule": {
                "vae_steps": self.args.vae_steps if self.args.base is None else 0,
                "stage1_steps": self.args.stage1_steps, "stage2_steps": self.args.stage2_steps,
                "batch_size": self.args.batch_size, "lr": self.args.lr, "ema_decay": self.args.ema_decay,
                "uncond_prob": self.args.uncond_prob, "seed": self.args.seed,
            },
            "saved_dtype": self.args.save_dtype,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def main(args: argparse.Namespace) -> int:
    """Run the whole training described by ``args``; see ``parse_args``."""
    return Trainer(args).run()


def cli(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, run, report user errors as ``error: ...`` with exit status 2."""
    return run_cli(parse_args, main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
