"""Frozen, validated training configs with the paper's defaults, one preset per stage.

Learning rate: the paper trains with Adam at 1.44e-4, batch 32 on 8 A100s. The released
configs give ``base_learning_rate: 4.5e-6`` and the original ``main*.py`` (taming-transformers)
scales it as ``lr = accumulate_grad_batches * n_gpus * batch_size * base_lr``:
4.5e-6 * 8 GPUs * 4 per GPU = 1.44e-4. :meth:`TrainConfig.learning_rate` applies the same rule
(no gradient accumulation here), so the paper's setting is ``--batch-size 4`` on 8 processes.
Adam's betas are (0.5, 0.9), as in every optimizer of the original code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from daefr.degradation import STAGE_DEGRADATIONS, DegradationConfig
from daefr.ops import IMPLS

STAGES: tuple[str, ...] = ("codebook", "association", "fusion")
AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")


def _require(condition: bool, name: str, value: object, allowed: str) -> None:
    if not condition:
        raise ValueError(f"invalid training config: {name}={value!r}; {allowed}")


@dataclass(frozen=True)
class LossConfig:
    """Loss weights (paper Eqs. 2-7)."""

    perceptual_weight: float = 1.0  # lambda_per
    disc_weight: float = 0.8  # lambda_adv, times the adaptive weight
    disc_start: int = 30001  # step at which the GAN terms and discriminator updates begin
    disc_channels: int | None = None  # PatchGAN width; None: the VQGAN's ch (64 = taming's ndf)
    disc_layers: int = 3
    codebook_weight: float = 1.0
    commitment_beta: float = 0.25  # beta of Eq. 2
    patch_weight: float = 0.0  # weight of (CE_H + CE_L) / 2, Eq. 5; 1 in the association stage
    patch_logit_scale: float = 1 / 0.07  # CLIP temperature; a constant in the original code
    feat_weight: float = 10.0  # lambda_feat of Eq. 7

    def __post_init__(self) -> None:
        for name in ("perceptual_weight", "disc_weight", "codebook_weight", "patch_weight", "feat_weight"):
            value = getattr(self, name)
            _require(value >= 0, name, value, "must be >= 0")
        _require(self.disc_start >= 0, "disc_start", self.disc_start, "must be >= 0")
        _require(
            self.disc_channels is None or self.disc_channels >= 1,
            "disc_channels",
            self.disc_channels,
            "None or >= 1",
        )
        _require(self.disc_layers >= 1, "disc_layers", self.disc_layers, "must be >= 1")
        _require(0 < self.commitment_beta, "commitment_beta", self.commitment_beta, "must be > 0")
        _require(self.patch_logit_scale > 0, "patch_logit_scale", self.patch_logit_scale, "must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    """One stage's run. ``batch_size`` is per process; see the module docstring for the lr."""

    stage: str
    preset: str = "official"
    steps: int = 700_000
    batch_size: int = 4
    base_lr: float = 4.5e-6
    betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 0
    amp: str = "off"
    impl: str = "torch"  # nearest-code search of the quantizers
    hflip: bool = True
    num_workers: int = 4
    log_every: int = 50
    save_every: int = 5000
    loss: LossConfig = field(default_factory=LossConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)

    def __post_init__(self) -> None:
        _require(self.stage in STAGES, "stage", self.stage, f"choose one of {STAGES}")
        _require(self.steps >= 1, "steps", self.steps, "must be >= 1")
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _require(self.base_lr > 0, "base_lr", self.base_lr, "must be > 0")
        _require(all(0 <= b < 1 for b in self.betas), "betas", self.betas, "each in [0, 1)")
        _require(self.amp in AMP_MODES, "amp", self.amp, f"choose one of {AMP_MODES}")
        _require(self.impl in IMPLS, "impl", self.impl, f"choose one of {IMPLS}")
        _require(self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        _require(self.log_every >= 1, "log_every", self.log_every, "must be >= 1")
        _require(self.save_every >= 1, "save_every", self.save_every, "must be >= 1")

    def learning_rate(self, world_size: int) -> float:
        """base_lr * batch_size * world_size, the taming rule of the original code."""
        return self.base_lr * self.batch_size * world_size


# Steps: HQ codebook 700K (the LQ one 400K; both train together here), association 70K,
# fusion 100K (paper Sec. 4.1). disc_start: configs/HQ_codebook.yaml 30001,
# Association_stage.yaml 11.
STAGE_DEFAULTS: dict[str, TrainConfig] = {
    "codebook": TrainConfig(
        stage="codebook",
        steps=700_000,
        loss=LossConfig(disc_start=30001),
        degradation=STAGE_DEGRADATIONS["codebook"],
    ),
    "association": TrainConfig(
        stage="association",
        steps=70_000,
        loss=LossConfig(disc_start=11, patch_weight=1.0),
        degradation=STAGE_DEGRADATIONS["association"],
    ),
    "fusion": TrainConfig(stage="fusion", steps=100_000, degradation=STAGE_DEGRADATIONS["fusion"]),
}


def stage_config(stage: str, loss: dict[str, object] | None = None, **overrides: object) -> TrainConfig:
    """The stage's defaults with ``overrides`` (TrainConfig fields) and ``loss`` (LossConfig fields)."""
    if stage not in STAGE_DEFAULTS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    cfg = STAGE_DEFAULTS[stage]
    if loss:
        overrides["loss"] = replace(cfg.loss, **loss)
    return replace(cfg, **overrides) if overrides else cfg
