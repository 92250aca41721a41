"""The step loop shared by the three stages: batches, one ``train_step`` per step, loss
logging, periodic atomic checkpoints, resume.

A stage is any object with

- ``models() -> {name: state_dict}`` and ``optimizers -> {name: Optimizer}`` and ``scaler``,
- ``load_training_state(payload)`` (resume: weights, optimizer and scaler states),
- ``prepare_distributed()`` (wrap trainable modules in DDP once weights are final),
- ``train_step(batch, step) -> {name: float}`` with at least ``"loss"``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from daefr.training.config import TrainConfig
from daefr.training.data import FaceFolder, batches
from daefr.training.distributed import DistContext, barrier
from daefr.training.metrics import MetricsLogger
from daefr.training.state import restore_rng, save_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


class TrainingError(RuntimeError):
    """Training cannot go on (for example a non-finite loss); names the step."""


class Stage(Protocol):
    optimizers: dict[str, torch.optim.Optimizer]
    scaler: torch.amp.GradScaler

    def models(self) -> dict[str, dict[str, torch.Tensor]]: ...
    def load_training_state(self, payload: dict[str, Any]) -> None: ...
    def prepare_distributed(self) -> None: ...
    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]: ...


def non_finite_tensors(models: dict[str, dict[str, torch.Tensor]]) -> list[str]:
    """``model.key`` of every floating tensor holding NaN or Inf."""
    return [
        f"{name}.{key}"
        for name, state in models.items()
        for key, value in state.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def _kept(path: Path) -> str:
    return f"{path} was not overwritten" if path.exists() else f"nothing was written to {path}"


def check_finite_weights(
    models: dict[str, dict[str, torch.Tensor]], cfg: TrainConfig, step: int, path: Path
) -> None:
    """TrainingError if a weight is NaN or Inf (every rank checks: the weights are in sync)."""
    bad = non_finite_tensors(models)
    if bad:
        raise TrainingError(
            f"{cfg.stage} step {step}: {len(bad)} weight tensors became non-finite (first: {bad[0]}); "
            f"{_kept(path)}; lower --base-lr or check the data"
        )


def save_stage(stage: Stage, cfg: TrainConfig, step: int, path: Path) -> int:
    """Checkpoint the stage (``run`` checks the weights are finite first, on every rank)."""
    return save_checkpoint(
        path,
        config=cfg,
        step=step,
        models=stage.models(),
        optimizers={k: o.state_dict() for k, o in stage.optimizers.items()},
        scaler=stage.scaler.state_dict(),
    )


def resume(stage: Stage, payload: dict[str, Any]) -> int:
    """Load a checkpoint's weights, optimizer, scaler and RNG states; returns its step."""
    stage.load_training_state(payload)
    restore_rng(payload["rng"])
    return int(payload["step"])


def run(
    stage: Stage,
    cfg: TrainConfig,
    dataset: FaceFolder,
    out_dir: str | Path,
    *,
    device: torch.device,
    ctx: DistContext | None = None,
    start_step: int = 0,
    metrics: MetricsLogger | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, float] | None:
    """Train steps ``start_step .. cfg.steps - 1``; checkpoints go to ``out_dir/last.pt``
    (rank 0). Returns this process's last logs (None when no step was left); the full
    history is in the metrics log, not in memory (700K steps would not fit)."""
    out_dir = Path(out_dir)
    ctx = ctx or DistContext()
    stage.prepare_distributed()
    data = batches(
        dataset,
        cfg.batch_size,
        start_step,
        rank=ctx.rank,
        world_size=ctx.world_size,
        num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda",
    )
    last: dict[str, float] | None = None
    tic = time.perf_counter()
    for step in range(start_step, cfg.steps):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(data).items()}
        logs = stage.train_step(batch, step)
        done = step + 1
        bad = [k for k, v in logs.items() if not math.isfinite(v)]
        if bad:
            raise TrainingError(
                f"{cfg.stage} step {done}: non-finite {', '.join(bad[:4])}; "
                f"{_kept(out_dir / CHECKPOINT_NAME)}; lower --base-lr or use --amp off"
            )
        last = {"step": done, **logs}
        if metrics is not None:
            metrics.log(done, logs)
        if on_step is not None:
            on_step(done, logs)
        if done % cfg.log_every == 0:
            rate = (time.perf_counter() - tic) / cfg.log_every
            log.info("%s step %d/%d loss %.4f (%.3f s/step)", cfg.stage, done, cfg.steps, logs["loss"], rate)
            tic = time.perf_counter()
        if done % cfg.save_every == 0 or done == cfg.steps:
            check_finite_weights(stage.models(), cfg, done, out_dir / CHECKPOINT_NAME)
            if ctx.is_main:
                save_stage(stage, cfg, done, out_dir / CHECKPOINT_NAME)
            barrier(ctx)
    return last
