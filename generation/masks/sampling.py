"""Generate labelled image and mask pairs with a ControlNet, and store them with their provenance.

Masks come from the registered real masks (or a folder of pairs) reshaped at random, from
procedural blobs, or from the caller. Image ``i`` uses seed ``seed + i`` and mask ``i`` of
``sample_masks(..., seed)``, so the same call makes the same pairs again.

Files go to ``DATA/generated/<controlnet>-<fingerprint>/images/<label>/<file>.png`` and
``.../masks/<label>/<file>.png`` (same name; 0 background, 255 polyp), the layout
``generation.masks.files.scan_mask_pairs`` reads, so a generated folder can train a segmentation model
or another ControlNet as it is.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from common.files import write_if_changed
from database import checkpoints as checkpoint_store
from database import masks as mask_store
from generation.library import store_generated
from generation.masks.files import load_mask, mask_to_image, scan_mask_pairs
from generation.masks.model import inspect_controlnet, load_controlnet_pipeline, mask_condition
from generation.masks.shapes import SampledMask, sample_masks
from generation.prompts import load_prompts
from generation.sampling import GeneratedImage, InvalidSetting, SamplingRequest, generate, png_bytes

logger = logging.getLogger(__name__)

MASK_MODES: tuple[str, ...] = ("augmented", "procedural")
"""Named ways to get masks: real masks reshaped at random, or procedural blobs."""


def generate_pairs(
    services, controlnet_dir: str | Path, label: str, n: int, seed: int,
    masks: str | Sequence[SampledMask] = "augmented", prompt: str | None = None, negative_prompt: str | None = None,
    steps: int = 20, guidance: float = 3.0, scheduler: str = "dpm++", mask_pool: Path | None = None,
    batch_size: int = 8, on_step: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Generate ``n`` image and mask pairs of one pathology, write them and store them, all or nothing.

    Args:
        services: The app's ``Services`` (config, pipeline cache, database).
        controlnet_dir: A ControlNet folder (``generation.masks.train`` output or a user's).
        label: ``AD`` or ``NonAD``.
        n, seed: How many pairs; pair ``i`` uses seed ``seed + i``.
        masks: ``"augmented"`` (real masks of ``label`` reshaped), ``"procedural"``, or ``n``
            ready masks (``SampledMask`` at the model's size).
        prompt, negative_prompt: Default: the label's template and the negative prompt of
            ``assets/prompts.json``.
        steps, guidance, scheduler: Sampler settings (``generation.sampling``).
        mask_pool: For ``augmented``: a folder of image and mask pairs to reshape instead of the
            registered real masks (e.g. the training data, to keep test masks out).
        batch_size: Images per forward pass.
        on_step: Progress callback (steps done, steps in all).

    Returns:
        One row per pair: the provenance row (``path``, ``sha256``, prompt, seed, ...) plus
        ``mask_path``, ``mask_sha256``, ``mask_source`` and ``mask_provenance``.

    Raises:
        UnknownLabel, InvalidSetting: For an unknown label or out-of-range settings, or no mask to reshape.
        CheckpointNotFound, NotACheckpoint, CheckpointLoadError, TextEncoderMissing: For bad folders.
    """
    book = load_prompts()
    request = SamplingRequest(
        label=label, prompt=book.default_prompt(label) if prompt is None else prompt, n=n, seed=seed, steps=steps,
        guidance=guidance, scheduler=scheduler, negative_prompt=book.negative if negative_prompt is None else negative_prompt,
    ).validated()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidSetting(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    info = inspect_controlnet(Path(controlnet_dir), base_of_base=services.config.base)
    chosen = _masks(services, masks, request, info.image_size, mask_pool)
    with services.pipelines.use(info.base) as base_pipe:
        pipe = load_controlnet_pipeline(info, services.pipelines.device, base_pipe)
        generated = generate(pipe, info, request, batch_size=batch_size, on_step=on_step,
                             condition=_conditions(chosen, request, info.image_size))
    return _store(services, info, generated, chosen, request)


def _masks(services, masks, request: SamplingRequest, size: int, mask_pool: Path | None) -> list[SampledMask]:
    if not isinstance(masks, str):
        chosen = list(masks)
        if len(chosen) != request.n or any(np.asarray(m.mask).shape != (size, size) for m in chosen):
            raise InvalidSetting(f"masks must be {request.n} SampledMask of {size}x{size} (n and the model's size), "
                                 f"got {len(chosen)}")
        return chosen
    if masks not in MASK_MODES:
        raise InvalidSetting(f"masks {masks!r} is not supported; choose one of {', '.join(MASK_MODES)} or pass masks")
    if masks == "procedural":
        return sample_masks([], request.n, request.seed, size, procedural_share=1.0)
    real = _pool_masks(mask_pool, request.label) if mask_pool is not None else _registered_masks(services, request.label)
    if not real:
        where = f"in {mask_pool}" if mask_pool is not None else "registered"
        raise InvalidSetting(f"no {request.label} mask {where} to reshape; register image and mask pairs "
                             "(review.register --masks), give a mask folder, or use masks='procedural'")
    return sample_masks(real, request.n, request.seed, size)


def _registered_masks(services, label: str) -> list[tuple[str, np.ndarray]]:
    with services.db() as db:
        rows = mask_store.list_masked_images(db, source="real", label=label)
    found = []
    for row in rows:
        reading = row["reading"] or {}
        found.append((row["sha256"], load_mask(Path(row["mask_path"]), reading.get("colour_map"), reading.get("threshold"))[0]))
    return found


def _pool_masks(folder: Path, label: str) -> list[tuple[str, np.ndarray]]:
    scan = scan_mask_pairs(Path(folder))
    return [(p.sha256, load_mask(p.mask_path, p.reading["colour_map"], p.reading["threshold"])[0])
            for p in scan.pairs if p.label == label]


def _conditions(masks: list[SampledMask], request: SamplingRequest, size: int) -> Callable[[list[int]], dict]:
    """The ControlNet arguments of a batch of seeds: the mask of each seed as its condition image."""
    def condition(chunk: list[int]) -> dict:
        images = [mask_condition(masks[seed - request.seed].mask, size) for seed in chunk]
        return {"image": images, "height": size, "width": size}

    return condition


def _store(services, info, generated: list[GeneratedImage], masks: list[SampledMask], request: SamplingRequest) -> list[dict]:
    """Write images and masks, then their rows in one transaction; new files are removed if anything fails."""
    out_dir = services.config.generated_dir / f"{info.name}-{info.fingerprint[:12]}"
    image_dir, mask_dir = out_dir / "images" / request.label, out_dir / "masks" / request.label

    def write_mask(row: dict) -> list[Path]:
        mask = masks[row["seed"] - request.seed]
        mask_path = mask_dir / row["file"]
        data = png_bytes(mask_to_image(mask.mask))
        row["mask_sha256"] = hashlib.sha256(data).hexdigest()
        new = write_if_changed(mask_path, data)
        row.update(mask_path=str(mask_path.resolve()), mask_source=mask.source, mask_provenance=mask.provenance,
                   area_fraction=float(np.mean(mask.mask)))
        return [mask_path] if new else []

    rows = store_generated(
        services, generated, image_dir, upsert=lambda db: _upsert(db, info), beside=write_mask,
        store_beside=lambda db, rows: mask_store.add_masks(db, [_mask_row(row) for row in rows]),
    )
    logger.info("stored %d %s pairs from %s in %s", len(rows), request.label, info.name, out_dir)
    return rows


def _upsert(db, info) -> int:
    """The ControlNet's checkpoint row: a training output on top of its base, fingerprinted with it."""
    metadata = {**info.metadata, "model": "controlnet", "controlnet_fingerprint": info.controlnet_fingerprint,
                "base_fingerprint": info.base.fingerprint, "base": str(Path(info.base.path).resolve())}
    return checkpoint_store.upsert_checkpoint(
        db, path=str(Path(info.path).resolve()), name=info.name, step=info.step, stage=None, kind="training-output",
        fingerprint=info.fingerprint, base_path=str(Path(info.base.path).resolve()), metadata=metadata,
    )


def _mask_row(row: dict) -> dict:
    return {"image_sha256": row["sha256"], "mask_path": row["mask_path"], "mask_sha256": row["mask_sha256"],
            "area_fraction": row["area_fraction"], "mask_source": row["mask_source"],
            "mask_provenance": row["mask_provenance"], "mask_label": None, "reading": None}
