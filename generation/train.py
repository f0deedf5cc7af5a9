"""Train the compact text-to-image model in two stages, or fine-tune a user's Stable Diffusion UNet.

Stage 0 (compact model only) fits the autoencoder. Stage 1 teaches polyp appearance from every
image under one generic prompt; stage 2 continues with pathology-specific prompts. Checkpoints are
written every ``--checkpoint-every`` steps (and at ``--checkpoint-at``), each recording its step
and stage in ``polypturing.json``, with the training state that ``--resume`` continues from. With
``--lora-rank R`` only a LoRA adapter on the base UNet trains, and checkpoints are adapters.
The loop, seeding, processes, EMA and states are ``generation.trainer``'s.

Validation is a callback (``Trainer(args, validate=fn)``): this room cannot import the evaluation
room's metrics, so the command line (``generation.cli.train``, a door) passes
``evaluation.validation``'s. Without one, nothing is held out and nothing is validated.

    python -m generation.train --data DIR --out DIR [--stage1-steps N] [--stage2-steps N] ...

About 500 lines, over the house's 400: the command's flags, its two losses and the ``Trainer`` that
uses them are read together; the loop, processes and states are already in ``generation.trainer``
and ``generation.training_state``.
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
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from generation.checkpoints import inspect_checkpoint  # noqa: E402
from generation.datasets import TrainingSet, load_training_set  # noqa: E402
from generation.model import (  # noqa: E402
    PRESET_PARAMETERS,
    PRESETS,
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
from generation.perceptual import PerceptualLoss  # noqa: E402
from generation.pipelines import load_pipeline  # noqa: E402
from generation.prompts import load_prompts  # noqa: E402
from generation.text_encoder import MAX_LENGTH, PACKAGE, load_minilm  # noqa: E402
from generation.trainer import (  # noqa: E402
    MovingAverage,
    TrainerCore,
    add_scaling_arguments,
    check_scaling_arguments,
    checkpoint_plan,
    noised,
    optimise,
    split_held_out,
)
from generation.training_state import load_module_state  # noqa: E402

logger = logging.getLogger(__name__)

CROP_SHARE = 0.85
"""With ``--vae-crop``: the share of the autoencoder's steps trained on crops; the rest see whole images."""


LORA_TARGETS: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")
"""The attention projections a ``--lora-rank`` adapter trains (as diffusers' LoRA training script)."""


