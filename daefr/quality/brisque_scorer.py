"""BRISQUE through the ``brisque`` package (its SVM model ships in the wheel: offline).

BRISQUE's raw value is about 0 (pristine) to 100 (badly distorted), sometimes a little outside;
the score here is ``clip(1 - raw / 100, 0, 1)`` so that higher is better, as the issue's
[0, 1] scale wants. It runs on numpy per image and is **not differentiable**: training uses it
only as a reward in the discrete code space (``daefr.training.iqp_fusion``).
"""

from __future__ import annotations

import logging
import warnings

import cv2
import numpy as np
import torch
from skimage.color import rgb2gray

from daefr.quality.scorer import ScorerError, check_images

log = logging.getLogger(__name__)

RAW_SCALE = 100.0  # BRISQUE's nominal range is 0..100


def raw_to_score(raw: float) -> float:
    """BRISQUE raw (0 best .. 100 worst) -> score in [0, 1], higher is better. NaN -> 0."""
    if not np.isfinite(raw):
        return 0.0
    return float(np.clip(1.0 - raw / RAW_SCALE, 0.0, 1.0))


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) uint8 (what the package reads)."""
    rgb = ((image.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(rgb.permute(1, 2, 0).cpu().numpy())


class BrisqueScorer:
    name = "brisque"
    differentiable = False

    def __init__(self) -> None:
        try:
            from brisque import BRISQUE
        except ImportError as err:
            raise ScorerError(
                f"the 'brisque' package is not importable ({err}); pip install brisque==0.2.0"
            ) from err
        self._model = BRISQUE(url=False)

    def raw(self, image: torch.Tensor) -> float:
        """BRISQUE's own value of one (3, H, W) image in [-1, 1] (lower is better).

        The steps of ``BRISQUE.score`` (0.2.0), calling the package's own feature and SVM
        functions, except the flattening of the 36 features: the package returns some as
        shape-(1,) arrays, which its ``float(f)`` refuses under numpy >= 2.4 (TypeError, measured
        here with numpy 2.4.6); ``np.ravel`` of each makes the same 36 floats.
        """
        gray = rgb2gray(to_uint8_hwc(image))  # (H, W) float64 in [0, 1]
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
        with warnings.catch_warnings():  # flat images divide by zero inside the features
            warnings.simplefilter("ignore", RuntimeWarning)
            parts = [
                self._model.calculate_brisque_features(g, kernel_size=7, sigma=7 / 6) for g in (gray, half)
            ]
            features = np.concatenate([np.ravel(np.asarray(f, dtype=np.float64)) for p in parts for f in p])
            if not np.isfinite(features).all():
                return float("nan")
            return float(self._model.calculate_image_quality_score(features))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        return torch.tensor([raw_to_score(self.raw(img)) for img in images], dtype=torch.float32)
