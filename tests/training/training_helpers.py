"""Helpers of the training tests: face crops of the public-domain portraits that ship in
registry packages (scikit-image's astronaut, Eileen Collins; matplotlib's Grace Hopper when
matplotlib is installed) and small tiny-preset configs. A uniquely named module: other test
folders have their own helpers, and ``conftest`` is not importable by name."""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage import data

from daefr.training.config import TrainConfig, stage_config

# (top, left, size) of face crops
ASTRONAUT_CROPS = ((20, 150, 200), (40, 170, 160), (10, 140, 220))
GRACE_HOPPER_CROPS = ((90, 150, 230), (120, 180, 180))


def face_images() -> list[np.ndarray]:
    """(H, W, 3) uint8 face crops."""
    astronaut = data.astronaut()
    crops = [astronaut[t : t + s, x : x + s] for t, x, s in ASTRONAUT_CROPS]
    try:
        from matplotlib import cbook
    except ImportError:
        return crops
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        grace = np.asarray(img.convert("RGB"))
    return crops + [grace[t : t + s, x : x + s] for t, x, s in GRACE_HOPPER_CROPS]


def tiny_config(stage: str, **overrides: object) -> TrainConfig:
    """Tiny preset on the CPU: batch 2, no loader workers, no perceptual weights, no GAN
    unless a test turns it on; higher base lr so that a dozen steps show progress."""
    loss = {} if stage == "fusion" else {"perceptual_weight": 0.0, "disc_start": 10**6}
    loss.update(overrides.pop("loss", {}))  # type: ignore[arg-type]
    settings: dict[str, object] = {
        "preset": "tiny",
        "batch_size": 2,
        "num_workers": 0,
        "base_lr": 1e-4,
        "steps": 4,
        "log_every": 1,
    }
    settings.update(overrides)
    return stage_config(stage, loss=loss or None, **settings)
