"""The trainer core shared by ``generation.train`` (the UNet) and ``generation.masks.train`` (a ControlNet).

``TrainerCore`` holds what every run here does alike: seeding, the device and processes
(``accelerate``), the checkpoint plan, the prompt encodings, the optimiser, an optional exponential
moving average, the loop that logs the loss, shows a progress bar and writes checkpoints, and the
training state beside each checkpoint that ``--resume`` continues from (``generation.training_state``).
A subclass says only what differs: which module is trained, what one step's loss inputs are
(``step``), what the log calls a step (``phase``) and how a checkpoint is saved (``save``). The losses
themselves are the modules' ``training_step`` functions, built from ``noised`` and ``optimise`` below.

Several processes (``accelerate launch --num_processes N``) train data-parallel: every process draws
its share of each batch from its own generator (seeded from ``--seed`` and its rank), gradients are
averaged, and only the main process writes checkpoints, states and logs. A step is one optimiser
update of ``--batch-size`` images: ``--batch-size / (processes x --grad-accum)`` per process and micro-step.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from common.device import DeviceUnavailable, resolve_device
from generation.training_state import (
    PHASES,
    TrainingStateError,
    capture_rng,
    find_state,
    load_module_state,
    module_state,
    prune_states,
    read_state,
    restore_rng,
    write_state,
)

SAVE_STATES: tuple[str, ...] = ("all", "last", "none")
MIXED_PRECISIONS: tuple[str, ...] = ("no", "bf16", "fp16")
RANK_SEED_STRIDE = 1_000_003
"""Process r draws its batches from a generator seeded ``--seed + r * RANK_SEED_STRIDE`` (process 0: ``--seed``)."""


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


def optimise(loss: torch.Tensor, optimizer, clip: Iterable[torch.nn.Parameter] | None = None, accelerator=None) -> float:
    """One optimiser update on ``loss`` (gradient norm clipped to 1 over ``clip``, if given); returns the loss.

    With an ``accelerate.Accelerator`` (the trainer's), the backward pass is its own: the loss is
    scaled for fp16 and divided over the ``--grad-accum`` micro-steps, and the prepared optimiser
    steps and clears the gradients only on the last micro-step. Gradients are cleared after the
    update, so they accumulate between micro-steps.
    """
    if accelerator is None:
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(clip, 1.0)
    else:
        accelerator.backward(loss)
        if clip is not None and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(clip, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


class MovingAverage:
    """An exponential moving average of a module's trained weights, with diffusers' warm-up ``(1 + t) / (10 + t)``."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(module).requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, current: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for averaged, weights in zip(self.module.parameters(), current.parameters()):
            if weights.requires_grad:  # frozen weights (a LoRA's base) stay as they are
                averaged.lerp_(weights, 1 - decay)


# -- the flags every trainer here shares ----------------------------------------------------------------
def add_scaling_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume``, ``--save-state``, ``--mixed-precision``, ``--grad-accum``, ``--gradient-checkpointing``."""
    group = parser.add_argument_group("resuming and scaling (several GPUs: accelerate launch --num_processes N -m ...)")
    group.add_argument("--resume", type=Path, default=None, metavar="DIR",
                       help="continue from a training state: a checkpoint folder, or the run's --out folder (its newest state)")
    group.add_argument("--save-state", choices=SAVE_STATES, default="last",
                       help="write the full training state (weights, EMA, optimiser, schedule, random states) into each "
                            "checkpoint's training_state/: all keeps every one, last (default) only the newest, none writes none "
                            "(small checkpoints to ship; such a run cannot be resumed)")
    group.add_argument("--mixed-precision", choices=MIXED_PRECISIONS, default="no",
                       help="train in bf16 or fp16 autocast, CUDA only (bf16 only on GPUs that have it); default no")
    group.add_argument("--grad-accum", type=int, default=1, metavar="N",
                       help="micro-steps per optimiser update: each holds --batch-size / (processes x N) images per process (default 1)")
    group.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute activations in the backward pass: less GPU memory, more time (the forward pass runs twice)")
    group.add_argument("--progress", choices=("auto", "bar", "log"), default="auto",
                       help="a progress bar with ETA and loss (auto: when stderr is a terminal), or log lines only")


def check_scaling_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse the scaling flags that cannot work here, naming the flag (``parser.error``, exit status 2)."""
    if args.grad_accum < 1:
        parser.error(f"--grad-accum must be at least 1, got {args.grad_accum}")
    if args.batch_size % args.grad_accum:
        parser.error(f"--batch-size {args.batch_size} must be a multiple of --grad-accum {args.grad_accum}")
    try:
        check_mixed_precision(args.mixed_precision, resolve_device(args.device))
    except DeviceUnavailable as error:
        parser.error(str(error))
    if args.resume is not None:
        try:
            args.resume_state = find_state(args.resume)
        except TrainingStateError as error:
            parser.error(str(error))


def check_mixed_precision(requested: str, device: torch.device) -> str:
    """``requested`` if this device can train in it.

    Raises:
        DeviceUnavailable: For bf16 or fp16 on the CPU, or bf16 on a GPU without it (``torch.cuda.is_bf16_supported``).
    """
    if requested not in MIXED_PRECISIONS:
        raise DeviceUnavailable(f"--mixed-precision must be one of {', '.join(MIXED_PRECISIONS)}, got {requested!r}")
    if requested == "no":
        return requested
    if device.type != "cuda":
        raise DeviceUnavailable(f"--mixed-precision {requested} trains on a CUDA GPU only; this run is on the {device.type} "
                                "(use --mixed-precision no)")
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        raise DeviceUnavailable(f"--mixed-precision bf16: this GPU ({torch.cuda.get_device_name()}) has no bf16; "
                                "use --mixed-precision fp16")
    return requested


def split_held_out(labels: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (training, held out): ``fraction`` of each label's items held out, chosen by ``seed``.

    Deterministic: the same labels, fraction and seed give the same split. Each label keeps at
    least one training item.
    """
    generator = torch.Generator().manual_seed(seed)
    train, held = [], []
    for label in sorted(set(labels)):
        items = [i for i, item in enumerate(labels) if item == label]
        order = [items[j] for j in torch.randperm(len(items), generator=generator).tolist()]
        n_held = min(int(round(fraction * len(items))), len(items) - 1)
        held += order[:n_held]
        train += order[n_held:]
    return sorted(train), sorted(held)


class TrainerCore:
    """One training run: seeding, processes, checkpoint plan, prompt encodings, the optimiser loop and its state.

    Subclasses set ``self.pipe`` (a Stable Diffusion pipeline whose ``encode_prompt`` and
    ``vae`` are used) and implement ``step``, ``phase`` and ``save``; ``step`` calls the trained
    module through ``self.model`` (the module as ``accelerate`` prepared it).
    """

    def __init__(self, args: argparse.Namespace, total_steps: int, checkpoint_at: Iterable[int] = ()):
        from accelerate import Accelerator, InitProcessGroupKwargs

        self.args = args
        self.log = logging.getLogger(type(self).__module__)
        device = resolve_device(args.device)
        # The main process validates and writes checkpoints while the others wait at a barrier.
        self.accelerator = Accelerator(
            cpu=device.type == "cpu", mixed_precision=check_mixed_precision(args.mixed_precision, device),
            gradient_accumulation_steps=args.grad_accum, kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))])
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        rank, processes = self.accelerator.process_index, self.accelerator.num_processes
        if args.batch_size % (processes * args.grad_accum):
            raise DeviceUnavailable(f"--batch-size {args.batch_size} must be a multiple of the processes x --grad-accum "
                                    f"({processes} x {args.grad_accum})")
        self.micro_batch = args.batch_size // (processes * args.grad_accum)
        self.log.info("process %d of %d on %s: %d images per micro-step, %d micro-steps per update", rank, processes,
                      self.device, self.micro_batch, args.grad_accum)
        self.generator = torch.Generator(self.device).manual_seed(args.seed + rank * RANK_SEED_STRIDE)
        torch.manual_seed(args.seed)
        self.total_steps = total_steps
        self.save_steps = checkpoint_plan(total_steps, args.checkpoint_every, checkpoint_at)
        self.embeddings: dict[str, torch.Tensor] = {}
        self.ema: MovingAverage | None = None
        self.model: torch.nn.Module | None = None
        self.kept: dict[str, torch.nn.Module] = {}
        """Frozen modules every state of the model phase also keeps (the compact model's trained autoencoder)."""
        self.resumed: tuple[dict, dict] | None = read_state(args.resume_state) if getattr(args, "resume_state", None) else None

    # -- what a subclass says -------------------------------------------------------------------
    def step(self, step: int, optimizer) -> float:
        """One training (micro-)step: draw a batch, call the module's ``training_step``; returns the loss."""
        raise NotImplementedError

    def phase(self, step: int) -> str:
        """What the log calls ``step`` (``stage 1``, ``ControlNet``)."""
        raise NotImplementedError

    def save(self, step: int) -> Path:
        """Write the checkpoint of ``step``; returns its folder."""
        raise NotImplementedError

    def resume_facts(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the state (model, data); checked on resume."""
        return {}

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, module: torch.nn.Module, lr: float, warmup: int | None = None, whole: bool = True) -> None:
        """Train ``module`` with AdamW for ``total_steps``, logging the loss and saving at ``save_steps``.

        Args:
            module: The module being trained (put in training mode; with ``whole``, every weight trains).
            lr: The learning rate.
            warmup: Steps of linear learning-rate warm-up; None for none.
            whole: False to train only the weights that already require gradients (a LoRA adapter's).
        """
        module.train()
        if whole:
            module.requires_grad_(True)
        if self.args.gradient_checkpointing and getattr(module, "_supports_gradient_checkpointing", False):
            module.enable_gradient_checkpointing()
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
        schedule = None
        if warmup is not None:
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
        self.model, optimizer = self.accelerator.prepare(module, optimizer)
        parts = {"model": module, "optimizer": optimizer, "schedule": schedule, "ema": self.ema, **self.kept}
        start = self.restore("model", parts)
        with self.progress(self.total_steps, start, "train") as bar:
            started, losses = time.perf_counter(), []
            for step in range(start + 1, self.total_steps + 1):
                losses.append(self._update(step, optimizer))
                if schedule is not None:
                    schedule.step()
                if self.ema is not None:
                    self.ema.update(module, step)
                bar.update(1)
                bar.set_postfix_str(f"{self.phase(step)} loss {losses[-1]:.4f}", refresh=False)
                if step % self.args.log_every == 0 or step == self.total_steps:
                    rate = (time.perf_counter() - started) / (step - start)
                    self._info("%s step %d/%d loss %.4f (%.2f s/step)", self.phase(step), step, self.total_steps,
                               sum(losses) / len(losses), rate)
                    losses.clear()
                if step in self.save_steps:
                    self.write_state("model", step, parts, lambda s=step: self.save(s))

    def _update(self, step: int, optimizer) -> float:
        """One optimiser update over ``--grad-accum`` micro-steps; returns this process's mean loss."""
        losses = []
        for _ in range(self.args.grad_accum):
            with self.accelerator.accumulate(self.model), self.accelerator.autocast():
                losses.append(self.step(step, optimizer))
        return sum(losses) / len(losses)

    def write_state(self, phase: str, step: int, parts: dict, folder: Callable[[], Path]) -> None:
        """A collective call at a checkpoint: every process gives its random states, the main process calls
        ``folder()`` (which writes the checkpoint, if any, and returns its folder) and writes the training
        state of ``parts`` into it; the others wait."""
        rng = self.gather_rng()
        if self.is_main:
            self.save_state(folder(), phase, step, parts, rng)
        self.accelerator.wait_for_everyone()

    def share_weights(self, module: torch.nn.Module) -> None:
        """Give every process the main process's weights of ``module`` (one trained alike everywhere, not in step)."""
        if self.accelerator.num_processes > 1:
            import torch.distributed as dist

            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    # -- training state -----------------------------------------------------------------------------
    def gather_rng(self) -> list[dict]:
        """Every process's random states, in rank order (a collective call: every process makes it)."""
        from accelerate.utils import gather_object

        mine = capture_rng(self.generator)
        return gather_object([mine]) if self.accelerator.num_processes > 1 else [mine]

    def save_state(self, folder: Path, phase: str, step: int, parts: dict, rng: list[dict]) -> None:
        """Write ``folder/training_state/`` with ``parts`` (modules, optimisers, schedules) and ``rng`` (main process)."""
        if self.args.save_state == "none":
            return
        payload = {"rng": rng, **{name: _state_of(part) for name, part in parts.items() if part is not None}}
        info = {"phase": phase, "step": step, "processes": len(rng), "facts": self.resume_facts(),
                "args": {k: v for k, v in vars(self.args).items() if isinstance(v, (int, float, str, bool, Path, type(None)))}}
        written = write_state(folder, payload, info)
        if self.args.save_state == "last":
            prune_states(Path(self.args.out), keep=written)

    def resumes_past(self, phase: str) -> bool:
        """Whether the resumed state is of a phase after ``phase`` (which is then skipped)."""
        return self.resumed is not None and PHASES.index(self.resumed[1]["phase"]) > PHASES.index(phase)

    def restore(self, phase: str, parts: dict) -> int:
        """Load the resumed state into ``parts`` when it is of ``phase``; returns the step to continue after (0 if none).

        Raises:
            TrainingStateError: If the state was trained on another model or other data (``resume_facts``).
        """
        if self.resumed is None or self.resumed[1]["phase"] != phase:
            return 0
        payload, info = self.resumed
        self.check_resumable()
        for name, part in parts.items():
            if part is not None:
                _load_state_of(part, payload[name])
        rank = self.accelerator.process_index
        if len(payload["rng"]) == self.accelerator.num_processes:
            restore_rng(payload["rng"][rank], self.generator)
        else:
            self.log.warning("resuming on %d processes a state of %d: batches are drawn afresh (not the same curve)",
                             self.accelerator.num_processes, len(payload["rng"]))
            self.generator.manual_seed(self.args.seed + rank * RANK_SEED_STRIDE + info["step"])
        self._info("resumed %s at step %d from %s", phase, info["step"], self.args.resume_state)
        return int(info["step"])

    def check_resumable(self) -> None:
        """Refuse a resumed state trained on another model or other data (``resume_facts``); nothing without ``--resume``.

        Raises:
            TrainingStateError: Naming what differs.
        """
        if self.resumed is None:
            return
        recorded, now = self.resumed[1].get("facts", {}), self.resume_facts()
        differ = {key: (recorded.get(key), value) for key, value in now.items() if key in recorded and recorded[key] != value}
        if differ:
            said = "; ".join(f"{key}: state {old!r}, this run {new!r}" for key, (old, new) in differ.items())
            raise TrainingStateError(f"--resume {self.args.resume}: the state was trained otherwise ({said})")

    # -- progress and logs ----------------------------------------------------------------------------
    def progress(self, total: int, initial: int, desc: str):
        """A tqdm bar with ETA on the main process when ``--progress`` asks for one, else a silent stand-in."""
        from tqdm.auto import tqdm

        shown = self.is_main and (self.args.progress == "bar" or (self.args.progress == "auto" and sys.stderr.isatty()))
        return tqdm(total=total, initial=initial, desc=desc, disable=not shown, dynamic_ncols=True, file=sys.stderr)

    def _info(self, *message) -> None:
        if self.is_main:
            self.log.info(*message)

    # -- shared pieces of a batch ---------------------------------------------------------------
    def draw(self, n_items: int) -> tuple[torch.Tensor, list[bool]]:
        """This process's share of a batch: random item indices, and for each whether its prompt is dropped (CFG)."""
        index = torch.randint(0, n_items, (self.micro_batch,), generator=self.generator, device=self.device)
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


def _state_of(part) -> Any:
    """What a state keeps of a module (``module_state``), a moving average (its weights) or an optimiser/schedule."""
    if isinstance(part, MovingAverage):
        part = part.module
    if isinstance(part, torch.nn.Module):
        return module_state(part)
    return getattr(part, "optimizer", part).state_dict()  # accelerate wraps optimisers


def _load_state_of(part, state) -> None:
    if isinstance(part, MovingAverage):
        part = part.module
    if isinstance(part, torch.nn.Module):
        load_module_state(part, state)
    else:
        getattr(part, "optimizer", part).load_state_dict(state)
