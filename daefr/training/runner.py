"""Run one stage end to end: data, model, ``--init`` / ``--resume``, the loop, final outputs.

Chaining: codebook -> ``last.pt`` -> association (``init``) -> ``last.pt`` -> fusion (``init``)
-> ``last.pt`` and ``daefr.pt`` (official DAEFR state_dict). The fusion stage can also start
from released DAEFR weights (a Lightning ``.ckpt`` or plain state_dict) to fine-tune.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from daefr.checkpoint import read_state_dict
from daefr.config import DAEFRConfig
from daefr.quality.scorer import QualityScorer
from daefr.training.branches import BranchStage
from daefr.training.config import RECIPES, TrainConfig
from daefr.training.data import FaceFolder
from daefr.training.distributed import DistContext, init_distributed
from daefr.training.fusion import FusionStage
from daefr.training.iqp_codebook import IQPCodebookStage
from daefr.training.iqp_common import IQPStage
from daefr.training.iqp_fusion import IQPFusionStage
from daefr.training.loop import CHECKPOINT_NAME, resume, run
from daefr.training.losses import LPIPS
from daefr.training.metrics import MetricsLogger
from daefr.training.state import NotATrainingCheckpoint, TrainingCheckpointError, load_checkpoint

log = logging.getLogger(__name__)

# Which checkpoints may start each stage (a stage may also continue from its own).
INIT_FROM: dict[str, tuple[str, ...]] = {
    "codebook": ("codebook",),
    "association": ("codebook", "association"),
    "fusion": ("association", "fusion"),
    "iqp-codebook": ("fusion", "iqp-codebook"),
    "iqp-fusion": ("iqp-codebook", "iqp-fusion"),
}
IQP_STAGE_CLASSES: dict[str, type[IQPStage]] = {
    "iqp-codebook": IQPCodebookStage,
    "iqp-fusion": IQPFusionStage,
}


@dataclass(frozen=True)
class TrainResult:
    """last: this process's logs of the last step (None if none was left to run); final:
    ``daefr.pt`` (fusion stage, rank 0) or None."""

    start_step: int
    step: int
    last: dict[str, float] | None
    checkpoint: Path
    final: Path | None


def build_stage(
    cfg: TrainConfig,
    model_cfg: DAEFRConfig,
    device: torch.device,
    ctx: DistContext | None = None,
    perceptual: LPIPS | None = None,
    scorer: QualityScorer | None = None,
) -> BranchStage | FusionStage | IQPStage:
    if cfg.stage in IQP_STAGE_CLASSES:
        return IQP_STAGE_CLASSES[cfg.stage](cfg, model_cfg, device, ctx, scorer)
    if cfg.stage == "fusion":
        return FusionStage(cfg, model_cfg, device, ctx)
    return BranchStage(cfg, model_cfg.vqgan, device, ctx, perceptual)


def apply_init(stage: BranchStage | FusionStage | IQPStage, cfg: TrainConfig, path: str | Path) -> None:
    """Load a previous stage's checkpoint (or, for fusion, released DAEFR weights)."""
    try:
        payload: dict[str, Any] = load_checkpoint(path, INIT_FROM[cfg.stage], cfg.preset)
    except NotATrainingCheckpoint:
        if not isinstance(stage, (FusionStage, IQPStage)):
            raise
        stage.init_from_official(read_state_dict(path), source=str(path))
        log.info("%s stage starts from DAEFR weights %s", cfg.stage, path)
        return
    stage.init_from(payload)
    log.info(
        "%s stage starts from the %s checkpoint %s (step %d)",
        cfg.stage,
        payload["stage"],
        path,
        payload["step"],
    )


def train(
    cfg: TrainConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    device: torch.device,
    init: str | Path | None = None,
    resume_from: str | Path | None = None,
    perceptual: LPIPS | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    tensorboard: bool = True,
    scorer: QualityScorer | None = None,
) -> TrainResult:
    """Train ``cfg.stage`` on the faces in ``data_dir``; outputs go to ``out_dir``."""
    ctx, device = init_distributed(device)
    model_cfg = DAEFRConfig.from_name(cfg.preset)
    dataset = FaceFolder(
        data_dir, model_cfg.vqgan.resolution, cfg.degradation, seed=cfg.seed, hflip=cfg.hflip
    )
    stage = build_stage(cfg, model_cfg, device, ctx, perceptual, scorer)
    start = 0
    if resume_from is not None:
        payload = load_checkpoint(resume_from, (cfg.stage,), cfg.preset)
        try:
            start = resume(stage, payload)
        except (ValueError, KeyError) as err:  # optimizer groups of another trainable set
            raise TrainingCheckpointError(
                f"{resume_from}: its optimizer state does not fit this run ({err}); it was made with "
                "other trainable parameters (e.g. --freeze-encoders) or another version: use --init"
            ) from err
        log.info("resuming %s from %s at step %d", cfg.stage, resume_from, start)
    elif init is not None:
        apply_init(stage, cfg, init)
    recipe = RECIPES[cfg.recipe]
    if ctx.world_size != recipe.gpus:
        log.warning(
            "the %s recipe's lr %.3g is for %d processes; with %d the taming rule gives %.3g",
            recipe.name,
            recipe.lr(cfg.stage),
            recipe.gpus,
            ctx.world_size,
            cfg.learning_rate(ctx.world_size),
        )
    log.info(
        "%s (%s recipe): %d images, lr %.3g = %.3g base x %d batch x %d processes, amp %s, %s",
        cfg.stage,
        cfg.recipe,
        len(dataset),
        cfg.learning_rate(ctx.world_size),
        cfg.base_lr,
        cfg.batch_size,
        ctx.world_size,
        cfg.amp,
        device,
    )
    with MetricsLogger(out_dir, cfg.stage, enabled=ctx.is_main, tensorboard=tensorboard) as metrics:
        last = run(
            stage,
            cfg,
            dataset,
            out_dir,
            device=device,
            ctx=ctx,
            start_step=start,
            metrics=metrics,
            on_step=on_step,
        )
    final = None
    if isinstance(stage, (FusionStage, IQPStage)) and ctx.is_main:
        final = stage.save_final(out_dir)
        log.info("wrote %s (%.1f MB)", final, final.stat().st_size / 1e6)
    return TrainResult(start, max(start, cfg.steps), last, Path(out_dir) / CHECKPOINT_NAME, final)
