"""Whole (unaligned) photos: detect every face, align, restore in batches, paste back."""

from __future__ import annotations

import logging

import numpy as np
import torch

from daefr.runtime.backends.base import Restorer
from daefr.runtime.face.align import align_matrix, batch_to_crops, crops_to_batch, paste_faces, warp_faces
from daefr.runtime.face.detector import Face, FaceDetector

log = logging.getLogger(__name__)


def restore_crops(restorer: Restorer, crops: np.ndarray, batch_size: int) -> np.ndarray:
    """Aligned crops (F, R, R, 3) uint8 -> restored crops (F, R, R, 3) uint8, ``batch_size`` at a time."""
    out = np.empty_like(crops)
    for start in range(0, len(crops), batch_size):
        restored, _ = restorer.restore(crops_to_batch(crops[start : start + batch_size], restorer.device))
        out[start : start + batch_size] = batch_to_crops(restored)
    return out


def restore_faces(
    image: np.ndarray, faces: list[Face], restorer: Restorer, batch_size: int = 8
) -> np.ndarray:
    """Restore the given ``faces`` of ``image`` (H, W, 3) uint8 RGB -> a new image."""
    if not faces:
        return image.copy()
    matrices = [align_matrix(f.landmarks, restorer.resolution) for f in faces]
    crops = warp_faces(image, matrices, restorer.resolution)
    with torch.inference_mode():
        restored = restore_crops(restorer, crops, batch_size)
    return paste_faces(image, restored, matrices)


def restore_photo(
    image_rgb_uint8: np.ndarray, restorer: Restorer, detector: FaceDetector, batch_size: int = 8
) -> np.ndarray:
    """image (H, W, 3) uint8 RGB -> the same image with every detected face restored.

    An image without faces comes back unchanged (as a copy).
    """
    if image_rgb_uint8.ndim != 3 or image_rgb_uint8.shape[2] != 3 or image_rgb_uint8.dtype != np.uint8:
        raise ValueError(
            f"restore_photo: expected (H, W, 3) uint8 RGB, got {image_rgb_uint8.shape} {image_rgb_uint8.dtype}"
        )
    faces = detector.detect(image_rgb_uint8)
    log.info("%d face(s) found", len(faces))
    return restore_faces(image_rgb_uint8, faces, restorer, batch_size)
