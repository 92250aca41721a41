"""What the two IQPFR plug-in stages share: the conditioned model built from a DAEFR one,
chaining (``--init``), checkpoints and the final ``iqpfr.pt``.

The model is the full DAEFR (``training_modules=True``, for the stage-1 ground-truth path)
plus ``iqp.*`` (``daefr.quality.prior``). ``iqp-codebook`` starts from a DAEFR ``fusion``
checkpoint or released DAEFR weights; ``iqp-fusion`` from an ``iqp-codebook`` checkpoint. Both
run in one process (no DDP wrapping of the plug-in yet) and in fp32 with the nearest-code
searches in fp32, as the DAEFR stages do.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from daefr.atomic import atomic_path
from daefr.checkpoint import load_weights_into
from daefr.config import DAEFRConfig, QualityConfig
from daefr.model import DAEFR
from daefr.quality.checkpoint import IQP_PREFIX
from daefr.quality.scorer import QualityScorer
from daefr.training.config import TrainConfig
from daefr.training.distributed import DistContext
from daefr.training.fusion import set_quantizer_impl
from daefr.training.precision import grad_scaler

IQP_FINAL_NAME = "iqpfr.pt"


class IQPStageError(ValueError):
    """Weights or settings that cannot start an IQPFR stage; names what is wrong."""


def conditioned_config(model_cfg: DAEFRConfig, cfg: TrainConfig) -> DAEFRConfig:
    """The training model: the preset + training modules + an HQ+ codebook of the common K."""
    quality = QualityConfig(hq_plus_size=model_cfg.vqgan.codebook_size, threshold=cfg.quality_threshold)
    return replace(model_cfg, training_modules=True, quality=quality)


class IQPStage:
    """Base of ``IQPCodebookStage`` and ``IQPFusionStage`` (the loop's ``Stage`` protocol)."""

    # the stages a checkpoint given to --init may come from, and the optimizer's name
    init_stages: tuple[str, ...] = ()
    accepts_plain = False  # may start from plain DAEFR weights (fusion checkpoint, released)
    name = "iqp"

    def __init__(
        self,
        cfg: TrainConfig,
        model_cfg: DAEFRConfig,
        device: torch.device,
        ctx: DistContext | None,
        scorer: QualityScorer | None,
    ) -> None:
        self.cfg, self.device, self.ctx = cfg, device, ctx or DistContext()
        if self.ctx.world_size > 1:
            raise IQPStageError(f"the {cfg.stage} stage runs in one process; launch it without torchrun")
        if cfg.amp != "off":
            raise IQPStageError(f"--amp {cfg.amp}: the {cfg.stage} stage trains in fp32 only; use --amp off")
        if scorer is None:
            raise IQPStageError(f"the {cfg.stage} stage needs an NR-IQA scorer (--quality-scorer)")
        self.scorer = scorer
        torch.manual_seed(cfg.seed)
        self.model = DAEFR(conditioned_config(model_cfg, cfg))
        set_quantizer_impl(self.model, cfg.impl)
        self.model.to(device)
        for name, param in self.model.named_parameters():
            param.requires_grad_(self.trains(name))
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        lr = cfg.learning_rate(self.ctx.world_size)
        self.optimizers = {self.name: torch.optim.Adam(self.trainable, lr=lr, betas=cfg.betas)}
        self.scaler = grad_scaler(device, cfg.amp)
        self._initialised = False

    def trains(self, name: str) -> bool:  # pragma: no cover - each stage says
        raise NotImplementedError

    # -- scores -----------------------------------------------------------------------------
    def score(self, images: torch.Tensor) -> torch.Tensor:
        """NR-IQA scores (B,) on the model's device, without gradient."""
        with torch.no_grad():
            return self.scorer(images.detach()).to(self.device, torch.float32)

    def note_range(self, scores: torch.Tensor) -> None:
        """Widen ``iqp.quality_range`` to the scores trained on (the --quality default is its top)."""
        qr = self.model.iqp.quality_range
        with torch.no_grad():
            if not self._range_started:
                qr.copy_(torch.stack([scores.min(), scores.max()]))
                self._range_started = True
            else:
                qr.copy_(
                    torch.stack([torch.minimum(qr[0], scores.min()), torch.maximum(qr[1], scores.max())])
                )

    _range_started = False

    # -- the loop's Stage protocol ----------------------------------------------------------
    def models(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"daefr": self.model.state_dict()}

    def init_from(self, payload: dict[str, Any]) -> None:
        stage = payload["stage"]
        if stage not in self.init_stages:
            raise IQPStageError(
                f"the {self.cfg.stage} stage starts from a {' or '.join(self.init_stages)} checkpoint, "
                f"not {stage!r}"
            )
        state = payload["models"]["daefr"]
        if any(k.startswith(IQP_PREFIX) for k in state):
            load_weights_into(self.model, state, source=f"{stage} checkpoint")
            # The range is of the conditions this stage trains on: continuing the same stage
            # widens it; iqp-fusion after iqp-codebook starts it afresh (the codebook stage's
            # range is of image scores, not of the fusion stage's conditions).
            self._range_started = stage == self.cfg.stage
        else:
            self.init_from_official(state, source=f"{stage} checkpoint")
        self._initialised = True

    def init_from_official(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Plain DAEFR weights (877 official tensors) + this stage's fresh ``iqp.*``."""
        if not self.accepts_plain:
            raise IQPStageError(f"{source}: plain DAEFR weights start iqp-codebook, not {self.cfg.stage}")
        if any(k.startswith(IQP_PREFIX) for k in state):  # e.g. an iqpfr.pt: keep its trained iqp.*
            load_weights_into(self.model, state, source=source)
            self._range_started = self._initialised = True
            return
        fresh = {k: v for k, v in self.model.state_dict().items() if k.startswith(IQP_PREFIX)}
        load_weights_into(self.model, {**state, **fresh}, source=source)
        with torch.no_grad():  # the HQ+ codebook starts as the common one (then learns the best faces)
            self.model.iqp.hq_plus_quantize.embedding.weight.copy_(
                self.model.vqvae.Fixed_quantize.embedding.weight
            )
        self._initialised = True

    def load_training_state(self, payload: dict[str, Any]) -> None:
        self.init_from(payload)
        self.optimizers[self.name].load_state_dict(payload["optimizers"][self.name])
        self.scaler.load_state_dict(payload["scaler"])

    def prepare_distributed(self) -> None:
        if not self._initialised:
            raise IQPStageError(
                f"the {self.cfg.stage} stage starts from a {' or '.join(self.init_stages)} checkpoint (--init)"
            )

    def step_optimizer(self, loss: torch.Tensor) -> None:
        opt = self.optimizers[self.name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def save_final(self, out_dir: str | Path) -> Path:
        """``out_dir/iqpfr.pt``: the conditioned state_dict, readable by
        ``daefr.quality.checkpoint.load_conditioned_model`` and ``daefr-restore --quality``."""
        path = Path(out_dir) / IQP_FINAL_NAME
        with atomic_path(path) as tmp:
            torch.save(self.model.state_dict(), tmp)
        return path
