"""The one image input layer (every command reads images here), and face tensors in and out.

Reading: only regular files (a FIFO or a device would block forever), decompression bombs
and undecodable files are one ``ImageReadError`` naming the file, the EXIF orientation is
applied (the array is the photo as a viewer shows it, and so is every output written from
it), and every mode PIL reads becomes 8-bit RGB by its real range: 16-bit and 32-bit
integer images are scaled down (not clipped), float images are read as [0, 1], palette and
alpha images are composited over white, CMYK/LAB through their ICC profile when they carry one.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from daefr.atomic import atomic_path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class ImageReadError(ValueError):
    """A file that is not a readable image; the message names it."""


def is_regular_file(path: Path) -> bool:
    """True for a regular file (after symlinks); FIFOs, sockets, devices and folders are not."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def images_in_folder(folder: Path) -> list[Path]:
    """The regular image files directly in ``folder``, sorted by name."""
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and is_regular_file(p)
    )


def list_images(inputs: Iterable[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); files are kept as given, once each.

    A named path that is missing or not a regular file stays in the list: ``read_image``
    turns it into the one-line error of that file.
    """
    found: list[Path] = []
    for path in inputs:
        found.extend(images_in_folder(path) if Path(path).is_dir() else [Path(path)])
    return list(dict.fromkeys(found))


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, upright; ``ImageReadError`` naming the file if it cannot be used."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if not is_regular_file(path):
        raise ImageReadError(f"{path}: not a regular file (a folder, FIFO or device); skipped")
    try:
        with warnings.catch_warnings(record=True) as said:
            # Between MAX_IMAGE_PIXELS and twice that PIL only warns; both are refused here.
            # PIL's other warnings on damaged files ("Truncated File Read") are for the debug
            # log: the user gets one line, the error, or nothing.
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                with Image.open(path) as img:
                    img.load()
                    return to_rgb8(ImageOps.exif_transpose(img), name=str(path))
            finally:
                for w in said:
                    log.debug("%s: %s", path, w.message)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageReadError(f"{path}: refused, too many pixels for an image ({err})") from err
    except ImageReadError:
        raise
    except Exception as err:  # noqa: BLE001 - decoding untrusted bytes: any decoder failure is this file's
        # PIL raises UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error,
        # ZeroDivisionError... for damaged files; all of them mean "skip this file" to the user.
        raise ImageReadError(f"{path}: not a readable image ({type(err).__name__}: {err})") from err


# Backwards-compatible name: the photo/face CLIs import ``read_rgb``.
read_rgb = read_image


def to_rgb8(img: Image.Image, name: str = "image") -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8 RGB by the mode's real value range."""
    mode = img.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        gray = _gray_to_8bit(np.asarray(img), mode, name)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.info.get("icc_profile") and mode in ("CMYK", "LAB", "RGB", "YCbCr"):
        img = _to_srgb(img, name)
        mode = img.mode
    if mode == "P" or mode == "1":
        img = img.convert("RGBA") if mode == "P" else img.convert("L")
        mode = img.mode
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        if rgba.getextrema()[3][0] < 255:
            log.info("%s: transparent pixels composited over white", name)
        img = Image.alpha_composite(white, rgba)
    try:
        rgb = img.convert("RGB")
    except ValueError as err:
        raise ImageReadError(f"{name}: PIL cannot convert mode {mode} to RGB ({err})") from err
    return np.asarray(rgb, dtype=np.uint8).copy()


def _gray_to_8bit(values: np.ndarray, mode: str, name: str) -> np.ndarray:
    """16/32-bit integer or float grey -> uint8. Integers: 16-bit range (0..65535) unless the
    values all fit 8 bits; floats: [0, 1] (a float image beyond it is scaled by its range)."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise ImageReadError(f"{name}: a float image with NaN or Inf pixels")
    if mode == "F":
        lo, hi = float(values.min()), float(values.max())
        if lo < 0 or hi > 1:
            log.warning("%s: float pixels span [%g, %g], not [0, 1]; scaled by that range", name, lo, hi)
            values = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        scaled = values * 255
    elif mode.startswith("I;16") or values.max() > 255:
        if values.min() < 0 or values.max() > 65535:
            lo, hi = float(values.min()), float(values.max())
            log.warning("%s: 32-bit pixels span [%g, %g]; scaled by that range", name, lo, hi)
            scaled = (values - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(values)
        else:
            scaled = values / 257
    else:
        scaled = values
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_srgb(img: Image.Image, name: str) -> Image.Image:
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        out_mode = "RGBA" if "A" in img.mode else "RGB"
        return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as err:
        log.warning("%s: its ICC profile could not be applied (%s); converting without it", name, err)
        return img


def rgb_to_tensor(rgb: np.ndarray, resolution: int, name: str = "image") -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, R, R) float32 in [-1, 1]; other sizes are resized with a warning."""
    if rgb.shape[:2] != (resolution, resolution):
        log.warning(
            "%s is %dx%d, not an aligned %dx%d face; resizing (results are best on aligned faces)",
            name,
            rgb.shape[1],
            rgb.shape[0],
            resolution,
            resolution,
        )
        rgb = np.array(Image.fromarray(rgb).resize((resolution, resolution), Image.BICUBIC))  # writable
    return torch.from_numpy(np.require(rgb, requirements="W")).permute(2, 0, 1).float() / 127.5 - 1.0


def tensor_to_rgb(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in about [-1, 1] -> (H, W, 3) uint8 (clamped here, not in the model)."""
    scaled = (image.detach().float().clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write atomically; the format follows the suffix. The pixels are upright (``read_image``
    applied the orientation), so no orientation tag is written."""
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
