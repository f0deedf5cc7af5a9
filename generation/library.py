"""The Generate flow as one call: checkpoint + request -> images on disk + rows in the study database."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from database import checkpoints as checkpoint_store
from database import images as image_store
from generation.checkpoints import CheckpointInfo, NotACheckpoint, discover_checkpoints, inspect_checkpoint
from generation.sampling import SamplingRequest, generate, save_images

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
    rows: list[dict] = []
    try:
        rows = save_images(generated, out_dir, written=rows)
        for row in rows:
            row["path"] = str((out_dir / row["file"]).resolve())
        db = services.db()
        try:
            checkpoint_id = _upsert(db, info)
            image_store.add_synthetic_images(db, [_image_row(row, checkpoint_id) for row in rows])
        finally:
            db.close()
    except BaseException:
        for row in rows:
            if row["new_file"]:
                (out_dir / row["file"]).unlink(missing_ok=True)
        raise
    return rows


def record_checkpoint(services, checkpoint: str | Path) -> int:
    """Store (or find) a checkpoint folder's row in the study database and return its id.

    Raises:
        CheckpointNotFound, NotACheckpoint: If the folder is not a checkpoint.
    """
    info = _inspect(services, checkpoint)
    db = services.db()
    try:
        return _upsert(db, info)
    finally:
        db.close()


def _inspect(services, checkpoint: str | Path) -> CheckpointInfo:
    info = inspect_checkpoint(Path(checkpoint), services.config.base)
    roots = {Path(r).resolve() for r in (services.config.demo_dir, services.config.checkpoints_dir)}
    if Path(info.path).resolve().parent.parent in roots:  # in a run folder: name it as discovery does
        info = replace(info, name=f"{Path(info.path).parent.name}/{info.name}")
    return info


def _upsert(db, info: CheckpointInfo) -> int:
    return checkpoint_store.upsert_checkpoint(
        db, path=str(Path(info.path).resolve()), name=info.name, step=info.step, stage=info.stage, kind=info.kind,
        fingerprint=info.fingerprint, base_path=str(info.base) if info.base else None, metadata=info.metadata or None,
    )


def _image_row(row: dict, checkpoint_id: int) -> dict:
    keys = ("sha256", "label", "path", "width", "height", "prompt", "negative_prompt", "seed", "scheduler", "steps", "guidance", "seconds")
    return {**{key: row[key] for key in keys}, "checkpoint_id": checkpoint_id}
