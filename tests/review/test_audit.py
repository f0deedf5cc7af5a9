"""The blinding audit: nuisance cues separate raw files and stop separating once presented."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from generation.checkpoints import inspect_checkpoint
from generation.pipelines import load_pipeline
from generation.prompts import load_prompts
from generation.sampling import SamplingRequest, generate, save_images
from review.audit import (
    CUES,
    TooFewImages,
    audit_files,
    image_cues,
    image_files,
    main,
)
from review.presentation import PresentationSettings, UnreadableImage
from tests.review.test_presentation import bordered_frame, textured

REPO = Path(__file__).resolve().parents[2]
REAL_SAMPLE = REPO.parent / "shared" / "data" / "real-sample"
DEMO_CHECKPOINT = REPO / "assets" / "demo" / "checkpoint-2500"
FORMAT_CUES = ("width", "height", "aspect", "is_jpeg", "blockiness", "metadata_keys", "has_exif_or_icc")
SIZE_CUES = ("bytes_per_pixel", "field_fraction")
FRAME_CUES = ("border_mean", "border_std", "border_r", "border_g", "border_b", "corner_mean", "corner_std",
              "overlay_fraction")


def write_sets(root: Path, n: int = 12) -> tuple[Path, Path]:
    """``real/``: JPEG frames with border, text, status bar and EXIF; ``fake/``: plain PNGs."""
    real, fake = root / "real", root / "fake"
    real.mkdir(parents=True)
    fake.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0131] = "processor"
    for i in range(n):
        bordered_frame(seed=i).save(real / f"frame-{i}.jpg", quality=80, exif=exif.tobytes())
        Image.fromarray(textured((96, 96), seed=100 + i)).save(fake / f"gen-{i}.png")
    return real, fake


@pytest.fixture(scope="module")
def synthetic_sets(tmp_path_factory) -> tuple[Path, Path]:
    return write_sets(tmp_path_factory.mktemp("audit-sets"))


def test_raw_cues_separate_the_sets_and_presented_cues_do_not(synthetic_sets):
    real, fake = synthetic_sets
    result = audit_files(image_files(real), image_files(fake), PresentationSettings(size=64), seed=0)
    assert (result.n_real, result.n_fake, result.folds) == (12, 12, 5)
    assert result.auc_raw >= 0.95
    assert result.auc_presented <= 0.75 and result.auc_presented < result.auc_raw - 0.2
    assert all(result.cues_raw[cue] == 1.0 for cue in ("is_jpeg", "width", "metadata_keys", "corner_std"))
    assert all(result.cues_presented[cue] == 0.5 for cue in FORMAT_CUES[:4] + FRAME_CUES + SIZE_CUES)
    assert result.leaks == [] and result.passed


def test_a_file_size_cue_fails_the_audit(tmp_path, monkeypatch):
    """Had the presentation compressed its PNGs, their length would tell sharp from smooth images apart."""
    import io

    real, fake = tmp_path / "real", tmp_path / "fake"
    real.mkdir()
    fake.mkdir()
    for i in range(8):
        Image.fromarray(textured((96, 96), seed=i)).save(real / f"r{i}.png")
        Image.fromarray(textured((96, 96), seed=50 + i)).filter(ImageFilter.GaussianBlur(4)).save(fake / f"f{i}.png")

    def compressed(image):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG", compress_level=6)
        return buffer.getvalue()

    monkeypatch.setattr("review.audit.encode", compressed)
    result = audit_files(image_files(real), image_files(fake), PresentationSettings(size=64))
    assert result.cues_presented["bytes_per_pixel"] == 1.0
    assert "bytes_per_pixel" in [leak["cue"] for leak in result.leaks] and not result.passed
    monkeypatch.undo()
    honest = audit_files(image_files(real), image_files(fake), PresentationSettings(size=64))
    assert honest.cues_presented["bytes_per_pixel"] == 0.5


def test_result_is_json_ready_and_repeatable(synthetic_sets):
    real, fake = synthetic_sets
    first = audit_files(image_files(real), image_files(fake), PresentationSettings(size=48), seed=3).to_dict()
    again = audit_files(image_files(real), image_files(fake), PresentationSettings(size=48), seed=3).to_dict()
    assert json.loads(json.dumps(first)) == first == again
    assert set(first["cues_raw"]) == set(first["cues_presented"]) == set(CUES)
    assert first["settings"]["size"] == 48 and first["threshold"] == 0.75


def test_a_threshold_of_one_half_reports_every_informative_cue_as_a_leak(synthetic_sets):
    real, fake = synthetic_sets
    result = audit_files(image_files(real), image_files(fake), PresentationSettings(size=48), threshold=0.5)
    assert [leak["auc"] for leak in result.leaks] == sorted((leak["auc"] for leak in result.leaks), reverse=True)
    assert all(leak["auc"] > 0.5 for leak in result.leaks)
    assert not result.passed


def test_cues_of_a_plain_png_say_so(tmp_path):
    path = tmp_path / "plain.png"
    Image.fromarray(textured((64, 48), seed=1)).save(path)
    image = Image.open(path)
    cues = image_cues(path.read_bytes(), image)
    assert list(cues) == list(CUES)
    assert (cues["width"], cues["height"], cues["is_jpeg"], cues["has_exif_or_icc"]) == (64, 48, 0.0, 0.0)
    assert cues["field_fraction"] == 1.0 and cues["overlay_fraction"] == 0.0


def test_too_few_images_and_bad_files_are_clear_errors(synthetic_sets, tmp_path):
    real, fake = synthetic_sets
    with pytest.raises(TooFewImages, match="at least 2 real and 2 synthetic.*got 1 real"):
        audit_files(image_files(real)[:1], image_files(fake))
    with pytest.raises(ValueError, match="threshold"):
        audit_files(image_files(real), image_files(fake), threshold=1.5)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UnreadableImage, match="broken.png"):
        audit_files(image_files(real), [*image_files(fake), tmp_path / "broken.png"])


def test_cli_prints_one_json_object(synthetic_sets):
    real, fake = synthetic_sets
    command = [sys.executable, "-m", "review.audit", "--real", str(real), "--fake", str(fake), "--size", "48", "--json"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("auc_raw", "auc_presented", "leaks", "cues_raw", "cues_presented", "n_real", "n_fake", "threshold",
                "passed", "settings"):
        assert key in result
    assert result["n_real"] == result["n_fake"] == 12 and result["settings"]["size"] == 48


def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    Image.fromarray(textured((32, 32), seed=0)).save(tmp_path / "one" / "a.png")
    assert main(["--real", str(tmp_path / "missing"), "--fake", str(tmp_path / "one")]) == 2
    assert main(["--real", str(tmp_path / "one"), "--fake", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "missing is not a folder" in err and "at least 2 real" in err and "Traceback" not in err


def test_summary_without_json_is_readable(synthetic_sets, capsys):
    real, fake = synthetic_sets
    assert main(["--real", str(real), "--fake", str(fake), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "AUC from nuisance cues" in out and "leaks:" in out


def test_importing_the_audit_does_not_import_gradio():
    code = "import sys, review.audit; sys.exit('gradio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=120, check=False).returncode == 0


def demo_images(out: Path, per_label: int = 12) -> list[Path]:
    """Images from the shipped demo checkpoint (4 denoising steps: the cues do not need more)."""
    import torch


    info = inspect_checkpoint(DEMO_CHECKPOINT)
    pipe = load_pipeline(info, torch.device("cpu"))
    prompts = load_prompts()
    for label in ("AD", "NonAD"):
        request = SamplingRequest(label=label, prompt=prompts.default_prompt(label), n=per_label, seed=0, steps=4)
        save_images(generate(pipe, info, request), out)
    return image_files(out)


@pytest.mark.skipif(not REAL_SAMPLE.is_dir(), reason=f"real sample frames not present at {REAL_SAMPLE}")
def test_real_frames_next_to_demo_images_are_blind_once_presented(tmp_path):
    real = image_files(REAL_SAMPLE)
    fake = demo_images(tmp_path / "demo")
    assert len(real) == len(fake) == 24
    result = audit_files(real, fake, PresentationSettings(size=256), seed=0)
    logging.getLogger(__name__).warning(
        "real sample vs demo: auc_raw %.3f, auc_presented %.3f, leaks %s, presented cues %s",
        result.auc_raw, result.auc_presented, result.leaks, result.cues_presented)
    assert result.auc_raw > 0.9
    assert result.auc_presented < 0.75 and result.auc_presented < result.auc_raw - 0.25
    assert all(result.cues_raw[cue] > 0.95 for cue in ("width", "is_jpeg", "border_mean", "overlay_fraction"))
    # File size and the visible field are the same for every presented file: no information at all.
    assert all(result.cues_presented[cue] == 0.5 for cue in FORMAT_CUES[:4] + FRAME_CUES + SIZE_CUES)
    assert result.leaks == [] and result.passed, result.leaks
