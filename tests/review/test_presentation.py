"""The presentation transform: field found, overlays gone, fixed size and bytes, no metadata."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo
from scipy import ndimage as ndi

from review.presentation import (
    FRAME_FRACTION,
    EmptyImage,
    PresentationError,
    PresentationSettings,
    UnreadableImage,
    encode,
    find_field,
    present,
    present_file,
)

FIELD_BOX = (40, 12, 200, 172)  # a round field 160 px across on a 240 x 184 frame


def textured(size: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth pink-orange "mucosa": blurred random brightness and tint (no grid), plus a little noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    blobs = ndi.gaussian_filter(rng.normal(0, 1, (height, width, 3)), sigma=(width / 16, width / 16, 0))
    blobs /= blobs.std() + 1e-9
    shade = 0.8 + 0.1 * blobs[..., :1]
    pixels = shade * np.array([230, 140, 110]) + 12 * blobs + rng.normal(0, 3, (height, width, 3))
    return pixels.clip(0, 255).astype(np.uint8)


def bordered_frame(seed: int = 0) -> Image.Image:
    """A frame like a processor's: round field on black, white text in the border, a status bar."""
    frame = Image.new("RGB", (240, 184), (3, 3, 3))
    mask = Image.new("L", frame.size, 0)
    ImageDraw.Draw(mask).ellipse([FIELD_BOX[0], FIELD_BOX[1], FIELD_BOX[2] - 1, FIELD_BOX[3] - 1], fill=255)
    frame.paste(Image.fromarray(textured(frame.size, seed)), mask=mask)
    draw = ImageDraw.Draw(frame)
    for xy, text in (((2, 2), "30/05/2020"), ((2, 12), "13:08:44"), ((196, 4), "1/60"), ((2, 160), "MM:FICE"),
                     ((190, 150), "SN 1C728")):
        draw.text(xy, text, fill=(255, 255, 255))
    draw.rectangle([0, 176, 239, 183], fill=(20, 70, 70))  # status bar
    draw.text((100, 175), "HT NR", fill=(120, 255, 120))
    return frame


def outside_disc(size: int) -> np.ndarray:
    frame = round(FRAME_FRACTION * size)
    centre, radius = size / 2, size / 2 - frame
    rows, cols = np.ogrid[:size, :size]
    return np.hypot(cols + 0.5 - centre, rows + 0.5 - centre) > radius + 0.75  # beyond any pixel the antialiased edge touches


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.append(kind.decode("ascii"))
        at += 12 + length
    return chunks


def test_field_is_found_despite_text_and_status_bar_in_the_border():
    field = find_field(np.asarray(bordered_frame()))
    assert field.bordered
    assert np.allclose(field.box, FIELD_BOX, atol=3), field.box
    assert field.radius == pytest.approx(80, abs=2)
    assert field.area_fraction == pytest.approx(np.pi * 80**2 / (240 * 184), abs=0.03)


def test_status_bar_joined_to_a_clipped_field_is_not_field():
    frame = Image.new("RGB", (240, 184), (2, 2, 2))
    mask = Image.new("L", frame.size, 0)
    ImageDraw.Draw(mask).ellipse([25, 5, 215, 195], fill=255)  # clipped by the bar at the bottom
    frame.paste(Image.fromarray(textured(frame.size, 5)), mask=mask)
    ImageDraw.Draw(frame).rectangle([0, 176, 239, 183], fill=(15, 60, 60))
    x0, y0, x1, y1 = find_field(np.asarray(frame)).box
    assert abs(y1 - 176) <= 3 and abs(x0 - 25) <= 4 and abs(x1 - 215) <= 4, (x0, y0, x1, y1)
    shown = np.asarray(present(frame, 64)).astype(int)
    assert not ((shown[..., 1] > shown[..., 0]) & (shown[..., 2] > 20)).any(), "teal status bar pixels shown"


