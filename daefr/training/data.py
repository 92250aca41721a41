"""Face folders for training: clean faces resized to the model resolution, each paired with
its degraded copy (paper Eq. 8).

Degradation randomness is a pure function of (seed, epoch, index), not of worker processes
or iteration history, so a resumed run draws exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from daefr.degradation import DegradationConfig, random_degrade
from daefr.image_io import IMAGE_SUFFIXES, ImageReadError, images_in_folder, read_image

log = logging.getLogger(__name__)


class DataError(ValueError):
    """A data folder or image that cannot be used; the message names it."""


def list_images(folder: str | Path) -> list[Path]:
    """Regular image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    return images_in_folder(folder)


def read_rgb(path: Path) -> np.ndarray:
    """-> (H, W, 3) float32 RGB in [0, 1] (read by ``daefr.image_io``: upright, any mode);
    DataError names the file if it cannot be read."""
    try:
        return read_image(path).astype(np.float32) / 255.0
    except ImageReadError as err:
        raise DataError(str(err)) from err


def resize_crop(image: np.ndarray, resolution: int) -> np.ndarray:
    """Resize the shorter side to ``resolution`` (bicubic), then centre-crop a square."""
    h, w = image.shape[:2]
    if (h, w) == (resolution, resolution):
        return image
    ratio = resolution / min(h, w)
    size = (max(resolution, round(w * ratio)), max(resolution, round(h * ratio)))
    img = Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)).resize(
        size, Image.Resampling.BICUBIC
    )
    top, left = (size[1] - resolution) // 2, (size[0] - resolution) // 2
    return np.asarray(img, dtype=np.float32)[top : top + resolution, left : left + resolution] / 255.0


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1) * 2 - 1


class FaceFolder(Dataset):
    """Items: ``{"hq": (3, R, R), "lq": (3, R, R)}`` float32 in [-1, 1].

    ``hq`` is the face resized/cropped to R (flipped horizontally with probability 0.5 when
    ``hflip``), ``lq`` its degraded copy drawn with ``np.random.default_rng([seed, epoch, i])``.
    """

    def __init__(
        self,
        folder: str | Path,
        resolution: int,
        degradation: DegradationConfig,
        seed: int = 0,
        hflip: bool = True,
    ) -> None:
        self.paths = list_images(folder)
        if not self.paths:
            raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
        self.resolution = resolution
        self.degradation = degradation
        self.seed = seed
        self.hflip = hflip
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        hq = resize_crop(self._read_readable(index), self.resolution)
        if self.hflip and rng.random() < 0.5:
            hq = hq[:, ::-1]
        lq = random_degrade(hq, self.degradation, rng).image
        return {"hq": to_tensor(hq), "lq": to_tensor(lq)}

    def _read_readable(self, index: int) -> np.ndarray:
        """The image at ``index``, or (an unreadable file is skipped, with one warning line)
        the next readable one: a pure function of ``index``, so resuming stays exact."""
        for step in range(len(self.paths)):
            path = self.paths[(index + step) % len(self.paths)]
            try:
                return read_rgb(path)
            except DataError as err:
                log.warning("skipped %s", err)
        raise DataError(f"{len(self.paths)} images and none of them is readable")


class _SkipSampler(Sampler[int]):
    """The first ``skip`` indices of ``sampler`` left out: resuming in the middle of an epoch."""

    def __init__(self, sampler: Sampler[int], skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler) - self.skip  # type: ignore[arg-type]


def steps_per_epoch(dataset: FaceFolder, batch_size: int, world_size: int) -> int:
    return (len(dataset) // world_size) // batch_size


def batches(
    dataset: FaceFolder,
    batch_size: int,
    start_step: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches for steps ``start_step, start_step + 1, ...``; each rank gets its own
    shard (``DistributedSampler``, reshuffled per epoch with the dataset's seed)."""
    per_epoch = steps_per_epoch(dataset, batch_size, world_size)
    if per_epoch < 1:
        raise DataError(
            f"{len(dataset)} images cannot fill one batch of {batch_size} on {world_size} process(es); "
            "add images or lower --batch-size"
        )
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        dataset.epoch = epoch  # read by worker processes, which are created per epoch
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=dataset.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=_SkipSampler(sampler, skip * batch_size),
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=True,
            # its own generator: worker seeds must not consume (and so depend on) the global RNG
            generator=torch.Generator().manual_seed(dataset.seed * 100_003 + epoch),
        )
        try:
            yield from loader
        except DataError as err:  # from a worker process: torch adds the worker's traceback
            raise DataError(_last_line(str(err))) from None
        epoch, skip = epoch + 1, 0


def _last_line(message: str) -> str:
    """The original error of a DataLoader worker's message ("...\nmodule.DataError: text")."""
    last = [line for line in message.splitlines() if line.strip()][-1]
    prefix = f"{DataError.__module__}.{DataError.__qualname__}: "
    return last.removeprefix(prefix).removeprefix("DataError: ")
