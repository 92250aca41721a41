"""The served ``daefr`` model: one input ``lq_image``, outputs ``restored`` and ``code_idx``.

Triton itself rejects wrong dtypes, dims and batches over ``max_batch_size`` before they reach
us; this module rejects what Triton cannot see (non-finite or out-of-range values) and turns a
backend failure into an error response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from daefr.runtime.backends.base import BackendError, Restorer

log = logging.getLogger(__name__)

MODEL_NAME = "daefr"
INPUT_NAME = "lq_image"
OUTPUT_NAMES = ("restored", "code_idx")
# Inputs are images in [-1, 1]; a little slack for rounding by the client's own normalisation.
RANGE_SLACK = 1e-3


class BadRequest(ValueError):
    """A request Triton accepted but the restorer must not run (NaN, values out of range)."""


@dataclass(frozen=True)
class ModelSpec:
    """Per-sample shapes of the served tensors (Triton adds the batch dimension).

    lq_image / restored: (3, R, R) float32; code_idx: (N,) int64, N = tokens per face.
    """

    resolution: int
    tokens: int

    def __post_init__(self) -> None:
        if self.resolution < 1 or self.tokens < 1:
            raise ValueError(f"ModelSpec: resolution={self.resolution} and tokens={self.tokens} must be >= 1")


def probe_spec(restorer: Restorer) -> ModelSpec:
    """Run one zero face through ``restorer``: its token count N, and a warm first call."""
    r = restorer.resolution
    try:
        _, code_idx = restorer.restore(torch.zeros(1, 3, r, r))
    except Exception as err:  # a backend that loads but cannot run: say so before serving
        raise BackendError(f"{restorer.name} backend failed on a first zero face: {err}") from err
    return ModelSpec(resolution=r, tokens=int(code_idx.shape[1]))


def check_lq_image(x: np.ndarray, spec: ModelSpec) -> None:
    """BadRequest unless ``x`` is (B, 3, R, R) float32, finite, in [-1, 1]."""
    want = (3, spec.resolution, spec.resolution)
    if x.ndim != 4 or x.shape[1:] != want or x.dtype != np.float32:
        raise BadRequest(f"{INPUT_NAME}: expected float32 (B, 3, {spec.resolution}, {spec.resolution}), "
                         f"got {x.dtype} {tuple(x.shape)}")  # fmt: skip
    if not np.isfinite(x).all():
        raise BadRequest(f"{INPUT_NAME}: {int((~np.isfinite(x)).sum())} NaN/inf values; send finite pixels")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1 - RANGE_SLACK or hi > 1 + RANGE_SLACK:
        raise BadRequest(
            f"{INPUT_NAME}: values in [{lo:.3g}, {hi:.3g}]; scale pixels to [-1, 1] (x / 127.5 - 1)"
        )


def make_infer_func(
    restorer: Restorer, spec: ModelSpec
) -> Callable[[Sequence[Any]], list[dict[str, np.ndarray]]]:
    """The PyTriton callable: the requests of one dynamic batch -> one response dict each.

    Every request is checked first, then all are restored in one ``restore`` call. PyTriton
    answers a raised error for the whole batch, so a bad request also fails the requests that
    the batcher grouped with it (clients may retry those).
    """

    def infer(requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        images = [np.asarray(req[INPUT_NAME]) for req in requests]
        for x in images:
            check_lq_image(x, spec)
        sizes = [x.shape[0] for x in images]
        batch = torch.from_numpy(np.ascontiguousarray(np.concatenate(images)))  # (B, 3, R, R)
        start = time.perf_counter()
        try:
            restored, code_idx = restorer.restore(batch)
        except Exception as err:  # any backend failure becomes this batch's error response
            log.exception("%s backend failed on a batch of %d", restorer.name, batch.shape[0])
            raise RuntimeError(
                f"{restorer.name} backend failed on a batch of {batch.shape[0]}: {err}"
            ) from err
        log.debug("restored %d faces in %d requests in %.1f ms", batch.shape[0], len(requests),
                  1e3 * (time.perf_counter() - start))  # fmt: skip
        restored_np = restored.detach().float().cpu().numpy()  # (B, 3, R, R)
        codes_np = code_idx.detach().to(torch.int64).cpu().numpy()  # (B, N)
        out, at = [], 0
        for b in sizes:
            out.append({"restored": restored_np[at : at + b], "code_idx": codes_np[at : at + b]})
            at += b
        return out

    return infer


# ---- the optional whole-frame model: uint8 frames in, every face restored and pasted back ----

FRAME_MODEL_NAME = "daefr_frame"
FRAME_INPUT, FRAME_OUTPUT = "frame", "restored_frame"
MAX_FRAME_SIDE = 8192  # a 16K-by-16K frame is a mistake or an attack, not a photo


def check_frame(x: np.ndarray) -> None:
    """BadRequest unless ``x`` is one (H, W, 3) uint8 RGB frame with 1 <= H, W <= MAX_FRAME_SIDE."""
    if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
        raise BadRequest(f"{FRAME_INPUT}: expected uint8 (H, W, 3) RGB, got {x.dtype} {tuple(x.shape)}")
    if not (1 <= x.shape[0] <= MAX_FRAME_SIDE and 1 <= x.shape[1] <= MAX_FRAME_SIDE):
        raise BadRequest(f"{FRAME_INPUT}: {x.shape[1]}x{x.shape[0]}; sides must be 1..{MAX_FRAME_SIDE}")


def make_frame_infer_func(
    restorer: Restorer, detector: Any
) -> Callable[[Sequence[Any]], list[dict[str, np.ndarray]]]:
    """The PyTriton callable of ``daefr_frame`` (no batching: frames differ in size).

    frame (H, W, 3) uint8 RGB -> restored_frame (H, W, 3) uint8: every detected face restored
    and pasted back (``runtime/photo.py``); a frame without faces comes back unchanged.
    """
    from daefr.runtime.photo import restore_photo

    def infer(requests: Sequence[Any]) -> list[dict[str, np.ndarray]]:
        frames = [np.asarray(req[FRAME_INPUT]) for req in requests]
        for x in frames:
            check_frame(x)
        try:
            return [
                {FRAME_OUTPUT: restore_photo(np.ascontiguousarray(x), restorer, detector)} for x in frames
            ]
        except Exception as err:  # detector or backend: this request's error response
            log.exception("frame restoration failed")
            raise RuntimeError(f"{restorer.name} backend: frame restoration failed: {err}") from err

    return infer
