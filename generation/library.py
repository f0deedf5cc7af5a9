"""The Generate flow as one call: checkpoint + request -> images on disk + rows in the study database."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from sqlite_utils import Database

from database import checkpoints as checkpoint_store
from database import images as image_store
from generation.checkpoints import CheckpointInfo, NotACheckpoint, discover_checkpoints, inspect_checkpoint
from generation.sampling import GeneratedImage, SamplingRequest, generate, save_images

logger = logging.getLogger(__name__)


def list_checkpoints(roots: Iterable[Path], base: Path | None = None) -> list[CheckpointInfo]:
    """Every checkpoint under the existing roots, sorted by training step; missing roots are skipped."""
    found = []
    for root in roots:
        if not Path(root).is_dir():
            continue
        try:
            found += discover_checkpoints(root, base)
        except NotACheckpoint as err:
            logger.info("no checkpoints in %s: %s", root, err)
    return sorted(found, key=lambda info: (info.step, info.name))


def generate_and_record(
    services, checkpoint: str | Path, request: SamplingRequest, on_step: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Generate images, write them under the data folder and store them with their provenance.

    The images and their database rows are one unit: if storing fails, the files written by
    this call are removed again.

    Args:
        services: The app's ``Services`` (config, pipeline cache, database).
        checkpoint: Path of a checkpoint folder as listed by discovery.
        request: What to generate.
        on_step: Progress callback (steps done, steps in all).

    Returns:
        Provenance rows, one per image, with ``path`` (absolute) added.

    Raises:
        UnknownLabel, InvalidSetting: For out-of-range settings or an unknown label.
        CheckpointNotFound, NotACheckpoint, CheckpointLoadError, TextEncoderMissing: For bad checkpoints.
    """
    request.validated()
    info = _inspect(services, checkpoint)
    with services.pipelines.use(info) as pipe:
        generated = generate(pipe, info, request, on_step=on_step)
    out_dir = services.config.generated_dir / f"{Path(info.path).name}-{info.fingerprint[:12]}"
    return store_generated(services, generated, out_dir, upsert=lambda db: _upsert(db, info))


def store_generated(
    services, generated: list[GeneratedImage], out_dir: Path, upsert: Callable[[Database], int],
    beside: Callable[[dict], list[Path]] | None = None,
    store_beside: Callable[[Database, list[dict]], None] | None = None,
) -> list[dict]:
    """Write generated images under ``out_dir``, then store them in one transaction: all or nothing.

    If writing or storing fails, the files this call wrote are removed again (files that already
    held the same bytes stay).

    Args:
        services: The app's ``Services`` (its ``db()`` opens the study database).
        generated: From ``generation.sampling.generate``.
        out_dir: Where the PNGs go.
        upsert: Stores (or finds) the checkpoint row of the images and returns its id.
        beside: Writes a row's companion files (a mask beside its image), adds their fields to the
            row, and returns the files it newly wrote.
        store_beside: Stores the companion rows, in the same transaction as the images.

    Returns:
        Provenance rows, one per image, with ``path`` (absolute) added.
    """
    new_files: list[Path] = []
    try:
        rows = save_images(generated, out_dir, new_files)
        for row in rows:
            row["path"] = str((Path(out_dir) / row["file"]).resolve())
            if beside is not None:
                new_files += beside(row)
        with services.db() as db, db.atomic():
            checkpoint_id = upsert(db)
            image_store.add_synthetic_images(db, [_image_row(row, checkpoint_id) for row in rows])
            if store_beside is not None:
                store_beside(db, rows)
    except BaseException:
        for path in new_files:
            path.unlink(missing_ok=True)
        raise
    return rows


def record_checkpoint(services, checkpoint: str | Path) -> int:
    """Store (or find) a checkpoint folder's row in the study database and return its id.

    Raises:
        CheckpointNotFound, NotACheckpoint: If the folder is not a checkpoint.
    """
    info = _inspect(services, checkpoint)
    with services.db() as db:
        return _upsert(db, info)


def _inspect(services, checkpoint: str | Path) -> CheckpointInfo:
    info = inspect_checkpoint(Path(checkpoint), services.config.base)
    roots = {Path(r).resolve() for r in (services.config.demo_dir, services.config.checkpoints_dir)}
    if Path(info.path).resolve().parent.parent in roots:  # in a run folder: name it as discovery does
        info = replace(info, name=f"{Path(info.path).parent.name}/{info.name}")
    return info


def _upsert(db, info: CheckpointInfo) -> int:
    return checkpoint_store.upsert_checkpoint(
        db, path=str(Path(info.path).resolve()), name=info.name, step=info.step, stage=info.stage, kind=info.kind,
        fingerprint=info.fingerprint, base_path=str(info.base) if info.base else None,
        metadata={**info.metadata, "loading": info.loading},
    )


def _image_row(row: dict, checkpoint_id: int) -> dict:
    keys = ("sha256", "label", "path", "width", "height", "prompt", "negative_prompt", "seed", "scheduler", "steps", "guidance", "seconds")
    return {**{key: row[key] for key in keys}, "checkpoint_id": checkpoint_id}
