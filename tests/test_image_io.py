"""The image input layer: regular files only, bombs skipped, every PIL mode by its real range,
EXIF orientation applied (and so kept on output). Images are made by the tests."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from PIL import Image

from daefr.image_io import ImageReadError, list_images, read_image, to_rgb8


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 64, 128, 255]


def test_float_tiff_in_0_1_is_not_black(tmp_path):
    values = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    path = tmp_path / "f.tif"
    Image.fromarray(values, mode="F").save(path)
    assert read_image(path)[0, :, 1].tolist() == [0, 64, 128, 255]


def test_float_tiff_with_nan_is_an_error(tmp_path):
    path = tmp_path / "nan.tif"
    Image.fromarray(np.array([[np.nan, 1.0]], dtype=np.float32), mode="F").save(path)
    with pytest.raises(ImageReadError, match="NaN"):
        read_image(path)


@pytest.mark.parametrize(
    ("mode", "pixel", "expected"),
    [
        ("L", 100, (100, 100, 100)),
        ("1", 1, (255, 255, 255)),
        ("RGBA", (200, 100, 50, 255), (200, 100, 50)),
        ("RGBA", (0, 0, 0, 0), (255, 255, 255)),  # fully transparent: the white it is shown on
        ("LA", (0, 128), (127, 127, 127)),
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("I", 65535, (255, 255, 255)),
        ("I", 200, (200, 200, 200)),
        ("YCbCr", (255, 128, 128), (255, 255, 255)),
    ],
)
def test_modes_become_8_bit_rgb_by_their_range(mode, pixel, expected):
    img = Image.new(mode, (2, 2), pixel)
    rgb = to_rgb8(img)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb[0, 0].astype(int) - np.array(expected)).max() <= 1


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 1
    path = tmp_path / "p.png"
    img.save(path, transparency=1)
    rgb = read_image(path)
    assert rgb[0, 0].tolist() == [255, 0, 0] and rgb[0, 1].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied(tmp_path):
    """A 4x2 stored image with orientation 6 (rotate 90 clockwise to view) reads as 2x4."""
    stored = np.zeros((2, 4, 3), np.uint8)
    stored[0, 0] = 255  # top-left when stored -> top-right when shown
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=100)
    rgb = read_image(path)
    assert rgb.shape[:2] == (4, 2)
    assert rgb[0, 1].mean() > 150 and rgb[0, 0].mean() < 100


def test_decompression_bomb_is_one_error(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (200, 200)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40,000 pixels > 2 x 100: PIL's error
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)  # between 1x and 2x: PIL only warns
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_image(path)


def test_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    Image.new("RGB", (4, 4)).save(tmp_path / "real.png")
    assert list_images([tmp_path]) == [tmp_path / "real.png"]  # not listed from a folder
    result: list[BaseException] = []

    def read() -> None:
        try:
            read_image(fifo)
        except ImageReadError as err:
            result.append(err)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "reading a FIFO hung"
    assert result and "not a regular file" in str(result[0])


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n garbage", b"GIF89a\x01"])
def test_damaged_files_are_one_error(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="bad.png") as err:
        read_image(path)
    assert "\n" not in str(err.value)


def test_truncated_png_is_one_error(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(ImageReadError, match="cut.png"):
        read_image(path)
