"""Face images in and out: files <-> (3, R, R) float tensors in [-1, 1]."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from daefr.atomic import atomic_path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class ImageReadError(ValueError):
    """A file that is not a readable image."""


def list_images(inputs: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); files are kept as given."""
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; ``ImageReadError`` naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageReadError(f"{path}: not a readable image ({err})") from err


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
        rgb = np.asarray(Image.fromarray(rgb).resize((resolution, resolution), Image.BICUBIC))
    return torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0


def tensor_to_rgb(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in about [-1, 1] -> (H, W, 3) uint8 (clamped here, not in the model)."""
    scaled = (image.detach().float().clamp(-1, 1) + 1) * 127.5
    return scaled.round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write atomically; the format follows the suffix."""
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
