"""Train a ControlNet that makes a checkpoint draw the polyp where a mask says.

The base checkpoint (our compact model or a user's Stable Diffusion) stays frozen: UNet,
autoencoder and text encoder. Only the ControlNet, initialised from the base UNet's encoder,
learns from (image, mask, prompt) triples. Checkpoints are ``OUT/controlnet-<step>/`` folders.

    python -m generation.masks.train --base CHECKPOINT --data DIR --out DIR [--steps 500] ...

``DIR`` holds image and mask pairs as ``review.register --masks`` reads them (``DIR/images/`` and
``DIR/masks/``, or a phantom set).
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
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from generation.checkpoints import inspect_checkpoint  # noqa: E402
from generation.datasets import load_frame, read_manifest  # noqa: E402
from generation.errors import run_cli  # noqa: E402
from generation.masks.files import load_mask, scan_mask_pairs  # noqa: E402
from generation.masks.model import (  # noqa: E402
    CONDITIONING,
    build_controlnet,
    conditioning_channels,
    data_digest,
    require_controlnet_family,
    write_controlnet_folder,
)
from generation.masks.shapes import square_mask  # noqa: E402
from generation.pipelines import load_pipeline  # noqa: E402
from generation.prompts import load_prompts  # noqa: E402
from generation.trainer import TrainerCore, add_scaling_arguments, check_scaling_arguments, noised, optimise  # noqa: E402

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
    add_scaling_arguments(parser)
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
    check_scaling_arguments(parser, args)
    return args


def training_step(
    controlnet, unet, noise_scheduler, latents, text_embeddings, conditions, optimizer, generator=None, weighting: str = "x0",
    accelerator=None,
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
        accelerator: The trainer's ``accelerate.Accelerator`` (``generation.trainer.optimise``), or None.
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
    noise, steps, noisy = noised(noise_scheduler, latents, generator)
    # 2. The ControlNet reads the mask and adds residuals to the UNet's skip connections.
    down, mid = controlnet(noisy, steps, encoder_hidden_states=text_embeddings, controlnet_cond=conditions, return_dict=False)
    prediction = unet(noisy, steps, encoder_hidden_states=text_embeddings,
                      down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    # 3. Regress on the noise (weighted per timestep); only the ControlNet moves.
    errors = F.mse_loss(prediction.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
    weights = _loss_weights(noise_scheduler, steps, weighting)
    loss = (weights * errors).sum() / weights.sum()
    return optimise(loss, optimizer, controlnet.parameters(), accelerator)


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
    manifest, attributes = read_manifest(source)
    book = load_prompts()
    pixels, masks, labels, prompts = [], [], [], []
    for pair in scan.pairs:
        pixels.append(load_frame(pair.image_path, image_size))
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


class Trainer(TrainerCore):
    """The ControlNet's run: the frozen base, the ControlNet being trained, the pairs and their checkpoints."""

    def __init__(self, args):
        super().__init__(args, args.steps)

    def run(self) -> int:
        """Train, writing ControlNet folders; returns 0."""
        started = time.perf_counter()
        self._setup_base()
        self.data = load_mask_training_set(self.args.data, self.image_size, self.args.colour_map, self.args.mask_threshold)
        logger.info("training a ControlNet on %d pairs (%s) at %d px", self.data.summary["n_pairs"],
                    self.data.summary["per_label"], self.image_size)
        self.latents = self.encode(self.data.pixels) * self.pipe.vae.config.scaling_factor
        self.data.pixels = None  # only the latents are needed from here on
        self.controlnet = build_controlnet(self.pipe.unet, self.pipe.vae_scale_factor).to(self.device).train()
        self.fit(self.controlnet, self.args.lr)
        logger.info("done in %.0f s; ControlNets in %s", time.perf_counter() - started, self.args.out)
        return 0

    def _setup_base(self) -> None:
        from diffusers import DDPMScheduler

        self.base = inspect_checkpoint(self.args.base, self.args.base_of_base)
        # Training encodes prompts the SD way; SDXL ControlNets trained elsewhere still sample here.
        require_controlnet_family(self.base, f"training a ControlNet on {self.args.base}", ("sd",))
        pipe = load_pipeline(self.base, torch.device("cpu"), torch.float32).to(self.device)
        for part in (pipe.unet, pipe.vae, pipe.text_encoder):
            part.requires_grad_(False).eval()
        self.pipe = pipe
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.image_size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        if self.args.lr is None:
            self.args.lr = 1e-3 if self.base.metadata.get("model") == "compact" else 1e-5

    def phase(self, step: int) -> str:
        return "ControlNet"

    def resume_facts(self) -> dict:
        data = getattr(self, "data", None)
        return {"base_fingerprint": self.base.fingerprint if hasattr(self, "base") else None,
                "pairs": data.summary["image_sha256_digest"] if data is not None else None}

    def step(self, step: int, optimizer) -> float:
        latents, embeddings, conditions = self._batch()
        return training_step(self.model, self.pipe.unet, self.noise_scheduler, latents, embeddings,
                             conditions, optimizer, self.generator, self.args.loss_weighting, self.accelerator)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, dropped = self.draw(len(self.latents))
        prompts = ["" if drop else self.data.prompts[i] for i, drop in zip(index.tolist(), dropped)]
        conditions = self.data.masks[index.cpu()].to(self.device, torch.float32)[:, None].expand(-1, 3, -1, -1)
        return self.latents[index], self.embed(prompts), conditions

    def save(self, step: int) -> Path:
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
        write_controlnet_folder(out, self.controlnet, metadata, self.save_dtype)
        logger.info("wrote %s", out)
        return out


def main(args: argparse.Namespace) -> int:
    """Run the whole training described by ``args``; see ``parse_args``."""
    return Trainer(args).run()


def cli(argv: list[str] | None = None) -> int:
    """The command line: parse ``argv``, run, report user errors as ``error: ...`` with exit status 2."""
    return run_cli(parse_args, main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
