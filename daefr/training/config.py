"""Frozen, validated training configs, one preset per stage, and the two recipes.

What the original trains (LIAGM/DAEFR at 02d5010, read side by side) is the default: the
codebook loss in its taming "legacy" form (``codebook_form="original"``), stage 3 training the
associated encoders, fp32, LPIPS head dropout on, each optimizer stepping after its own forward.
The two recipes differ only in batch, learning rate and length (see :data:`RECIPES`).

Learning rate: the original ``main*.py`` (taming-transformers) scales the configs'
``base_learning_rate: 4.5e-6`` as ``lr = accumulate_grad_batches * n_gpus * batch_size * base_lr``
(``main_for_codebook.py:580``); :meth:`TrainConfig.learning_rate` applies the same rule (no
gradient accumulation here), so the lr follows the batch per process and the process count.
Adam's betas are (0.5, 0.9), as in every optimizer of the original code. The configs'
``MultiStepLR`` milestones (``schedule_step``) are in epochs under Lightning's default
``interval: "epoch"`` and lie beyond ``max_epochs``: the original lr is constant, as here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from daefr.degradation import STAGE_DEGRADATIONS, DegradationConfig
from daefr.ops import IMPLS

STAGES: tuple[str, ...] = ("codebook", "association", "fusion", "iqp-codebook", "iqp-fusion")
# IQPFR's plug-in stages (daefr.training.iqp_codebook / iqp_fusion), after DAEFR's fusion stage.
IQP_STAGES: tuple[str, ...] = ("iqp-codebook", "iqp-fusion")
AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")
# "original": weight 1 on the commitment term, beta on the codebook term (vqvae_arch.py:91-92,
# taming's legacy VectorQuantizer, which made the released weights); "paper": Eq. 2 as printed.
CODEBOOK_FORMS: tuple[str, ...] = ("original", "paper")
MAX_LR = 1.0  # Adam's step is about lr per weight: 1 already wipes out any trained weight


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
    commitment_beta: float = 0.25  # beta of Eq. 2 (VectorQuantizer(beta=0.25), vqvae_arch.py:672)
    codebook_form: str = "original"  # see CODEBOOK_FORMS
    # LPIPS' heads hold Dropout(0.5) (lpips.py:18,93); Lightning's model.train() turns it on
    # during training in the original (pytorch-lightning 1.0.8 trainer.py:473).
    perceptual_dropout: bool = True
    patch_weight: float = 0.0  # weight of (CE_H + CE_L) / 2, Eq. 5; 1 in the association stage
    patch_logit_scale: float = 1 / 0.07  # CLIP temperature; a constant in the original code
    feat_weight: float = 10.0  # lambda_feat of Eq. 7
    quality_weight: float = 0.0  # IQPFR's L_quality (iqp-fusion stage only; see iqp_fusion)

    def __post_init__(self) -> None:
        for name in (
            "perceptual_weight",
            "disc_weight",
            "codebook_weight",
            "patch_weight",
            "feat_weight",
            "quality_weight",
        ):
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
        _require(
            self.codebook_form in CODEBOOK_FORMS,
            "codebook_form",
            self.codebook_form,
            f"choose one of {CODEBOOK_FORMS}",
        )
        _require(self.patch_logit_scale > 0, "patch_logit_scale", self.patch_logit_scale, "must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    """One stage's run. ``batch_size`` is per process; see the module docstring for the lr."""

    stage: str
    preset: str = "official"
    recipe: str = "paper"  # informative: which of RECIPES the batch, lr and steps came from
    steps: int = 700_000
    lq_steps: int | None = None  # codebook stage: the LQ branch stops after this many (None: steps)
    batch_size: int = 4
    base_lr: float = 4.5e-6
    betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 0
    amp: str = "off"
    impl: str = "torch"  # nearest-code search of the quantizers
    hflip: bool = True
    # fusion stage: True trains only MHCA + transformer (the paper's Sec. 3.3 reading); the
    # original trains the associated encoders too (daefr.py:552-567, DAEFR.yaml fix_encoder).
    freeze_encoders: bool = False
    num_workers: int = 4
    log_every: int = 50
    save_every: int = 5000
    loss: LossConfig = field(default_factory=LossConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    # iqp stages: S_thr, the NR-IQA score above which a face teaches the HQ+ codebook. The paper's
    # summary gives none; 0.8 sits above most FFHQ faces' 0.7-0.8 (its Fig. 2).
    quality_threshold: float = 0.8

    def __post_init__(self) -> None:
        _require(self.stage in STAGES, "stage", self.stage, f"choose one of {STAGES}")
        _require(self.recipe in RECIPE_NAMES, "recipe", self.recipe, f"choose one of {RECIPE_NAMES}")
        _require(self.steps >= 1, "steps", self.steps, "must be >= 1")
        _require(
            self.lq_steps is None or (self.stage == "codebook" and 1 <= self.lq_steps <= self.steps),
            "lq_steps",
            self.lq_steps,
            "None, or 1..steps in the codebook stage",
        )
        _require(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        _require(math.isfinite(self.base_lr) and self.base_lr > 0, "base_lr", self.base_lr, "finite and > 0")
        _require(not self.freeze_encoders or self.stage == "fusion", "freeze_encoders", True, "fusion only")
        _require(all(0 <= b < 1 for b in self.betas), "betas", self.betas, "each in [0, 1)")
        _require(self.amp in AMP_MODES, "amp", self.amp, f"choose one of {AMP_MODES}")
        _require(self.impl in IMPLS, "impl", self.impl, f"choose one of {IMPLS}")
        _require(self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        _require(self.log_every >= 1, "log_every", self.log_every, "must be >= 1")
        _require(self.save_every >= 1, "save_every", self.save_every, "must be >= 1")
        _require(0.0 < self.quality_threshold < 1.0, "quality_threshold", self.quality_threshold, "in (0, 1)")

    def learning_rate(self, world_size: int) -> float:
        """base_lr * batch_size * world_size, the taming rule of the original code; ValueError
        above MAX_LR (such a step only destroys the weights, or overflows Adam's float32 step)."""
        lr = self.base_lr * self.batch_size * world_size
        if not lr <= MAX_LR:
            raise ValueError(
                f"learning rate {lr:.3g} = {self.base_lr:.3g} base x {self.batch_size} batch x "
                f"{world_size} processes is above {MAX_LR:g}; lower --base-lr (the recipes use 4.5e-6)"
            )
        return lr

    def branch_steps(self, branch: str) -> int:
        """Steps the ``"hq"`` or ``"lq"`` branch trains for (stages 1 and 2)."""
        return self.lq_steps if branch == "lq" and self.lq_steps is not None else self.steps


@dataclass(frozen=True)
class Recipe:
    """Batch per process, base lr and steps per stage, for ``gpus`` processes.

    ``steps["codebook"]`` is the HQ branch's; ``lq_steps`` the LQ branch's (the original trains
    the two codebooks as separate runs of different lengths).
    """

    name: str
    gpus: int
    batch_size: dict[str, int]
    base_lr: float
    steps: dict[str, int]
    lq_steps: int
    source: str

    def lr(self, stage: str) -> float:
        return self.base_lr * self.batch_size[stage] * self.gpus


# Released configs: epochs -> steps for the 70,000 FFHQ faces on 4 GPUs (scripts/run_*_training.sh
# gpus='0,1,2,3'), as Lightning counts them: DistributedSampler 17,500 faces per GPU, batches
# not dropped. Codebook: ceil(17500 / 3) = 5,834 steps per epoch x 330 (HQ_codebook.yaml:3) and
# x 250 (LQ_codebook.yaml:3); association 8,750 x 50 (Association_stage.yaml:3); fusion
# 8,750 x 100 (DAEFR.yaml:3). Batch: HQ/LQ_codebook.yaml:41 (3), Association_stage.yaml:44 and
# DAEFR.yaml:50 (2).
RECIPES: dict[str, Recipe] = {
    "paper": Recipe(
        name="paper",
        gpus=8,
        batch_size={"codebook": 4, "association": 4, "fusion": 4, "iqp-codebook": 4, "iqp-fusion": 4},
        base_lr=4.5e-6,  # x 4 x 8 = 1.44e-4 (paper Sec. 4.1; README: 8 A100, batch 4)
        # iqp-*: no schedule in the IQPFR summary; DAEFR's fusion length, chosen here
        steps={
            "codebook": 700_000,
            "association": 70_000,
            "fusion": 100_000,
            "iqp-codebook": 100_000,
            "iqp-fusion": 100_000,
        },
        lq_steps=400_000,
        source="paper Sec. 4.1 and the original README: 8 GPUs x batch 4, lr 1.44e-4, "
        "700K (HQ) / 400K (LQ) / 70K / 100K iterations",
    ),
    "released": Recipe(
        name="released",
        gpus=4,
        batch_size={"codebook": 3, "association": 2, "fusion": 2, "iqp-codebook": 2, "iqp-fusion": 2},
        base_lr=4.5e-6,  # x 3 x 4 = 5.4e-5 (codebook), x 2 x 4 = 3.6e-5 (association, fusion)
        steps={
            "codebook": 1_925_220,
            "association": 437_500,
            "fusion": 875_000,
            "iqp-codebook": 875_000,
            "iqp-fusion": 875_000,
        },
        lq_steps=1_458_500,
        source="configs/*.yaml and scripts/run_*_training.sh at 02d5010: 4 GPUs, batch 3/2/2, "
        "330 (HQ) / 250 (LQ) / 50 / 100 epochs of FFHQ",
    ),
}
RECIPE_NAMES: tuple[str, ...] = tuple(RECIPES)

# What does not depend on the recipe. disc_start: HQ/LQ_codebook.yaml:33 (30001),
# Association_stage.yaml:36 (11); degradations per stage: ``daefr.degradation``.
STAGE_DEFAULTS: dict[str, TrainConfig] = {
    "codebook": TrainConfig(
        stage="codebook",
        steps=700_000,
        lq_steps=400_000,
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
    # HQ+ codebook from clean faces only (the degraded copy is unused); the fusion stage's
    # degradations for the conditioned code prediction, with the quality loss on.
    "iqp-codebook": TrainConfig(
        stage="iqp-codebook", steps=100_000, degradation=STAGE_DEGRADATIONS["fusion"]
    ),
    "iqp-fusion": TrainConfig(
        stage="iqp-fusion",
        steps=100_000,
        loss=LossConfig(quality_weight=1.0),
        degradation=STAGE_DEGRADATIONS["fusion"],
    ),
}


def stage_config(
    stage: str, loss: dict[str, object] | None = None, recipe: str = "paper", **overrides: object
) -> TrainConfig:
    """The stage's defaults under ``recipe`` (batch, base lr, steps, LQ steps) with ``overrides``
    (TrainConfig fields) and ``loss`` (LossConfig fields). Overriding ``steps`` alone makes both
    codebook branches train that long (``lq_steps`` follows unless also given)."""
    if stage not in STAGE_DEFAULTS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {RECIPE_NAMES}")
    r = RECIPES[recipe]
    base: dict[str, object] = {
        "recipe": recipe,
        "batch_size": r.batch_size[stage],
        "base_lr": r.base_lr,
        "steps": r.steps[stage],
        "lq_steps": r.lq_steps if stage == "codebook" else None,
    }
    if "steps" in overrides and "lq_steps" not in overrides:
        base["lq_steps"] = None
    cfg = STAGE_DEFAULTS[stage]
    if loss:
        overrides["loss"] = replace(cfg.loss, **loss)
    return replace(cfg, **{**base, **overrides})
