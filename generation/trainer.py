"""The training loop behind ``python -m generation.train`` (arguments and steps live there)."""

from __future__ import annotations

import copy
import logging
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from generation import train as steps
from generation.device import resolve_device
from generation.model import (
    CompactModelConfig, cast_copy, build_noise_scheduler, build_unet, build_vae, config_to_dict, write_metadata,
    write_pipeline_folder,
)

logger = logging.getLogger(__name__)


class Trainer:
    """Holds the models, data and schedule of one training run."""

    def __init__(self, args):
        self.args = args
        self.device = resolve_device(args.device)
        self.generator = torch.Generator(self.device).manual_seed(args.seed)
        torch.manual_seed(args.seed)
        self.total_steps = args.stage1_steps + args.stage2_steps
        self.save_steps = self._save_steps()

    def run(self) -> int:
        """Train, writing checkpoints; returns 0."""
        started = time.perf_counter()
        self._setup_models()
        self.data = steps.load_training_set(self.args.data, self.image_size)
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
            from generation.checkpoints import inspect_checkpoint
            from generation.pipelines import load_pipeline

            info = inspect_checkpoint(self.args.base)
            pipe = load_pipeline(info, torch.device("cpu")).to(self.device, torch.float32)
            self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
            self.model_config = None
            self.image_size = self.args.image_size or pipe.unet.config.sample_size * pipe.vae_scale_factor
        else:
            from generation.text_encoder import load_minilm

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
            loss = steps.vae_step(vae, self.data.pixels[index.cpu()].to(self.device), optimizer)
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
            losses.append(steps.training_step(unet, self.noise_scheduler, latents, embeddings, optimizer, self.generator))
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
            "" if dropped else (self._generic_prompt() if stage == 1 else self.data.prompts[i])
            for i, dropped in zip(index.tolist(), drop.tolist())
        ]
        return latents, torch.stack([self._embed(p) for p in prompts])

    def _generic_prompt(self) -> str:
        from generation.prompts import load_prompts

        if not hasattr(self, "_generic"):
            self._generic = load_prompts().generic
        return self._generic

    @torch.no_grad()
    def _embed(self, prompt: str) -> torch.Tensor:
        """The text encoding of ``prompt``, computed once through the pipeline's own encode_prompt."""
        cache = self.__dict__.setdefault("_embeddings", {})
        if prompt not in cache:
            embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
            cache[prompt] = embeds[0]
        return cache[prompt]

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
        from generation.prompts import load_prompts
        from generation.text_encoder import MAX_LENGTH, PACKAGE

        book = load_prompts()
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
