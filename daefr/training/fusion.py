"""Stage 3: feature fusion and code prediction (paper Sec. 3.3).

The model is the full ``DAEFR`` (official key layout, ``training_modules=True``), assembled
from the association checkpoint (``daefr.training.assemble``). The degraded face goes through
both associated encoders, MHCA fuses them, the transformer predicts a code per token. Targets
come from the clean face through the frozen stage-1 HQ encoder and codebook (``Fixed_*``):

    loss = CE(logits, gt_idx) + feat_weight * MSE(fused, gt_codes)      (Eq. 7, weight 10)

Trained, as in the original (daefr.py:552-597, ``DAEFR.yaml`` ``fix_encoder: False``):
``cross_attention``, ``feat_emb``, ``position_emb``, ``ft_layers``, ``idx_pred_layer`` and every
``vqvae`` tensor whose name contains none of ``Fixed``, ``decoder``, ``post_quant_conv``,
``quantize``, i.e. the associated encoders ``vqvae.encoder``, ``vqvae.HQ_encoder``,
``vqvae.quant_conv``, ``vqvae.HQ_quant_conv``, which keep learning on the wider stage-3
degradations. The ground-truth path (``Fixed_*``), the HQ codebook, the decoder and the
associated codebooks stay frozen. ``freeze_encoders=True`` trains only MHCA + transformer, the
reading of the paper's Sec. 3.3. The encoders' self-attention ``norm2`` is never read (it is used
by cross-attention only, vqvae_arch.py:282-285), so it gets no gradient in the original either;
it is frozen here so that DDP does not wait for it.

Ground truth: the Fixed path runs without gradient (``encode_to_gt``, daefr.py:418) and in fp32
under any AMP mode, so the target codes never depend on the precision; the losses are fp32.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from daefr.atomic import atomic_path
from daefr.checkpoint import load_weights_into
from daefr.config import DAEFRConfig
from daefr.model import DAEFR
from daefr.training import distributed
from daefr.training.assemble import FUSION_PREFIXES, assemble_official_state_dict, fusion_state
from daefr.training.autoencoder import nearest_code_fp32
from daefr.training.branches import to_floats
from daefr.training.config import TrainConfig
from daefr.training.distributed import DistContext
from daefr.training.precision import autocast, grad_scaler
from daefr.vqgan import Codebook, Encoder, MultiHeadAttnBlock

FINAL_NAME = "daefr.pt"


class FusionOutput(NamedTuple):
    """logits: (B, N, K); fused: (B, D, r, r); gt_idx: (B, N); gt_codes: (B, D, r, r)."""

    logits: torch.Tensor
    fused: torch.Tensor
    gt_idx: torch.Tensor
    gt_codes: torch.Tensor


class FusionNet(nn.Module):
    """What DDP wraps: (degraded, clean) faces -> predictions and their targets."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq: torch.Tensor, hq: torch.Tensor) -> FusionOutput:
        vq = self.model.vqvae
        with torch.no_grad(), torch.autocast(hq.device.type, enabled=False):  # stage-1 targets, fp32
            gt_feat = vq.Fixed_quant_conv(vq.Fixed_encoder(hq.float()))
            gt_idx = nearest_code_fp32(vq.Fixed_quantize, gt_feat)  # (B, N)
            gt_codes = self.model.lookup(gt_idx)  # (B, D, r, r)
        fused = self.model.fuse(self.model.encode_hq(lq), self.model.encode_lq(lq))  # (B, D, r, r)
        return FusionOutput(self.model.predict_logits(fused), fused, gt_idx, gt_codes)


def trains_in_fusion(name: str, freeze_encoders: bool = False) -> bool:
    """Whether the official-layout tensor ``name`` is in the stage-3 optimizer (see above)."""
    if name.startswith(FUSION_PREFIXES):
        return True
    if freeze_encoders or not name.startswith("vqvae."):
        return False
    return not any(part in name for part in ("Fixed", "decoder", "post_quant_conv", "quantize"))


def unused_self_attention_norms(model: nn.Module) -> set[str]:
    """Names of the ``norm2`` tensors of the encoders' self-attention blocks (never read)."""
    names: set[str] = set()
    for enc_name, enc in model.named_modules():
        if isinstance(enc, Encoder):
            for blk_name, blk in enc.named_modules():
                if isinstance(blk, MultiHeadAttnBlock):
                    prefix = ".".join(p for p in (enc_name, blk_name, "norm2") if p)
                    names.update(f"{prefix}.{k}" for k, _ in blk.norm2.named_parameters())
    return names


