"""The trainer core shared by ``generation.train`` (the UNet) and ``generation.masks.train`` (a ControlNet).

``TrainerCore`` holds what every run here does alike: seeding, the device, the checkpoint plan, the
prompt encodings, the optimiser, an optional exponential moving average, and the loop that logs
the mean loss and writes checkpoints. A subclass says only what differs: which module is trained,
what one step's loss inputs are (``step``), what the log calls a step (``phase``) and how a
checkpoint is saved (``save``). The losses themselves are the modules' ``training_step`` functions,
built from ``noised`` and ``optimise`` below.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from collections.abc import Iterable

import torch

from common.device import resolve_device


def checkpoint_plan(total_steps: int, every: int, at: Iterable[int] = ()) -> set[int]:
    """The steps to write a checkpoint at: every ``every`` steps (none for 0), the steps ``at``, and the last."""
    planned = set(range(every, total_steps + 1, every)) if every else set()
    return {s for s in planned | set(at) if 0 < s <= total_steps} | {total_steps}


def noised(noise_scheduler, latents: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward diffusion of a batch: (noise, timesteps, noisy latents), one random timestep per image.

    ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps``, with the noise drawn before the timesteps.
    """
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    steps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator,
                          device=latents.device)
    return noise, steps, noise_scheduler.add_noise(latents, noise, steps)


def optimise(loss: torch.Tensor, optimizer, clip: Iterable[torch.nn.Parameter] | None = None) -> float:
    """One optimiser update on ``loss`` (gradient norm clipped to 1 over ``clip``, if given); returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    optimizer.step()
    return float(loss.detach())


class MovingAverage:
    """An exponential moving average of a module's weights, with diffusers' warm-up ``(1 + t) / (10 + t)``."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, current: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for averaged, weights in zip(self.module.parameters(), current.parameters()):
            averaged.lerp_(weights, 1 - decay)


class TrainerCore:
    """One training run: seeding, device, checkpoint plan, prompt encodings and the optimiser loop.

    Subclasses set ``self.pipe`` (a Stable Diffusion pipeline whose ``encode_prompt`` and
    ``vae`` are used) and implement ``step``, ``phase`` and ``save``.
    """

    def __init__(self, args: argparse.Namespace, total_steps: int, checkpoint_at: Iterable[int] = ()):
        self.args = args
        self.log = logging.getLogger(type(self).__module__)
        self.device = resolve_device(args.device)
        self.generator = torch.Generator(self.device).manual_seed(args.seed)
        torch.manual_seed(args.seed)
        self.total_steps = total_steps
        self.save_steps = checkpoint_plan(total_steps, args.checkpoint_every, checkpoint_at)
        self.embeddings: dict[str, torch.Tensor] = {}
        self.ema: MovingAverage | None = None

    # -- what a subclass says -------------------------------------------------------------------
    def step(self, step: int, optimizer) -> float:
        """One training step: draw a batch, call the module's ``training_step``; returns the loss."""
        raise NotImplementedError

    def phase(self, step: int) -> str:
        """What the log calls ``step`` (``stage 1``, ``ControlNet``)."""
        raise NotImplementedError

    def save(self, step: int) -> None:
        """Write the checkpoint of ``step``."""
        raise NotImplementedError

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, module: torch.nn.Module, lr: float, warmup: int | None = None) -> None:
        """Train ``module`` with AdamW for ``total_steps``, logging the mean loss and saving at ``save_steps``.

        Args:
            module: The module being trained (put in training mode with gradients on).
            lr: The learning rate.
            warmup: Steps of linear learning-rate warm-up; None for none.
        """
        module.requires_grad_(True).train()
        optimizer = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=1e-2)
        schedule = None
        if warmup is not None:
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        started, losses = time.perf_counter(), []
        for step in range(1, self.total_steps + 1):
            losses.append(self.step(step, optimizer))
            if schedule is not None:
                schedule.step()
            if self.ema is not None:
                self.ema.update(module, step)
            if step % self.args.log_every == 0 or step == self.total_steps:
                rate = (time.perf_counter() - started) / step
                self.log.info("%s step %d/%d loss %.4f (%.2f s/step)", self.phase(step), step, self.total_steps,
                              sum(losses) / len(losses), rate)
                losses.clear()
            if step in self.save_steps:
                self.save(step)

    # -- shared pieces of a batch ---------------------------------------------------------------
    def draw(self, n_items: int) -> tuple[torch.Tensor, list[bool]]:
        """A batch of random item indices, and for each whether its prompt is dropped (classifier-free guidance)."""
        index = torch.randint(0, n_items, (self.args.batch_size,), generator=self.generator, device=self.device)
        drop = torch.rand(len(index), generator=self.generator, device=self.device) < self.args.uncond_prob
        return index, drop.tolist()

    def embed(self, prompts: list[str]) -> torch.Tensor:
        """The text encodings of ``prompts`` (B, tokens, dim); each prompt is encoded once per run."""
        return torch.stack([self._embed(prompt) for prompt in prompts])

    @torch.no_grad()
    def _embed(self, prompt: str) -> torch.Tensor:
        if prompt not in self.embeddings:
            embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
            self.embeddings[prompt] = embeds[0]
        return self.embeddings[prompt]

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """The autoencoder's posterior means of every image, 64 at a time (unscaled)."""
        vae = self.pipe.vae
        return torch.cat([vae.encode(chunk.to(self.device)).latent_dist.mean for chunk in pixels.split(64)])

    @property
    def save_dtype(self) -> torch.dtype:
        """The dtype checkpoints are saved in (``--save-dtype``)."""
        return torch.float16 if self.args.save_dtype == "fp16" else torch.float32
