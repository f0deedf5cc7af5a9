"""The presentation transform: field found, overlays gone, fixed size and bytes, no metadata."""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from PIL.PngImagePlugin import PngInfo
from scipy import ndimage as ndi

from review.presentation import (
    FRAME_FRACTION,
    RIM_LEVEL,
    EmptyImage,
    PresentationError,
    PresentationSettings,
    UnreadableImage,
    encode,
    encoded_length,
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


def test_an_all_black_image_is_presented_as_black_inside_the_fixed_rim():
    field = find_field(np.zeros((50, 70, 3), np.uint8))
    assert not field.bordered
    shown = np.asarray(present(np.zeros((50, 70, 3), np.uint8), 32))
    assert shown[outside_disc(32)].max() == 0 and shown.max() == RIM_LEVEL
    assert shown[16, 16].max() == 0  # the centre keeps its own (black) pixels


def varied_images() -> list:
    """Frames as different as a study holds: bordered, plain, dark, bright, a dark lumen at the rim, clipped."""
    dark_rim = bordered_frame(seed=2)
    ImageDraw.Draw(dark_rim).ellipse([40, 60, 110, 130], fill=(4, 2, 2))  # lumen touching the field's edge
    clipped = Image.new("RGB", (240, 184), (2, 2, 2))
    mask = Image.new("L", clipped.size, 0)
    ImageDraw.Draw(mask).ellipse([25, -20, 215, 204], fill=255)
    clipped.paste(Image.fromarray(textured(clipped.size, 7)), mask=mask)
    smooth = Image.fromarray(textured((96, 96), seed=9)).filter(ImageFilter.GaussianBlur(6))
    return [bordered_frame(seed=0), dark_rim, clipped, smooth, Image.fromarray(textured((64, 80), seed=4)),
            Image.new("RGB", (50, 50), (0, 0, 0)), Image.new("RGB", (300, 200), (255, 255, 255)),
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8))]


@pytest.mark.parametrize("size", [64, 256])
def test_every_presented_file_has_the_same_byte_length_whatever_its_content(size):
    lengths = {len(encode(present(image, size))) for image in varied_images()}
    assert lengths == {encoded_length(size, size)}


def test_every_presented_file_shows_the_same_field_whatever_its_content():
    from review.audit import image_cues

    size = 128
    outside = outside_disc(size)
    frame = round(FRAME_FRACTION * size)
    rows, cols = np.ogrid[:size, :size]
    distance = np.hypot(cols + 0.5 - size / 2, rows + 0.5 - size / 2)
    rim = ~outside & (distance > size / 2 - frame - 2 + 0.75)  # the 2 px rim (at 128 px), its edge included
    cues, rims = set(), set()
    for image in varied_images():
        data = encode(present(image, size))
        shown = np.asarray(Image.open(io.BytesIO(data)))
        assert shown[outside].max() == 0
        rims.add(shown[rim].tobytes())
        cues.add(image_cues(data, Image.open(io.BytesIO(data)))["field_fraction"])
    assert len(cues) == 1, cues  # the audit's own measure of the visible field
    assert len(rims) == 1  # the same outline, pixel for pixel


def test_sixteen_bit_and_float_images_are_shown_with_the_metrics_scaling(tmp_path):
    from evaluation.images import load_images

    ramp = np.tile(np.linspace(0, 65535, 96).astype(np.uint16), (96, 1))
    Image.fromarray(ramp).save(tmp_path / "wide.png")  # a 16-bit grey PNG
    Image.fromarray((ramp / 65535.0).astype(np.float32)).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "wide.png").mode.startswith("I")
    eight = Image.fromarray(np.round(ramp / 257).astype(np.uint8))
    for name in ("wide.png", "float.tif"):
        shown = np.asarray(Image.open(io.BytesIO(present_file(tmp_path / name, 64))))
        assert np.array_equal(shown, np.asarray(present(eight, 64))), name
        assert len(np.unique(shown[..., 0])) > 40, name  # not 17 grey levels, not black
    metric = load_images([tmp_path / "wide.png", tmp_path / "float.tif"])
    assert np.array_equal(metric.images[0], metric.images[1])
    assert np.array_equal(metric.images[0][..., 0], np.asarray(eight))


def test_a_fifo_is_refused_without_being_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(UnreadableImage, match="pipe.png: a FIFO"):
        present_file(fifo, 64)  # would block forever if it were opened
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(UnreadableImage, match="loop.png: a symbolic link loop"):
        present_file(loop, 64)


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
