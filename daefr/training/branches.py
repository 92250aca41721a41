"""Stages 1 and 2: the HQ and LQ VQGAN branches (paper Secs. 3.1, 3.2).

- codebook: the HQ autoencoder reconstructs clean faces, the LQ one degraded faces; each with
  L1 + perceptual + adversarial (PatchGAN, hinge, adaptive weight, from ``disc_start``) +
  codebook loss (Eq. 3). The two branches are independent; they share the data only.
  ``lq_steps`` ends the LQ branch's training early (the original trains the two codebooks as
  separate runs of different lengths).
- association: the same two branches trained jointly, plus the patch loss between the HQ
  encoder's features of the clean face and the LQ encoder's of its degraded copy (Eq. 5),
  added to each branch's objective (vqperceptual_dual.py:176). Its negatives are the patches
  of this process's batch only (B x r*r), as in the original under DDP, which gathers nothing.
  The stage-1 HQ autoencoder is carried along untouched as ``fixed_hq``: the final model
  takes its codebook, decoder and ground-truth encoder from it (``daefr.training.assemble``).

One step runs the optimizers in the original's order, each after its own forward, as
pytorch-lightning 1.0.8 does with several optimizers (training_loop.py:684-736): HQ
autoencoder, HQ discriminator, LQ autoencoder, LQ discriminator. So a discriminator sees its
generator after this step's update, and in stage 2 the LQ branch's patch loss sees the updated
HQ encoder; each objective's gradient reaches its own optimizer's parameters only
(``toggle_optimizer``, lightning.py:1260-1278). Losses are computed in fp32 under any AMP mode.

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
        if self.perceptual is not None:
            self.perceptual.train(cfg.loss.perceptual_dropout)  # heads' dropout, as the original
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
        """The autoencoder objective without the patch term (vqperceptual.py:147-174), fp32."""
        loss_cfg = self.cfg.loss
        recon = out.recon.float()
        rec = (target.float() - recon).abs().mean()
        nll = rec
        logs = {"l1": rec}
        if self.perceptual is not None and loss_cfg.perceptual_weight > 0:
            with autocast(self.device, self.cfg.amp):  # VGG is a network: AMP as the others
                per = self.perceptual(target, out.recon).float().mean()
            nll = nll + loss_cfg.perceptual_weight * per
            logs["perceptual"] = per
        vq = codebook_loss(out.feat, out.codes, loss_cfg.commitment_beta, loss_cfg.codebook_form)
        loss = nll + loss_cfg.codebook_weight * vq
        logs["codebook"] = vq
        if gan_on:
            with autocast(self.device, self.cfg.amp):
                (logits_fake,) = self._disc_run[branch](out.recon)
            g = hinge_g_loss(logits_fake.float())
            weight = adaptive_weight(nll, g, self.ae[branch].last_layer(), loss_cfg.disc_weight)
            loss = loss + weight * g
            logs.update(g=g, d_weight=weight)
        return loss, logs

    def _patch_loss(self, branch: str, feat: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The patch loss with the other branch's features as constants (its current weights)."""
        other = "lq" if branch == "hq" else "hq"
        with torch.no_grad(), autocast(self.device, self.cfg.amp):
            other_feat = self.ae[other].encode(inputs[other])
        hq_feat, lq_feat = (feat, other_feat) if branch == "hq" else (other_feat, feat)
        return patch_association_loss(hq_feat, lq_feat, self.cfg.loss.patch_logit_scale)

    def _discriminator_step(self, branch: str, target: torch.Tensor) -> torch.Tensor:
        """Hinge loss on the real face and the generator's output after its update."""
        with torch.no_grad(), autocast(self.device, self.cfg.amp):
            fake = self.ae[branch](target).recon  # no gradient: the unwrapped module will do
        with autocast(self.device, self.cfg.amp):
            real_logits, fake_logits = self._disc_run[branch](target, fake)
        d_loss = hinge_d_loss(real_logits.float(), fake_logits.float())
        opt = self.optimizers[f"{branch}_disc"]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(d_loss).backward()
        self.scaler.step(opt)
        return d_loss

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        loss_cfg = self.cfg.loss
        # Before disc_start the GAN terms are zero in the original (adopt_weight); skipping
        # the discriminator there saves its forward/backward and leaves its weights untouched.
        gan_on = step >= loss_cfg.disc_start
        inputs = {"hq": batch["hq"], "lq": batch["lq"]}  # each branch reconstructs its own input
        logs: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=self.device)
        for b in BRANCHES:
            if step >= self.cfg.branch_steps(b):
                continue  # this branch's run is over (codebook stage, lq_steps)
            with autocast(self.device, self.cfg.amp):
                out = self._ae_run[b](inputs[b])
            loss_b, logs_b = self._generator_loss(b, inputs[b], out, gan_on)
            if loss_cfg.patch_weight > 0:
                patch = self._patch_loss(b, out.feat, inputs)
                loss_b = loss_b + loss_cfg.patch_weight * patch
                logs_b["patch"] = patch
            opt = self.optimizers[b]
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss_b).backward()
            self.scaler.step(opt)
            if gan_on:
                logs_b["disc"] = self._discriminator_step(b, inputs[b])
            total = total + loss_b
            logs[f"{b}_loss"] = loss_b
            logs.update({f"{b}_{k}": v for k, v in logs_b.items()})
            used = out.idx.unique().numel() / self.ae[b].quantize.embedding.num_embeddings
            logs[f"{b}_code_usage"] = torch.tensor(used, device=self.device)
        self.scaler.update()
        logs["loss"] = total  # the sum of the branches' objectives
        return to_floats(logs)


def to_floats(logs: dict[str, torch.Tensor]) -> dict[str, float]:
    """One device-to-host copy for all the step's scalars."""
    values = torch.stack([v.detach().float().reshape(()) for v in logs.values()]).tolist()
    return dict(zip(logs, values, strict=True))