def _preset_help() -> str:
    sizes = [f"{name}: {PRESETS[name].image_size} px, {PRESETS[name].latent_size}x{PRESETS[name].latent_size}x"
             f"{PRESETS[name].latent_channels} latents, {vae / 1e6:.2f} M autoencoder + {unet / 1e6:.2f} M UNet parameters"
             for name, (vae, unet) in PRESET_PARAMETERS.items()]
    return "compact model size (default demo). " + "; ".join(sizes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.train",
        description=(
            "Train the compact text-conditioned latent diffusion model on DIR/AD/* and DIR/NonAD/* images "
            "(or a CSV with file,label) in two stages, writing diffusers checkpoints OUT/checkpoint-<step>/. "
            "With --base, fine-tune that Stable Diffusion pipeline's UNet instead (with --lora-rank, a LoRA adapter). "
            "Each checkpoint is validated on a held-out split of DIR (FID, KID, label fidelity)."
        ),
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with AD/ and NonAD/ image folders, or a CSV with file,label")
    parser.add_argument("--out", type=Path, required=True, help="output folder for checkpoint-<step>/ folders")
    parser.add_argument("--base", type=Path, default=None, help="a Stable Diffusion pipeline folder whose UNet to fine-tune (GPU territory)")
    parser.add_argument("--lora-rank", type=int, default=0, metavar="R", help="with --base: train a LoRA adapter of rank R on the UNet's attention instead of all its weights; checkpoints are adapters (default 0: full weights)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help=_preset_help())
    parser.add_argument("--tiny", action="store_true", help="the same as --preset tiny (tests and smoke runs)")
    parser.add_argument("--stage1-steps", type=int, default=1000, help="steps of stage 1: generic prompt, all images (default 1000)")
    parser.add_argument("--stage2-steps", type=int, default=3000, help="steps of stage 2: pathology-specific prompts (default 3000)")
    parser.add_argument("--vae-steps", type=int, default=1500, help="autoencoder steps before stage 1, compact model only (default 1500)")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="write a checkpoint every N steps; 0 for none but --checkpoint-at and the last (default 1000); the autoencoder stage writes its training state as often")
    parser.add_argument("--checkpoint-at", type=str, default="", help="extra comma-separated steps to write checkpoints at, e.g. 500,1000,2000")
    parser.add_argument("--batch-size", type=int, default=16, help="UNet batch size of one update, over all processes (default 16)")
    parser.add_argument("--vae-batch-size", type=int, default=8, help="autoencoder batch size (default 8)")
    parser.add_argument("--vae-perceptual", type=float, default=0.5, metavar="W",
                        help="weight of the autoencoder's perceptual loss (channel-normalised EfficientNet-Lite0 feature maps, "
                             "offline) beside its L1 + MSE pixel loss; 0 for pixels only (default 0.5)")
    parser.add_argument("--vae-crop", type=int, default=0, metavar="PX",
                        help="train the autoencoder on random PX x PX crops for the first 85%% of its steps, whole images "
                             "after (a quarter of the cost at half the size); 0 for whole images throughout (default 0)")
    parser.add_argument("--lr", type=float, default=2e-4, help="UNet learning rate (default 2e-4)")
    parser.add_argument("--image-size", type=int, default=None, help="training resolution in pixels (default: the preset's, the base's size with --base)")
    parser.add_argument("--uncond-prob", type=float, default=0.1, help="share of steps trained with an empty prompt, for classifier-free guidance (default 0.1)")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="checkpoints hold an exponential moving average of the UNet weights (default 0.999; 0 to disable; none with --lora-rank)")
    parser.add_argument("--save-dtype", choices=("fp32", "fp16"), default="fp32", help="dtype of saved weights (fp16 halves the size; default fp32)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=100)
    _add_validation_arguments(parser)
    add_scaling_arguments(parser)
    args = parser.parse_args(argv)
    _check_args(parser, args)
    check_scaling_arguments(parser, args)
    return args


def _add_validation_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("validation (python -m generation.train; library callers pass validate=)")
    group.add_argument("--val-fraction", type=float, default=0.1, help="share of each pathology's images held out, chosen by --seed, and not trained on (default 0.1)")
    group.add_argument("--no-validation", dest="validation", action="store_false", help="hold nothing out and validate nothing")
    group.add_argument("--val-every-checkpoint", action=argparse.BooleanOptionalAction, default=True, help="validate every checkpoint (default), or with --no-val-every-checkpoint only the last")
    group.add_argument("--val-images", type=int, default=0, metavar="N", help="images generated per pathology (default 0: as many as are held out)")
    group.add_argument("--val-steps", type=int, default=20, metavar="N", help="sampling steps of the validation images (default 20)")
    group.add_argument("--val-extractor", default="inception", metavar="NAME", help="feature extractor: inception (default), efficientnet or dinov2")
    group.add_argument("--db", type=Path, default=None, help="study database the metric results go to, for the Evaluate tab (default: the app's, DATA/polypturing.db)")


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("stage1_steps", "stage2_steps", "vae_steps", "checkpoint_every", "lora_rank", "val_images"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more, got {getattr(args, name)}")
    if args.stage1_steps + args.stage2_steps < 1:
        parser.error("--stage1-steps plus --stage2-steps must be at least 1")
    for name in ("batch_size", "vae_batch_size", "val_steps", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 <= args.uncond_prob < 1:
        parser.error(f"--uncond-prob must be in [0, 1), got {args.uncond_prob}")
    if not 0 <= args.ema_decay < 1:
        parser.error(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
    if args.vae_perceptual < 0:
        parser.error(f"--vae-perceptual must be 0 or more, got {args.vae_perceptual}")
    if args.vae_crop and (args.vae_crop < 8 or args.vae_crop % 8):
        parser.error(f"--vae-crop must be 0 (whole images) or a multiple of 8 of at least 8, got {args.vae_crop}")
    if not 0 <= args.val_fraction <= 0.5:
        parser.error(f"--val-fraction must be between 0 and 0.5, got {args.val_fraction}")
    try:
        args.checkpoint_steps = sorted({int(s) for s in args.checkpoint_at.split(",") if s.strip()})
    except ValueError:
        parser.error(f"--checkpoint-at must be comma-separated integers, got {args.checkpoint_at!r}")
    if args.image_size is not None and (args.image_size < 8 or args.image_size % 8):
        parser.error(f"--image-size must be a multiple of 8 and at least 8, got {args.image_size}")
    if args.tiny and args.preset not in (None, "tiny"):
        parser.error(f"--tiny is --preset tiny; it contradicts --preset {args.preset}")
    if args.base is not None and args.preset:  # --tiny with --base trains the base as it is, as it always did
        parser.error("--preset sizes the compact model; with --base the base's own UNet is trained")
    if args.lora_rank and args.base is None:
        parser.error("--lora-rank trains an adapter on a Stable Diffusion UNet: give its pipeline with --base")
    args.preset = None if args.base is not None else ("tiny" if args.tiny else args.preset or "demo")


def training_step(unet, noise_scheduler, latents, text_embeddings, optimizer, generator=None, accelerator=None) -> float:
    """One denoising step: noise the latents at random timesteps, predict the noise, update the UNet.

    ``accelerator``: the trainer's ``accelerate.Accelerator`` (see ``generation.trainer.optimise``), or None.

    Returns:
        The mean squared error of the noise prediction.
    """
    # 1. Sample noise and a timestep per image; forward diffusion x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps.
    noise, steps, noisy = noised(noise_scheduler, latents, generator)
    # 2. Predict eps from x_t and the prompt, and regress on it.
    prediction = unet(noisy, steps, encoder_hidden_states=text_embeddings).sample
    loss = F.mse_loss(prediction.float(), noise.float())
    return optimise(loss, optimizer, [p for p in unet.parameters() if p.requires_grad], accelerator)


def vae_step(vae, pixels, optimizer, kl_weight: float = 1e-6, perceptual=None, perceptual_weight: float = 0.0) -> float:
    """One autoencoder step: reconstruction (L1 + MSE, plus a perceptual term) from the posterior mean, and a small KL term.

    Decoding the mean rather than a sample: with the small KL weight the posterior variance is
    meaningless, and sampling it (unit variance at the start) blurred short CPU trainings badly.
    The perceptual term (``generation.perceptual``) keeps what pixel losses let go first: the
    lesion's outline, its surface pattern and the highlights.
    """
    posterior = vae.encode(pixels).latent_dist
    reconstruction = vae.decode(posterior.mode()).sample
    loss = F.l1_loss(reconstruction, pixels) + F.mse_loss(reconstruction, pixels) + kl_weight * posterior.kl().mean()
    if perceptual is not None and perceptual_weight > 0:
        loss = loss + perceptual_weight * perceptual(reconstruction, pixels)
    return optimise(loss, optimizer, vae.parameters())


@dataclass(frozen=True)
class ValidationRequest:
    """What a validation callback is given at a checkpoint (main process only).

    Attributes:
        checkpoint: The checkpoint folder just written (load it with ``generation.checkpoints``).
        name: Its display name, ``<run folder>/checkpoint-<N>`` as discovery names it.
        step: Training step.
        stage: 1 or 2.
        real: The held-out images, uint8 (N, 3, H, W) at the model's resolution.
        labels: Their labels.
        prompts: The prompt to generate each label with.
        n_per_label: Images to generate per label (0: as many as are held out of it).
        seed: First seed of the generated images.
        steps: Sampling steps.
        device: Where to sample and extract features.
    """

    checkpoint: Path
    name: str
    step: int
    stage: int
    real: torch.Tensor
    labels: list[str]
    prompts: dict[str, str]
    n_per_label: int
    seed: int
    steps: int
    device: torch.device


Validate = Callable[[ValidationRequest], dict]
"""A validation callback: computes (and stores) the checkpoint's metrics; returns what goes into its ``polypturing.json``."""


class Trainer(TrainerCore):
    """The UNet's run: the pipeline being trained, the data, the two stages and their checkpoints."""

    def __init__(self, args, validate: Validate | None = None):
        super().__init__(args, args.stage1_steps + args.stage2_steps, args.checkpoint_steps)
        self.prompts = load_prompts()
        self.validate = validate if args.validation else None
        self.held_out: TrainingSet | None = None

    def run(self) -> int:
        """Train, writing checkpoints; returns 0."""
        started = time.perf_counter()
        self._setup_models()
        self.data, self.held_out = self._split(load_training_set(self.args.data, self.image_size))
        self._info("training on %d images (%s) at %d px", self.data.summary["n_images"], self.data.summary["per_label"], self.image_size)
        self.check_resumable()
        if self.args.base is None:
            if self.resumes_past("autoencoder"):
                load_module_state(self.pipe.vae, self.resumed[0]["vae"])
            else:
                self._fit_vae()
                self.share_weights(self.pipe.vae)
            self.kept = {"vae": self.pipe.vae}  # the trained autoencoder goes into every later state
        self._encode_latents()
        self.fit(self.pipe.unet, self.args.lr, warmup=min(100, self.total_steps // 10 + 1), whole=not self.args.lora_rank)
        self._info("done in %.0f s; checkpoints in %s", time.perf_counter() - started, self.args.out)
        return 0

    def resume_facts(self) -> dict:
        data = getattr(self, "data", None)
        return {"preset": self.args.preset, "base": str(self.args.base) if self.args.base else None,
                "lora_rank": self.args.lora_rank, "image_size": getattr(self, "image_size", None),
                "training_images": data.summary["per_label"] if data is not None else None}

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
            self.model_config = PRESETS[self.args.preset]
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
        if self.args.lora_rank:
            self._add_lora(pipe.unet)
        self.ema = MovingAverage(pipe.unet, self.args.ema_decay) if self.args.ema_decay > 0 and not self.args.lora_rank else None

    def _add_lora(self, unet) -> None:
        from peft import LoraConfig

        unet.requires_grad_(False)
        unet.add_adapter(LoraConfig(r=self.args.lora_rank, lora_alpha=self.args.lora_rank, init_lora_weights="gaussian",
                                    target_modules=list(LORA_TARGETS)))
        trained = sum(p.numel() for p in unet.parameters() if p.requires_grad)
        self._info("LoRA rank %d on %s: %d trained parameters", self.args.lora_rank, ", ".join(LORA_TARGETS), trained)

    def _split(self, data: TrainingSet) -> tuple[TrainingSet, TrainingSet | None]:
        """The training images and the held-out ones (None: nothing held out, no validation)."""
        if self.validate is None or self.args.val_fraction == 0:
            return data, None
        train, held = split_held_out(data.labels, self.args.val_fraction, self.args.seed)
        held_labels = [data.labels[i] for i in held]
        if any(held_labels.count(label) < 2 for label in sorted(set(data.labels))):
            logger.warning("no validation: --val-fraction %g holds out fewer than 2 images of a pathology (%s); "
                           "training on all images", self.args.val_fraction, {k: held_labels.count(k) for k in sorted(set(data.labels))})
            self.validate = None
            return data, None
        return _subset(data, train, "training"), _subset(data, held, "held out")

    # -- stage 0: autoencoder -----------------------------------------------------------------
    def _vae_batch(self, step: int, pixels: torch.Tensor) -> torch.Tensor:
        """Stage 0's batch at ``step``: one random ``--vae-crop`` square of ``pixels`` for the first
        85 % of the steps (whole images after), each image mirrored left-right or not by a coin.

        The v2 autoencoder has no attention, so it is convolutional but for its group norms: a crop
        costs a quarter of a 128 px image per step, and the whole-image steps at the end let the
        group norms settle on whole-frame statistics, which is what they see when sampling.
        """
        crop = self.args.vae_crop
        if crop and crop < pixels.shape[-1] and step <= int(CROP_SHARE * self.args.vae_steps):
            top, left = torch.randint(0, pixels.shape[-1] - crop + 1, (2,), generator=self.generator, device=self.device).tolist()
            pixels = pixels[:, :, top:top + crop, left:left + crop]
        coins = torch.rand(len(pixels), generator=self.generator, device=self.device).cpu() < 0.5
        return torch.where(coins.view(-1, 1, 1, 1), pixels.flip(3), pixels)

    def _fit_vae(self) -> None:
        vae = self.pipe.vae.requires_grad_(True).train()
        optimizer = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
        perceptual = PerceptualLoss().to(self.device) if self.args.vae_perceptual > 0 else None
        parts = {"vae": vae, "optimizer": optimizer}  # everything stage 0's training state holds (--resume)
        start = self.restore("autoencoder", parts)
        plan = checkpoint_plan(self.args.vae_steps, self.args.checkpoint_every)
        with self.progress(self.args.vae_steps, start, "autoencoder") as bar:
            for step in range(start + 1, self.args.vae_steps + 1):
                index = torch.randint(0, len(self.data.pixels), (self.args.vae_batch_size,), generator=self.generator, device=self.device)
                loss = vae_step(vae, self._vae_batch(step, self.data.pixels[index.cpu()]).to(self.device), optimizer,
                                perceptual=perceptual, perceptual_weight=self.args.vae_perceptual)
                bar.update(1)
                if step % self.args.log_every == 0 or step == self.args.vae_steps:
                    self._info("stage 0 (autoencoder) step %d/%d loss %.4f", step, self.args.vae_steps, loss)
                if step in plan:
                    self.write_state("autoencoder", step, parts, lambda s=step: Path(self.args.out) / f"autoencoder-{s}")
        vae.requires_grad_(False).eval()

    def _encode_latents(self) -> None:
        """Encode every image once; the UNet stages train on the posterior means."""
        self.latents = self.encode(self.data.pixels)
        vae = self.pipe.vae
        if self.args.base is None:
            # Unit-variance latents, as Stable Diffusion's 0.18215 does for its autoencoder.
            vae.register_to_config(scaling_factor=float(1.0 / self.latents.std()))
        self._info("latents %s, scaling factor %.4f", tuple(self.latents.shape), vae.config.scaling_factor)

    # -- stages 1 and 2: UNet -----------------------------------------------------------------
    def _stage(self, step: int) -> int:
        return 1 if step <= self.args.stage1_steps else 2

    def phase(self, step: int) -> str:
        return f"stage {self._stage(step)}"

    def step(self, step: int, optimizer) -> float:
        latents, embeddings = self._batch(self._stage(step))
        return training_step(self.model, self.noise_scheduler, latents, embeddings, optimizer, self.generator, self.accelerator)

    def _batch(self, stage: int) -> tuple[torch.Tensor, torch.Tensor]:
        index, dropped = self.draw(len(self.latents))
        latents = self.latents[index] * self.pipe.vae.config.scaling_factor
        prompts = [
            "" if drop else (self.prompts.generic if stage == 1 else self.data.prompts[i])
            for i, drop in zip(index.tolist(), dropped)
        ]
        return latents, self.embed(prompts)

    # -- checkpoints --------------------------------------------------------------------------
    def save(self, step: int) -> Path:
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
                if self.args.lora_rank:
                    self._save_lora(tmp, unet)
                else:
                    cast_copy(unet, self.save_dtype).save_pretrained(tmp / "unet")
                write_metadata(tmp, metadata)
        logger.info("wrote %s (stage %d)", out, stage)
        if self.validate is not None and (self.args.val_every_checkpoint or step == self.total_steps):
            metadata["validation"] = self._validated(out, step, stage)
            write_metadata(out, metadata)
        return out

    def _save_lora(self, folder: Path, unet) -> None:
        """The adapter as diffusers' LoRA scripts write it, which ``load_lora_weights`` (and so discovery) loads."""
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        folder.mkdir(parents=True)
        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers={k: v.to(self.save_dtype) for k, v in layers.items()},
                                                  safe_serialization=True)

    def _validated(self, checkpoint: Path, step: int, stage: int) -> dict:
        """The validation callback's results for ``checkpoint``; a failure is logged and recorded, training goes on."""
        held = self.held_out
        real = ((held.pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        request = ValidationRequest(
            checkpoint=checkpoint, name=f"{Path(self.args.out).name}/{checkpoint.name}", step=step, stage=stage,
            real=real, labels=list(held.labels), prompts={label: self.prompts.default_prompt(label) for label in sorted(set(held.labels))},
            n_per_label=self.args.val_images, seed=self.args.seed, steps=self.args.val_steps, device=self.device)
        started = time.perf_counter()
        try:
            results = self.validate(request)
        except (ValueError, RuntimeError, OSError) as error:
            logger.warning("validation of %s failed: %s", checkpoint, error)
            return {"error": str(error)}
        logger.info("validated %s in %.0f s: %s", checkpoint.name, time.perf_counter() - started,
                    ", ".join(f"{k} {v:.4g}" for k, v in results.get("summary", {}).items() if isinstance(v, float)))
        return results

    def _metadata(self, step: int, stage: int) -> dict:
        book = self.prompts
        return {
            "step": step,
            "stage": stage,
            "model": "compact" if self.args.base is None else ("lora" if self.args.lora_rank else "fine-tuned"),
            "base": str(Path(self.args.base).resolve()) if self.args.base else None,
            "preset": self.args.preset,
            "model_config": config_to_dict(self.model_config) if self.model_config else None,
            "lora": {"rank": self.args.lora_rank, "alpha": self.args.lora_rank, "target_modules": list(LORA_TARGETS)} if self.args.lora_rank else None,
            "text_encoder": {"package": PACKAGE, "max_length": MAX_LENGTH} if self.args.base is None else None,
            "image_size": self.image_size,
            "training_data": self.data.summary,
            "held_out": self.held_out.summary if self.held_out is not None else None,
            "prompts": {"generic": book.generic, "templates": {k: v["template"] for k, v in book.labels.items()}},
            "schedule": {
                "vae_steps": self.args.vae_steps if self.args.base is None else 0,
                "stage1_steps": self.args.stage1_steps, "stage2_steps": self.args.stage2_steps,
                "batch_size": self.args.batch_size, "lr": self.args.lr, "ema_decay": self.args.ema_decay if self.ema else 0,
                "uncond_prob": self.args.uncond_prob, "seed": self.args.seed,
                "processes": self.accelerator.num_processes, "grad_accum": self.args.grad_accum,
                "mixed_precision": self.args.mixed_precision, "resumed_from": str(self.args.resume) if self.args.resume else None,
            },
            "saved_dtype": self.args.save_dtype,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def _subset(data: TrainingSet, index: list[int], what: str) -> TrainingSet:
    labels = [data.labels[i] for i in index]
    summary = {**data.summary, "n_images": len(index), "per_label": {k: labels.count(k) for k in sorted(set(labels))},
               "split": what}
    return TrainingSet(data.pixels[index], labels, [data.prompts[i] for i in index], summary)


def main(args: argparse.Namespace, validate: Validate | None = None) -> int:
    """Run the whole training described by ``args``; see ``parse_args``.

    Args:
        args: From ``parse_args``.
        validate: Called at each checkpoint with a ``ValidationRequest`` (``evaluation.validation``
            makes one); None validates nothing and holds nothing out.
    """
    return Trainer(args, validate).run()


def cli(argv: list[str] | None = None) -> int:
    """The command line (``generation.cli.train``, which passes evaluation's validation in); exit status."""
    # The door above the evaluation room wires its metrics in; this room cannot import them.
    from generation.cli import train as train_command

    return train_command(argv)


if __name__ == "__main__":
    raise SystemExit(cli())
