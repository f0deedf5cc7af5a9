"""Train a ControlNet that makes a checkpoint draw the polyp where a mask says.

The base checkpoint (our compact model or a user's Stable Diffusion) stays frozen: UNet,
autoencoder and text encoder. Only the ControlNet, initialised from the base UNet's encoder,
learns from (image, mask, prompt) triples. Checkpoints are ``OUT/controlnet-<step>/`` folders.

    python -m generation.masks.train --base CHECKPOINT --data DIR --out DIR [--steps 500] ...

``DIR`` holds image and mask pairs as ``review.register --masks`` reads them (``DIR/images/`` and
``DIR/masks/``, or a phantom set).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from generation.checkpoints import inspect_checkpoint
from generation.datasets import DatasetError, _square, _to_tensor
from generation.errors import run_cli
from generation.masks.files import load_mask, scan_mask_pairs
from generation.masks.model import (
    CONDITIONING,
    build_controlnet,
    conditioning_channels,
    data_digest,
    write_controlnet_folder,
)
from generation.masks.shapes import square_mask
from generation.pipelines import load_pipeline
from generation.prompts import load_prompts

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F
from PIL import Image

from common.device import resolve_device

logger = logging.getLogger(__name__)

WEIGHTINGS: tuple[str, ...] = ("x0", "eps")
X0_WEIGHT_CAP = 20.0
"""1/SNR is capped: at the noisiest steps it exceeds 100 and a few images would carry the batch."""



def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m generation.masks.train",
        description=(
            "Train a ControlNet on image and mask pairs so that the base checkpoint generates an image from a "
            "polyp mask and a prompt. The base stays frozen. Writes OUT/controlnet-<step>/ (diffusers "
            "ControlNetModel folders with polypturing.json)."
        ),
    )
    parser.add_argument("--base", type=Path, required=True, help="the checkpoint to steer: a compact checkpoint or a Stable Diffusion pipeline folder")
    parser.add_argument("--base-of-base", type=Path, default=None, help="base pipeline when --base is a training output checkpoint-<N>/")
    parser.add_argument("--data", type=Path, required=True, help="DIR/images/ and DIR/masks/ (or a phantom set), as review.register --masks reads them")
    parser.add_argument("--out", type=Path, required=True, help="output folder for controlnet-<step>/ folders")
    parser.add_argument("--steps", type=int, default=500, help="training steps (default 500)")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="also write a ControlNet every N steps (default 0: only the last)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3 on a compact base, 1e-5 on Stable Diffusion as diffusers' ControlNet script)")
    parser.add_argument("--loss-weighting", choices=WEIGHTINGS, default="x0", help="x0: noise error / SNR, capped (learns where the polyp goes sooner; default); eps: plain noise MSE")
    parser.add_argument("--uncond-prob", type=float, default=0.1, help="share of steps with an empty prompt, for classifier-free guidance (default 0.1)")
    parser.add_argument("--colour-map", default=None, metavar="JSON", help='colour-coded masks: JSON text or file, e.g. \'{"#ff0000": "AD", "#00ff00": "NonAD"}\'')
    parser.add_argument("--mask-threshold", type=int, default=None, metavar="N", help="binarise lossy masks at grey level N (1-255); off by default")
    parser.add_argument("--save-dtype", choices=("fp32", "fp16"), default="fp32", help="dtype of saved weights (default fp32)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=50)
    args = parser.parse_args(argv)
    for name, low in (("steps", 1), ("batch_size", 1), ("checkpoint_every", 0), ("log_every", 1)):
        if getattr(args, name) < low:
            parser.error(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.lr is not None and not args.lr > 0:
        parser.error(f"--lr must be positive, got {args.lr}")
    if not 0 <= args.uncond_prob < 1:
        parser.error(f"--uncond-prob must be in [0, 1), got {args.uncond_prob}")
    if args.mask_threshold is not None and not 1 <= args.mask_threshold <= 255:
        parser.error(f"--mask-threshold must be a grey level between 1 and 255, got {args.mask_threshold}")
    return args


def training_step(
    controlnet, unet, noise_scheduler, latents, text_embeddings, conditions, optimizer, generator=None, weighting: str = "x0",
) -> float:
    """One ControlNet step: noise the latents, predict the noise with the frozen UNet steered by the mask.

    Args:
        controlnet: The ControlNet being trained.
        unet: The frozen base UNet (its weights are not updated).
        noise_scheduler: The training noise schedule.
        latents: Scaled latents (B, C, h, w).
        text_embeddings: Prompt encodings (B, tokens, dim).
        conditions: Mask images (B, 3, H, W) in [0, 1].
        optimizer: Over the ControlNet's parameters only.
        weighting: ``x0`` weighs each image's noise error by 1/SNR of its timestep, capped at
            ``X0_WEIGHT_CAP`` (an error on the clean image rather than on the noise), or ``eps``
            (plain noise MSE, as diffusers' ControlNet script).

    Where the polyp goes is decided at the noisy steps, where the plain noise MSE hardly sees
    the image. On the demo (CPU, batch 16, lr 1e-3) ``x0`` put 7 of 8 AD polyps on their masks
    after 1000 steps; ``eps`` put about 3 of 8 there after 2000 steps, even with timesteps drawn
    towards the noisy end.

    Returns:
        The (weighted) mean squared error of the noise prediction.
    """
    # 1. Sample noise and a timestep per image; forward diffusion.
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    steps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator, device=latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, steps)
    # 2. The ControlNet reads the mask and adds residuals to the UNet's skip connections.
    down, mid = controlnet(noisy, steps, encoder_hidden_states=text_embeddings, controlnet_cond=conditions, return_dict=False)
    prediction = unet(noisy, steps, encoder_hidden_states=text_embeddings,
                      down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    # 3. Regress on the noise (weighted per timestep); only the ControlNet moves.
    errors = F.mse_loss(prediction.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
    weights = _loss_weights(noise_scheduler, steps, weighting)
    loss = (weights * errors).sum() / weights.sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def _loss_weights(noise_scheduler, steps: torch.Tensor, weighting: str) -> torch.Tensor:
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if weighting == "eps":
        return torch.ones(len(steps), device=steps.device)
    alphas = noise_scheduler.alphas_cumprod.to(steps.device)[steps].float()
    return ((1 - alphas) / alphas).clamp(max=X0_WEIGHT_CAP)


@dataclass
class MaskTrainingSet:
    """Image and mask pairs in memory at the model's size: pixels in [-1, 1], masks as bool."""

    pixels: torch.Tensor
    masks: torch.Tensor
    labels: list[str]
    prompts: list[str]
    summary: dict


def load_mask_training_set(source: Path, image_size: int, colour_map=None, threshold: int | None = None) -> MaskTrainingSet:
    """Read the pairs under ``source``, framed as the base was trained (centre square, resized).

    Prompts come from ``assets/prompts.json``, filled with the attributes a phantom set's
    ``PHANTOM.json`` records, else the label's short prompt.

    Raises:
        DatasetError: If the folder is unusable or holds no usable pair.
    """
    scan = scan_mask_pairs(source, colour_map, threshold)
    manifest_file = Path(source) / "PHANTOM.json"
    try:
        manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    except json.JSONDecodeError as err:
        raise DatasetError(f"{manifest_file} is not valid JSON ({err}); fix or remove it") from err
    attributes = {(Path(source) / entry["file"]).resolve(): entry for entry in manifest.get("images", [])}
    book = load_prompts()
    pixels, masks, labels, prompts = [], [], [], []
    for pair in scan.pairs:
        with Image.open(pair.image_path) as image:
            pixels.append(_to_tensor(_square(image.convert("RGB"), image_size)))
        mask, _ = load_mask(pair.mask_path, pair.reading["colour_map"], pair.reading["threshold"])
        masks.append(torch.from_numpy(square_mask(mask, image_size)))
        labels.append(pair.label)
        prompts.append(book.fill(pair.label, attributes.get(pair.image_path.resolve())))
    summary = {
        "source": str(source), "n_pairs": len(labels),
        "per_label": {label: labels.count(label) for label in sorted(set(labels))},
        "mask_sources": sorted({pair.mask_source for pair in scan.pairs}),
        "phantom": manifest.get("kind") == "phantom", "skipped": len(scan.problems), "duplicates": len(scan.duplicates),
        "image_sha256_digest": data_digest([pair.sha256 for pair in scan.pairs]),
    }
    return MaskTrainingSet(torch.stack(pixels), torch.stack(masks), labels, prompts, summary)


class Trainer:
    """Holds the frozen base, the ControlNet, the data and the schedule of one run."""

    def __init__(self, args):
        self.args = args
        self.device = resolve_device(args.device)
        self.generator = torch.Generator(self.device).manual_seed(args.seed)
        torch.manual_seed(args.seed)
        every = args.checkpoint_every
        self.save_steps = ({s for s in range(every, args.steps + 1, every)} if every else set()) | {args.steps}
        self.embeddings: dict[str, torch.Tensor] = {}

    def run(self) -> int:
        """Train, writing ControlNet folders; returns 0."""
        started = time.perf_counter()
        self._setup_base()
        self.data = load_mask_training_set(self.args.data, self.image_size, self.args.colour_map, self.args.mask_threshold)
        logger.info("training a ControlNet on %d pairs (%s) at %d px", self.data.summary["n_pairs"],
                    self.data.summary["per_label"], self.image_size)
        self._encode_latents()
        self.controlnet = build_controlnet(self.pipe.unet, self.pipe.vae_scale_factor).to(self.device).train()
        self._train()
        logger.info("done in %.0f s; ControlNets in %s", time.perf_counter() - started, self.args.out)
        return 0

    def _setup_base(self) -> None:
        from diffusers import DDPMScheduler


        self.base = inspect_checkpoint(self.args.base, self.args.base_of_base)
        pipe = load_pipeline(self.base, torch.device("cpu"), torch.float32).to(self.device)
        for part in (pipe.unet, pipe.vae, pipe.text_encoder):
            part.requires_grad_(False).eval()
        self.pipe = pipe
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.image_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        if self.args.lr is None:
            self.args.lr = 1e-3 if self.base.metadata.get("model") == "compact" else 1e-5

    @torch.no_grad()
    def _encode_latents(self) -> None:
        vae = self.pipe.vae
        means = [vae.encode(chunk.to(self.device)).latent_dist.mean for chunk in self.data.pixels.split(64)]
        self.latents = torch.cat(means) * vae.config.scaling_factor
        self.data.pixels = None  # only the latents are needed from here on

    def _train(self) -> None:
        optimizer = torch.optim.AdamW(self.controlnet.parameters(), lr=self.args.lr, weight_decay=1e-2)
        started, losses = time.perf_counter(), []
        for step in range(1, self.args.steps + 1):
            latents, embeddings, conditions = self._batch()
            losses.append(training_step(self.controlnet, self.pipe.unet, self.noise_scheduler, latents, embeddings,
                                        conditions, optimizer, self.generator, self.args.loss_weighting))
            if step % self.args.log_every == 0 or step == self.args.steps:
                rate = (time.perf_counter() - started) / step
                logger.info("ControlNet step %d/%d loss %.4f (%.2f s/step)", step, self.args.steps, sum(losses) / len(losses), rate)
                losses.clear()
            if step in self.save_steps:
                self._save(step)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = torch.randint(0, len(self.latents), (self.args.batch_size,), generator=self.generator, device=self.device)
        drop = torch.rand(len(index), generator=self.generator, device=self.device) < self.args.uncond_prob
        prompts = ["" if dropped else self.data.prompts[i] for i, dropped in zip(index.tolist(), drop.tolist())]
        conditions = self.data.masks[index.cpu()].to(self.device, torch.float32)[:, None].expand(-1, 3, -1, -1)
        return self.latents[index], torch.stack([self._embed(p) for p in prompts]), conditions

    @torch.no_grad()
    def _embed(self, prompt: str) -> torch.Tensor:
        if prompt not in self.embeddings:
            embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
            self.embeddings[prompt] = embeds[0]
        return self.embeddings[prompt]

    def _save(self, step: int) -> None:
        out = Path(self.args.out) / f"controlnet-{step}"
        metadata = {
            "step": step, "stage": None,
            "base": str(Path(self.base.path).resolve()), "base_fingerprint": self.base.fingerprint,
            "base_step": self.base.step, "base_name": self.base.name,
            "base_of_base": str(Path(self.args.base_of_base).resolve()) if self.args.base_of_base else None,
            "image_size": self.image_size, "conditioning": CONDITIONING,
            "conditioning_embedding_out_channels": list(conditioning_channels(self.pipe.vae_scale_factor)),
            "training_data": self.data.summary,
            "schedule": {
                "steps": self.args.steps, "batch_size": self.args.batch_size, "lr": self.args.lr,
                "uncond_prob": self.args.uncond_prob, "loss_weighting": self.args.loss_weighting, "seed": self.args.seed, "device": self.device.type,
            },
            "saved_dtype": self.args.save_dtype,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        dtype = torch.float16 if self.args.save_dtype == "fp16" else torch.float32
        write_controlnet_folder(out, self.controlnet, metadata, dtype)
        logger.info("wrote %s", out)


def main(args: argparse.Namespace) -> int:
    """Run the whole training described by ``args``; see ``parse_args``."""
    return Trainer(args).run()


def cli(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, run, report user errors as ``error: ...`` with exit status 2."""
    return run_cli(parse_args, main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
