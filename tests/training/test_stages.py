"""Each stage learns: its loss goes down on a fixed batch of faces (tiny preset, CPU, seeded)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from training_helpers import tiny_config
from training_tolerances import LOSS_DROP

from daefr.config import DAEFRConfig
from daefr.training.branches import BranchStage
from daefr.training.data import FaceFolder
from daefr.training.fusion import FusionStage
from daefr.training.losses import LPIPS

CPU = torch.device("cpu")
TINY = DAEFRConfig.from_name("tiny")


@pytest.fixture(scope="module")
def fixed_batch(faces_dir: Path) -> dict[str, torch.Tensor]:
    cfg = tiny_config("codebook")
    dataset = FaceFolder(faces_dir, TINY.vqgan.resolution, cfg.degradation, seed=0)
    items = [dataset[0], dataset[1]]
    return {k: torch.stack([item[k] for item in items]) for k in ("hq", "lq")}


def losses(
    stage: BranchStage | FusionStage, batch: dict[str, torch.Tensor], steps: int, key: str = "loss"
) -> list[float]:
    return [stage.train_step(batch, step)[key] for step in range(steps)]


def assert_goes_down(values: list[float], window: int = 2) -> None:
    early, late = sum(values[:window]) / window, sum(values[-window:]) / window
    assert late < LOSS_DROP * early, values


def test_codebook_stage_loss_goes_down(fixed_batch: dict[str, torch.Tensor]) -> None:
    # lr 6e-5: the sum of L1 and codebook terms falls monotonically for 12 steps (at 2e-4 the
    # codebook term, whose codes move ~lr per step, overtakes the L1 gain after 6 steps)
    stage = BranchStage(tiny_config("codebook", base_lr=3e-5), TINY.vqgan, CPU)
    seen = {}
    for name in ("hq", "lq"):
        stage.ae[name].register_forward_pre_hook(lambda _m, args, name=name: seen.setdefault(name, args[0]))
    assert_goes_down(losses(stage, fixed_batch, 6))
    # the HQ autoencoder reconstructs clean faces, the LQ one degraded faces
    assert seen["hq"] is fixed_batch["hq"] and seen["lq"] is fixed_batch["lq"]
    assert not torch.equal(fixed_batch["hq"], fixed_batch["lq"])


def test_gan_terms_start_at_disc_start(fixed_batch: dict[str, torch.Tensor]) -> None:
    stage = BranchStage(tiny_config("codebook", loss={"disc_start": 1}), TINY.vqgan, CPU)
    before = {k: v.clone() for k, v in stage.disc["hq"].state_dict().items()}
    first = stage.train_step(fixed_batch, 0)
    assert "hq_g" not in first and "hq_disc" not in first
    assert all(torch.equal(v, stage.disc["hq"].state_dict()[k]) for k, v in before.items())
    second = stage.train_step(fixed_batch, 1)
    assert second["hq_d_weight"] > 0 and second["lq_d_weight"] > 0
    assert {"hq_g", "hq_disc", "lq_g", "lq_disc"} <= set(second)
    assert not torch.equal(before["main.0.weight"], stage.disc["hq"].state_dict()["main.0.weight"])


def test_association_stage_loss_goes_down(fixed_batch: dict[str, torch.Tensor]) -> None:
    stage = BranchStage(tiny_config("association"), TINY.vqgan, CPU)
    values = losses(stage, fixed_batch, 6)
    assert_goes_down(values)


def test_fusion_stage_loss_goes_down_and_trains_the_original_set(
    fixed_batch: dict[str, torch.Tensor],
) -> None:
    branches = BranchStage(tiny_config("association"), TINY.vqgan, CPU)
    models = branches.models()
    payload = {"stage": "association", "models": {**models, "fixed_hq": models["hq"]}}
    stage = FusionStage(tiny_config("fusion", base_lr=5e-4), TINY, CPU)
    stage.init_from(payload)
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    assert_goes_down(losses(stage, fixed_batch, 10))
    after = stage.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert {k.split(".")[0] for k in changed} >= {"cross_attention", "ft_layers", "idx_pred_layer"}
    vq_changed = {k.split(".")[1] for k in changed if k.startswith("vqvae.")}
    assert vq_changed == {"encoder", "HQ_encoder", "quant_conv", "HQ_quant_conv"}


def test_fusion_stage_can_freeze_the_encoders(fixed_batch: dict[str, torch.Tensor]) -> None:
    stage = FusionStage(tiny_config("fusion", freeze_encoders=True), TINY, CPU)
    branches = BranchStage(tiny_config("association"), TINY.vqgan, CPU)
    stage.init_from(
        {"stage": "association", "models": {**branches.models(), "fixed_hq": branches.models()["hq"]}}
    )
    before = {k: v.clone() for k, v in stage.model.state_dict().items()}
    stage.train_step({k: v[:1] for k, v in fixed_batch.items()}, 0)
    changed = {k for k, v in stage.model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and not any(k.startswith("vqvae.") for k in changed)


def test_mixed_precision_steps_are_finite(fixed_batch: dict[str, torch.Tensor]) -> None:
    # CPU autocast runs the same code paths as CUDA's: bf16 through both branches with the
    # GAN on, fp16 with its GradScaler through the fusion stage.
    one = {k: v[:1] for k, v in fixed_batch.items()}
    torch.manual_seed(0)
    perceptual = LPIPS()  # random heads and trunk: the code path, not a meaningful distance
    cfg = tiny_config("association", amp="bf16", loss={"disc_start": 0, "perceptual_weight": 1.0})
    branches = BranchStage(cfg, TINY.vqgan, CPU, perceptual=perceptual)
    branches.fixed_hq = branches.models()["hq"]
    logs = branches.train_step(one, 0)
    assert {"hq_g", "hq_disc", "hq_patch", "lq_patch", "hq_perceptual"} <= set(logs)
    assert all(map(math.isfinite, logs.values()))
    fusion = FusionStage(tiny_config("fusion", amp="fp16"), TINY, CPU)
    fusion.init_from({"stage": "association", "models": branches.models()})
    assert fusion.scaler.is_enabled()
    assert all(map(math.isfinite, fusion.train_step(one, 0).values()))
