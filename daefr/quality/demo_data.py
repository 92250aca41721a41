"""Faces for the tiny IQPFR run (tests and ``scripts/iqp_tiny.py``): public-domain portraits
that ship in registry packages, as clean crops and as *imperfect ground truth* (blurred and
noisy copies, which score lower), plus held-out degraded faces from other crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from daefr.degradation import STAGE_DEGRADATIONS, random_degrade
from daefr.training.data import resize_crop, to_tensor

TRAIN_CROPS = ((20, 150, 200), (40, 170, 160), (10, 140, 220), (30, 160, 180))  # (top, left, size)
HELD_OUT_CROPS = ((0, 130, 240), (50, 180, 150), (25, 145, 190), (15, 165, 170))


def _crops(crops: tuple[tuple[int, int, int], ...]) -> list[np.ndarray]:
    from skimage import data  # the report extra; only tests and the demo script need it

    astronaut = data.astronaut()
    return [astronaut[t : t + s, x : x + s] for t, x, s in crops]


def write_training_faces(folder: Path) -> list[Path]:
    """Clean, blurred (radius 1.5) and noisy (sigma 20/255) copies of the training crops."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, crop in enumerate(_crops(TRAIN_CROPS)):
        img = Image.fromarray(crop).resize((64, 64), Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(img, np.float32) + rng.normal(0, 20, (64, 64, 3)), 0, 255)
        variants = {
            "clean": img,
            "blur": img.filter(ImageFilter.GaussianBlur(1.5)),
            "noise": Image.fromarray(noisy.astype(np.uint8)),
        }
        for name, variant in variants.items():
            path = folder / f"face{i}_{name}.png"
            variant.save(path)
            paths.append(path)
    return paths


def held_out_degraded(resolution: int = 64, seed: int = 123) -> torch.Tensor:
    """(B, 3, R, R) in [-1, 1]: other crops, degraded with the fusion stage's degradations."""
    rng = np.random.default_rng(seed)
    faces = []
    for crop in _crops(HELD_OUT_CROPS):
        clean = resize_crop(crop.astype(np.float32) / 255.0, resolution)
        faces.append(to_tensor(random_degrade(clean, STAGE_DEGRADATIONS["fusion"], rng).image))
    return torch.stack(faces)
