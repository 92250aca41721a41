"""Stages 1 and 2: the HQ and LQ VQGAN branches (paper Secs. 3.1, 3.2).

- codebook: the HQ autoencoder reconstructs clean faces, the LQ one degraded faces; each with
  L1 + perceptual + adversarial (PatchGAN, hinge, adaptive weight, from ``disc_start``) +
  codebook loss (Eq. 3). The two branches are independent; they share the data only.
- association: the same two branches trained jointly, plus the patch loss between the HQ
  encoder's features of the clean face and the LQ encoder's of its degraded copy (Eq. 5).
  The stage-1 HQ autoencoder is carried along untouched as ``fixed_hq``: the final model
  takes its codebook, decoder and ground-truth encoder from it (``daefr.training.assemble``).

Checkpoint models: ``hq``, ``lq``, ``hq_disc``, ``lq_disc`` and, in the association stage,
``fixed_hq``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from daefr.config import VQGANConfig
from daefr.training import distributed
from daefr.training.autoencoder import AutoencoderOutput, VQAutoencoder
from daefr.training.config import TrainConfig
from daefr.training.distributed import DistContext
from daefr.training.losses import (
    LPIPS,
    NLayerDiscriminator,
    adaptive_weight,
    codebook_loss,
    hinge_d_loss,
    hinge_g_loss,
    patch_association_loss,
)
from daefr.training.precision import autocast, grad_scaler

BRANCHES: tuple[str, ...] = ("hq", "lq")


class BranchStageError(ValueError):
    """Weights that do not fit the codebook/association stage; names what is wrong."""


class _Discriminate(nn.Module):
    """Runs the discriminator on each batch separately (BatchNorm statistics per batch, as
    taming's separate real/fake calls) inside one forward, the unit that DDP synchronises."""

    def __init__(self, disc: NLayerDiscriminator) -> None:
        super().__init__()
        self.disc = disc

    def forward(self, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.disc(x) for x in images)


class BranchStage:
    """Both branches of stage 1 (``patch_weight == 0``) or stage 2 (``patch_weight > 0``)."""

    def __init__(
        self,
        cfg: TrainConfig,
        vq_cfg: VQGANConfig,
        device: torch.device,
        ctx: DistContext | None = None,
        perceptual: LPIPS | None = None,
    ) -> None:
        self.cfg, self.device, self.ctx = cfg, device, ctx or DistContext()
        self.perceptual = perceptual.to(device) if perceptual is not None else None
        if self.perceptual is None and cfg.loss.perceptual_weight > 0:
            raise BranchStageError(
                "the perceptual loss needs its pretrained weights file (or perceptual_weight=0 for none)"
            )
        torch.manual_seed(cfg.seed)
        self.ae = {b: VQAutoencoder(vq_cfg, cfg.impl).to(device) for b in BRANCHES}
        width = cfg.loss.disc_channels or vq_cfg.ch
        self.disc = {b: NLayerDiscriminator(3, width, cfg.loss.disc_layers).to(device) for b in BRANCHES}
        self.fixed_hq: dict[str, torch.Tensor] | None = None
        lr = cfg.learning_rate(self.ctx.world_size)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for b in BRANCHES:
            trainable = [p for p in self.ae[b].parameters() if p.requires_grad]
            self.optimizers[b] = torch.optim.Adam(trainable, lr=lr, betas=cfg.betas)
            self.optimizers[f"{b}_disc"] = torch.optim.Adam(self.disc[b].parameters(), lr=lr, betas=cfg.betas)
        self.scaler = grad_scaler(device, cfg.amp)
        self._ae_run: dict[str, nn.Module] = dict(self.ae)  # DDP-wrapped by prepare_distributed
        self._disc_run: dict[str, nn.Module] = {b: _Discriminate(self.disc[b]) for b in BRANCHES}

    # -- weights ------------------------------------------------------------------------
    def models(self) -> dict[str, dict[str, torch.Tensor]]:
        out = {b: self.ae[b].state_dict() for b in BRANCHES}
        out.update({f"{b}_disc": self.disc[b].state_dict() for b in BRANCHES})
        if self.fixed_hq is not None:
            out["fixed_hq"] = self.fixed_hq
        return out

    def init_from(self, payload: dict[str, Any]) -> None:
        """Start from a codebook or association checkpoint: both autoencoders and (when
        present) discriminators; the association stage also keeps its stage-1 HQ autoencoder."""
        models = payload["models"]
        for b in BRANCHES:
            self.ae[b].load_state_dict(models[b], strict=True)
            if f"{b}_disc" in models:
                self.disc[b].load_state_dict(models[f"{b}_disc"], strict=True)
        if self.cfg.stage == "association":
            source = models.get("fixed_hq", models["hq"])  # a codebook checkpoint: its HQ branch
            self.fixed_hq = {k: v.detach().clone().cpu() for k, v in source.items()}

    def load_training_state(self, payload: dict[str, Any]) -> None:
        self.init_from(payload)
        for name, opt in self.optimizers.items():
            opt.load_state_dict(payload["optimizers"][name])
        self.scaler.load_state_dict(payload["scaler"])

    def prepare_distributed(self) -> None:
        if self.cfg.stage == "association" and self.fixed_hq is None:
            raise BranchStageError("the association stage starts from a codebook checkpoint (--init)")
        for b in BRANCHES:
            self._ae_run[b] = distributed.wrap(self.ae[b], self.ctx, self.device)
            self._disc_run[b] = distributed.wrap(_Discriminate(self.disc[b]), self.ctx, self.device)

    # -- one step -----------------------------------------------------------------------
    def _generator_loss(
        self, branch: str, target: torch.Tensor, out: AutoencoderOutput, gan_on: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss_cfg = self.cfg.loss
        rec = (target - out.recon).abs().mean()
        nll = rec
        logs = {"l1": rec}
        if self.perceptual is not None and loss_cfg.perceptual_weight > 0:
            per = self.perceptual(target, out.recon).mean()
            nll = nll + loss_cfg.perceptual_weight * per
            logs["perceptual"] = per
        vq = codebook_loss(out.feat, out.codes, loss_cfg.commitment_beta)
        loss = nll + loss_cfg.codebook_weight * vq
        logs["codebook"] = vq
        if gan_on:
            (logits_fake,) = self._disc_run[branch](out.recon)
            g = hinge_g_loss(logits_fake)
            weight = adaptive_weight(nll, g, self.ae[branch].last_layer(), loss_cfg.disc_weight)
            loss = loss + weight * g
            logs.update(g=g, d_weight=weight)
        return loss, logs

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        loss_cfg = self.cfg.loss
        # Before disc_start the GAN terms are zero in the original (adopt_weight); skipping
        # the discriminator there saves its forward/backward and leaves it untouched.
        gan_on = step >= loss_cfg.disc_start
        inputs = {"hq": batch["hq"], "lq": batch["lq"]}  # each branch reconstructs its own input
        logs: dict[str, torch.Tensor] = {}
        with autocast(self.device, self.cfg.amp):
            outs = {b: self._ae_run[b](inputs[b]) for b in BRANCHES}
            total = torch.zeros((), device=self.device)
            for b in BRANCHES:
                loss_b, logs_b = self._generator_loss(b, inputs[b], outs[b], gan_on)
                total = total + loss_b
                logs[f"{b}_loss"] = loss_b
                logs.update({f"{b}_{k}": v for k, v in logs_b.items()})
            if loss_cfg.patch_weight > 0:
                patch = patch_association_loss(outs["hq"].feat, outs["lq"].feat, loss_cfg.patch_logit_scale)
                total = total + loss_cfg.patch_weight * patch
                logs["patch"] = patch
        for b in BRANCHES:
            self.optimizers[b].zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        for b in BRANCHES:
            self.scaler.step(self.optimizers[b])
        logs["loss"] = total
        if gan_on:
            with autocast(self.device, self.cfg.amp):
                d_total = torch.zeros((), device=self.device)
                for b in BRANCHES:
                    real, fake = self._disc_run[b](inputs[b], outs[b].recon.detach())
                    d_loss = hinge_d_loss(real, fake)
                    d_total = d_total + d_loss
                    logs[f"{b}_disc"] = d_loss
            for b in BRANCHES:
                self.optimizers[f"{b}_disc"].zero_grad(set_to_none=True)
            self.scaler.scale(d_total).backward()
            for b in BRANCHES:
                self.scaler.step(self.optimizers[f"{b}_disc"])
        self.scaler.update()
        for b in BRANCHES:
            used = outs[b].idx.unique().numel() / self.ae[b].quantize.embedding.num_embeddings
            logs[f"{b}_code_usage"] = torch.tensor(used, device=self.device)
        return to_floats(logs)


def to_floats(logs: dict[str, torch.Tensor]) -> dict[str, float]:
    """One device-to-host copy for all the step's scalars."""
    values = torch.stack([v.detach().float().reshape(()) for v in logs.values()]).tolist()
    return dict(zip(logs, values, strict=True))