def original_init_(model: DAEFR) -> None:
    """What ``nn.MultiheadAttention._reset_parameters`` adds to our ``SelfAttention`` init: a
    zero ``out_proj.bias`` (in_proj is already xavier-uniform with zero bias). The original's
    ``_init_weights`` (daefr.py:174) is never applied, so nothing else differs."""
    with torch.no_grad():
        for layer in model.ft_layers:
            layer.self_attn.out_proj.bias.zero_()


def set_quantizer_impl(model: nn.Module, impl: str) -> None:
    """Nearest-code search of every codebook; attention stays PyTorch (it needs gradients)."""
    for module in model.modules():
        if isinstance(module, Codebook):
            module.impl = impl


class FusionStageError(ValueError):
    """Weights that cannot start the fusion stage; names what is wrong."""


class FusionStage:
    def __init__(
        self, cfg: TrainConfig, model_cfg: DAEFRConfig, device: torch.device, ctx: DistContext | None = None
    ) -> None:
        self.cfg, self.device, self.ctx = cfg, device, ctx or DistContext()
        torch.manual_seed(cfg.seed)
        self.model = DAEFR(replace(model_cfg, training_modules=True))
        original_init_(self.model)
        set_quantizer_impl(self.model, cfg.impl)
        self.model.to(device)
        unused = unused_self_attention_norms(self.model)
        for name, param in self.model.named_parameters():
            param.requires_grad_(trains_in_fusion(name, cfg.freeze_encoders) and name not in unused)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        lr = cfg.learning_rate(self.ctx.world_size)
        self.optimizers = {"fusion": torch.optim.Adam(self.trainable, lr=lr, betas=cfg.betas)}
        self.scaler = grad_scaler(device, cfg.amp)
        self._initialised = False
        self._net: nn.Module = FusionNet(self.model)

    def models(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"daefr": self.model.state_dict()}

    def init_from(self, payload: dict[str, Any]) -> None:
        """From an association checkpoint (assembled into the official layout) or a fusion one."""
        models = payload["models"]
        if payload["stage"] == "association":  # the stage-3 modules keep this stage's fresh init
            state = assemble_official_state_dict(
                models["fixed_hq"], models["hq"], models["lq"], fusion_state(self.model)
            )
            load_weights_into(self.model, state, source="association checkpoint")
        elif payload["stage"] == "fusion":
            load_weights_into(self.model, models["daefr"], source="fusion checkpoint")
        else:
            raise FusionStageError(
                f"the fusion stage starts from an association checkpoint, not {payload['stage']!r}"
            )
        self._initialised = True

    def init_from_official(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Fine-tune from released DAEFR weights (all 877 official tensors)."""
        load_weights_into(self.model, state, source=source)
        self._initialised = True

    def load_training_state(self, payload: dict[str, Any]) -> None:
        self.init_from(payload)
        self.optimizers["fusion"].load_state_dict(payload["optimizers"]["fusion"])
        self.scaler.load_state_dict(payload["scaler"])

    def prepare_distributed(self) -> None:
        if not self._initialised:
            raise FusionStageError("the fusion stage starts from an association checkpoint (--init)")
        self._net = distributed.wrap(FusionNet(self.model), self.ctx, self.device)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        with autocast(self.device, self.cfg.amp):
            out = self._net(batch["lq"], batch["hq"])
        # daefr.py:403, 410, 433: CE(logits, gt codes) + 10 * MSE(fused, gt code vectors), fp32
        k = out.logits.shape[-1]
        ce = F.cross_entropy(out.logits.reshape(-1, k).float(), out.gt_idx.reshape(-1))
        feat = F.mse_loss(out.fused.float(), out.gt_codes.float())
        loss = ce + self.cfg.loss.feat_weight * feat
        opt = self.optimizers["fusion"]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()
        accuracy = (out.logits.argmax(-1) == out.gt_idx).float().mean()
        return to_floats({"loss": loss, "ce": ce, "feat_mse": feat, "code_accuracy": accuracy})

    def save_final(self, out_dir: str | Path) -> Path:
        """``out_dir/daefr.pt``: the official-layout state_dict (877 keys for "official"),
        readable by ``daefr.checkpoint.read_state_dict`` / ``load_model``."""
        path = Path(out_dir) / FINAL_NAME
        with atomic_path(path) as tmp:
            torch.save(self.model.state_dict(), tmp)
        return path