def test_overlay_text_and_status_bar_are_gone_after_presenting():
    size = 96
    shown = np.asarray(present(bordered_frame(), size))
    assert shown.shape == (size, size, 3)
    assert shown[outside_disc(size)].max() == 0, "something outside the field's disc is not black"
    assert shown[~outside_disc(size)].mean() > 80, "the field's content should fill the disc"
    # A white pixel would be overlay text: the field itself is pink-orange.
    assert not (shown.min(axis=2) > 200).any()


def test_text_in_the_corners_of_the_field_square_is_painted_out():
    frame = bordered_frame()
    draw = ImageDraw.Draw(frame)
    for x, y in ((FIELD_BOX[0] + 1, FIELD_BOX[1] + 1), (FIELD_BOX[2] - 30, FIELD_BOX[3] - 12)):
        draw.text((x, y), "A1", fill=(255, 255, 255))
    shown = np.asarray(present(frame, 64))
    assert not (shown.min(axis=2) > 200).any()


def test_image_without_border_falls_back_to_the_whole_image():
    plain = textured((120, 90), seed=3)
    field = find_field(plain)
    assert not field.bordered
    assert field.box == (0.0, 0.0, 120.0, 90.0)
    assert field.centre == (60.0, 45.0) and field.radius == 45.0
    assert np.asarray(present(plain, 32)).shape == (32, 32, 3)


def test_an_all_black_image_is_presented_as_black():
    field = find_field(np.zeros((50, 70, 3), np.uint8))
    assert not field.bordered
    assert np.asarray(present(np.zeros((50, 70, 3), np.uint8), 32)).max() == 0


def test_same_image_gives_the_same_bytes_whatever_its_container(tmp_path):
    frame = bordered_frame(seed=1)
    info = PngInfo()
    info.add_text("Software", "processor 1.0")
    frame.save(tmp_path / "a.png", pnginfo=info, dpi=(300, 300))
    frame.save(tmp_path / "b.png")
    first = present_file(tmp_path / "a.png", 80)
    assert first == present_file(tmp_path / "a.png", 80)
    assert first == present_file(tmp_path / "b.png", 80) == encode(present(np.asarray(frame), 80))


def test_presented_png_has_fixed_size_and_no_metadata_chunks(tmp_path):
    exif = Image.Exif()
    exif[0x0131] = "scope software"  # Software tag
    bordered_frame().save(tmp_path / "frame.jpg", quality=85, exif=exif.tobytes(), icc_profile=b"\0" * 128)
    assert "exif" in Image.open(tmp_path / "frame.jpg").info
    data = present_file(tmp_path / "frame.jpg", 72)
    assert png_chunks(data) == ["IHDR", "IDAT", "IEND"]
    shown = Image.open(io.BytesIO(data))
    assert (shown.format, shown.mode, shown.size) == ("PNG", "RGB", (72, 72))
    assert shown.info == {}


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_become_rgb(mode):
    image = bordered_frame().convert(mode)
    shown = present(image, 48)
    assert (shown.mode, shown.size) == ("RGB", (48, 48))


def test_unreadable_files_are_named_in_the_error(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for name in ("empty.png", "junk.png", "missing.png"):
        with pytest.raises(UnreadableImage, match=name):
            present_file(tmp_path / name, 64)
    assert issubclass(UnreadableImage, ValueError)


def test_bad_arrays_and_sizes_are_refused():
    with pytest.raises(EmptyImage):
        present(np.zeros((0, 10, 3), np.uint8), 64)
    with pytest.raises(PresentationError, match="uint8"):
        present(np.zeros((10, 10, 3), np.float32), 64)
    with pytest.raises(PresentationError, match="size"):
        present(np.zeros((10, 10, 3), np.uint8), 8)


def test_settings_record_what_was_done_and_refuse_anything_else():
    settings = PresentationSettings(size=128)
    record = settings.to_dict()
    assert record["size"] == 128 and record["resampler"] == "lanczos" and record["format"] == "png"
    assert record["version"] and record["zlib"]
    with pytest.raises(PresentationError, match="resampler"):
        PresentationSettings(resampler="nearest")
    with pytest.raises(PresentationError, match="size"):
        PresentationSettings(size=10_000)
    with pytest.raises(AttributeError):
        settings.size = 64  # frozen
