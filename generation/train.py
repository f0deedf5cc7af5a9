"""Train the compact text-to-image model in two stages, or fine-tune a user's Stable Diffusion UNet.

Stage 0 (compact model only) fits the autoencoder. Stage 1 teaches polyp appearance from every
image under one generic prompt; stage 2 continues with pathology-specific prompts. Checkpoints are
written every ``--checkpoint-every`` steps (and at ``--checkpoint-at``), each recording its step
and stage in ``polypturing.json``. The loop, seeding and EMA are ``generation.trainer``'s.

    python -m generation.train --data DIR --out DIR [--stage1-steps N] [--stage2-steps N] ...
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    # Only the command line sets this, before torch is imported: OpenMP reads its wait policy when
    # torch loads, and passive waiting makes training 3-7x faster on small CPUs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from generation.checkpoints import inspect_checkpoint  # noqa: E402
from generation.datasets import load_training_set  # noqa: E402
from generation.errors import run_cli  # noqa: E402
from generation.model import (  # noqa: E402
    CompactModelConfig,
    atomic_folder,
    build_noise_scheduler,
    build_unet,
    build_vae,
    cast_copy,
    config_to_dict,
    write_metadata,
    write_pipeline_folder,
)
from generation.pipelines import load_pipeline  # noqa: E402
from generation.prompts import load_prompts  # noqa: E402
from generation.text_encoder import MAX_LENGTH, PACKAGE, load_minilm  # noqa: E402
from generation.trainer import MovingAverage, TrainerCore, noised, optimise  # noqa: E402

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
    # 1. Sample noise and a timestep per image; forward diffusion x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps.
    noise, steps, noisy = noised(noise_scheduler, latents, generator)
    # 2. Predict eps from x_t and the prompt, and regress on it.
    prediction = unet(noisy, steps, encoder_hidden_states=text_embeddings).sample
    loss = F.mse_loss(prediction.float(), noise.float())
    return optimise(loss, optimizer, unet.parameters())


def vae_step(vae, pixels, optimizer, kl_weight: float = 1e-6) -> float:
    """One autoencoder step: reconstruction (L1 + MSE) from the posterior mean, plus a small KL term.

    Decoding the mean rather than a sample: with the small KL weight the posterior variance is
    meaningless, and sampling it (unit variance at the start) blurred short CPU trainings badly.
    """
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.mode()).sample
    loss = F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels) + kl_weight * posterior.kl().mean()
    return optimise(loss, optimizer)


class Trainer(TrainerCore):
    """The UNet's run: the pipeline being trained, the data, the two stages and their checkpoints."""

    def __init__(self, args):
        super().__init__(args, args.stage1_steps + args.stage2_steps, args.checkpoint_steps)
        self.prompts = load_prompts()

    def run(self) -> int:
        """Train, writing checkpoints; returns 0."""
        started = time.perf_counter()
        self._setup_models()
        self.data = load_training_set(self.args.data, self.image_size)
        logger.info("training on %d images (%s) at %d px", self.data.summary["n_images"], self.data.summary["per_label"], self.image_size)
        if self.args.base is None:
            self._fit_vae()
        self._encode_latents()
        self.fit(self.pipe.unet, self.args.lr, warmup=min(100, self.total_steps // 10 + 1))
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
        self.ema = MovingAverage(pipe.unet, self.args.ema_decay) if self.args.ema_decay > 0 else None

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

    def _encode_latents(self) -> None:
        """Encode every image once; the UNet stages train on the posterior means."""
        self.latents = self.encode(self.data.pixels)
        vae = self.pipe.vae
        if self.args.base is None:
            # Unit-variance latents, as Stable Diffusion's 0.18215 does for its autoencoder.
            vae.register_to_config(scaling_factor=float(1.0 / self.latents.std()))
        logger.info("latents %s, scaling factor %.4f", tuple(self.latents.shape), vae.config.scaling_factor)

    # -- stages 1 and 2: UNet -----------------------------------------------------------------
    def _stage(self, step: int) -> int:
        return 1 if step <= self.args.stage1_steps else 2

    def phase(self, step: int) -> str:
        return f"stage {self._stage(step)}"

    def step(self, step: int, optimizer) -> float:
        latents, embeddings = self._batch(self._stage(step))
        return training_step(self.pipe.unet, self.noise_scheduler, latents, embeddings, optimizer, self.generator)

    def _batch(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        index, dropped = self.draw(len(self.latents))
        latents = self.latents[index] * self.pipe.vae.config.scaling_factor
        prompts = [
            "" if drop else (self.prompts.generic if stage == 1 else self.data.prompts[i])
            for i, drop in zip(index.tolist(), dropped)
        ]
        return latents, self.embed(prompts)

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, step: int) -> None:
        stage = self._stage(step)
        out = Path(self.args.out) / f"checkpoint-{step}"
        unet = self.ema.module if self.ema is not None else self.pipe.unet
        metadata = self._metadata(step, stage)
        if self.args.base is None:
            write_pipeline_folder(
                out, unet=unet, vae=self.pipe.vae, scheduler=self.noise_scheduler,
                text_encoder_class=type(self.pipe.text_encoder).__name__,
                tokenizer_class=type(self.pipe.tokenizer).__name__, metadata=metadata, dtype=self.save_dtype,
            )
        else:
            with atomic_folder(out) as tmp:
                cast_copy(unet, self.save_dtype).save_pretrained(tmp / "unet")
                write_metadata(tmp, metadata)
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
