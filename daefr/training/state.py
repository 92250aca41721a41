"""Training checkpoints: everything a run needs to continue exactly where it stopped.

One ``torch.save`` dict, written atomically (temp file + rename), read back with the
same restricted unpickler as weights files (``daefr.checkpoint.read_torch_file``: tensors,
numbers, strings, lists, tuples, dicts; nothing that could run code):

    format   "daefr-train-1"
    stage    "codebook" | "association" | "fusion"
    step     completed optimizer steps
    preset   model preset name ("official", "tiny")
    config   the TrainConfig as a dict (informative)
    models   {name: state_dict}, e.g. "hq", "lq", "hq_disc", "lq_disc", "fixed_hq", "daefr"
    optimizers {name: optimizer state_dict}
    scaler   GradScaler state_dict (fp16 AMP; empty otherwise)
    rng      torch, CUDA, numpy and Python RNG states
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daefr.atomic import atomic_path
from daefr.checkpoint import CheckpointError, read_torch_file
from daefr.training.config import TrainConfig

log = logging.getLogger(__name__)

FORMAT = "daefr-train-1"


class TrainingCheckpointError(ValueError):
    """A training checkpoint that cannot be used here; names the file and the reason."""


def _numpy_state() -> tuple[str, torch.Tensor, int, int, float]:
    # numpy's key as a tensor: weights_only loading refuses numpy arrays.
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return name, torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(cached)


class NotATrainingCheckpoint(TrainingCheckpointError):
    """The file is readable weights of another kind (e.g. released DAEFR weights) or not a
    checkpoint at all."""


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    *,
    config: TrainConfig,
    step: int,
    models: dict[str, dict[str, torch.Tensor]],
    optimizers: dict[str, dict[str, Any]],
    scaler: dict[str, Any],
) -> int:
    """Write atomically; returns the file size in bytes."""
    payload = {
        "format": FORMAT,
        "stage": config.stage,
        "step": step,
        "preset": config.preset,
        "config": dataclasses.asdict(config),
        "models": models,
        "optimizers": optimizers,
        "scaler": scaler,
        "rng": capture_rng(),
    }
    start = time.perf_counter()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    size = Path(path).stat().st_size
    log.info("saved %s (step %d, %.1f MB) in %.2f s", path, step, size / 1e6, time.perf_counter() - start)
    return size


def is_training_checkpoint(obj: object) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(
    path: str | Path, stages: tuple[str, ...] | None = None, preset: str | None = None
) -> dict:
    """Read a training checkpoint, checking its format and, when given, stage and preset."""
    path = Path(path)
    if not path.is_file():
        raise TrainingCheckpointError(f"{path}: no such file")
    try:
        payload = read_torch_file(path)
    except CheckpointError as err:  # already one line naming the file
        raise NotATrainingCheckpoint(f"{err} (reading it as a training checkpoint)") from err
    if not is_training_checkpoint(payload):
        raise NotATrainingCheckpoint(f"{path}: not a daefr-train checkpoint (no format {FORMAT!r})")
    if stages is not None and payload["stage"] not in stages:
        raise TrainingCheckpointError(
            f"{path}: a {payload['stage']!r} checkpoint; expected one of {', '.join(stages)}"
        )
    if preset is not None and payload["preset"] != preset:
        raise TrainingCheckpointError(f"{path}: made with preset {payload['preset']!r}, not {preset!r}")
    return payload
