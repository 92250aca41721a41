"""Folders of images, input path -> output path: aligned faces in batches, or whole photos.

The one implementation behind ``daefr-restore`` and its Ray actors (``runtime/ray_jobs.py``),
so both write the same bytes. Unreadable inputs are skipped and reported, never fatal.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from tqdm import tqdm

from daefr.image_io import ImageReadError, read_image, rgb_to_tensor, tensor_to_rgb, write_rgb
from daefr.runtime.backends.base import Restorer
from daefr.runtime.photo import restore_photo

log = logging.getLogger(__name__)


def restore_face_files(restorer: Restorer, outputs: dict[Path, Path], batch_size: int) -> list[str]:
    """Restore every readable file (input -> output path); returns one message per file that failed."""
    resolution = restorer.resolution
    failures: list[str] = []
    paths = list(outputs)
    progress = tqdm(total=len(paths), unit="face", desc="restoring", disable=None)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        names, images = [], []
        for path in chunk:
            try:
                images.append(rgb_to_tensor(read_image(path), resolution, name=str(path)))
                names.append(path)
            except ImageReadError as err:
                failures.append(str(err))
                log.error("skipped %s", err)
        if images:
            restored_batch, _ = restorer.restore(torch.stack(images))  # NaN/Inf refused there
            for path, restored in zip(names, restored_batch.cpu(), strict=True):
                write_rgb(outputs[path], tensor_to_rgb(restored))
        progress.update(len(chunk))
    progress.close()
    return failures


def restore_photo_files(
    restorer: Restorer, outputs: dict[Path, Path], batch_size: int, det_max_side: int
) -> list[str]:
    """Whole photos: every detected face restored and pasted back; one message per failure."""
    from daefr.runtime.face.detector import RetinaFaceDetector  # loads its weights: only when used

    detector = RetinaFaceDetector(max_side=det_max_side)
    failures: list[str] = []
    for path in tqdm(list(outputs), unit="photo", desc="restoring", disable=None):
        try:
            rgb = read_image(path)
        except ImageReadError as err:
            failures.append(str(err))
            log.error("skipped %s", err)
            continue
        write_rgb(outputs[path], restore_photo(rgb, restorer, detector, batch_size))
    return failures
