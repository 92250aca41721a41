"""One branch's VQGAN autoencoder (paper Sec. 3.1), built from ``daefr.vqgan``'s blocks.

State-dict keys: ``encoder.*``, ``quant_conv.*``, ``quantize.embedding.weight``,
``post_quant_conv.*``, ``decoder.*`` (``daefr.training.assemble`` maps them to the official
DAEFR layout).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from daefr.config import VQGANConfig
from daefr.ops import Impl
from daefr.vqgan import Codebook, Decoder, Encoder, MultiHeadAttnBlock


class AutoencoderOutput(NamedTuple):
    """recon: (B, 3, R, R); feat: pre-quantization features (B, D, r, r); codes: the chosen
    codebook rows (B, D, r, r), differentiable w.r.t. the codebook only; idx: (B, r*r)."""

    recon: torch.Tensor
    feat: torch.Tensor
    codes: torch.Tensor
    idx: torch.Tensor


def nearest_code_fp32(codebook: Codebook, feat: torch.Tensor) -> torch.Tensor:
    """feat: (B, D, r, r) -> idx (B, r*r) of the nearest codes, distances in fp32.

    Autocast would otherwise run the distance matmul in bf16/fp16 and change the picks: CPU
    bf16 autocast changed 0.7-1.3 % of 1,024 random tokens' codes (K=64, D=32 and K=1024,
    D=256, codes N(0, 1/D)); the original trains in fp32.
    """
    with torch.no_grad(), torch.autocast(feat.device.type, enabled=False):
        _, idx = codebook.quantize(feat.detach().float())
    return idx


class VQAutoencoder(nn.Module):
    """Encoder -> quant_conv -> nearest code -> (straight-through) -> post_quant_conv -> Decoder.

    ``impl`` selects the nearest-code search (``daefr.ops.nearest_code``); attention always
    runs in PyTorch because training needs its gradients.
    """

    def __init__(self, cfg: VQGANConfig, impl: Impl = "torch") -> None:
        super().__init__()
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.quantize = Codebook(cfg.codebook_size, cfg.code_dim, impl)
        # The original VectorQuantizer's init: with N(0, 1) codes (nn.Embedding's default)
        # most codes start far from the encoder's outputs and are never picked.
        nn.init.uniform_(self.quantize.embedding.weight, -1 / cfg.codebook_size, 1 / cfg.codebook_size)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)
        # Self-attention never reads norm2 (it exists for the official key layout and the
        # cross-attention use); frozen, it cannot be an "unused parameter" under DDP.
        for module in self.modules():
            if isinstance(module, MultiHeadAttnBlock):
                module.norm2.requires_grad_(False)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, R, R) in [-1, 1] -> features (B, D, r, r) before quantization."""
        return self.quant_conv(self.encoder(image))

    def quantize_features(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feat: (B, D, r, r) -> (codes (B, D, r, r) fp32 with gradient to the codebook,
        idx (B, r*r)). The nearest-code search runs in fp32 under any autocast."""
        b, d, h, w = feat.shape
        idx = nearest_code_fp32(self.quantize, feat)
        codes = self.quantize.lookup(idx)  # (B, N, D), a differentiable gather
        return codes.transpose(1, 2).reshape(b, d, h, w), idx

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        """quant: (B, D, r, r) -> image (B, 3, R, R), not clamped."""
        return self.decoder(self.post_quant_conv(quant))

    def forward(self, image: torch.Tensor) -> AutoencoderOutput:
        feat = self.encode(image)
        codes, idx = self.quantize_features(feat)
        quant = feat + (codes - feat).detach()  # straight-through estimator
        return AutoencoderOutput(self.decode(quant), feat, codes, idx)

    def last_layer(self) -> torch.Tensor:
        """The decoder's last weight, for the adaptive GAN weight."""
        return self.decoder.conv_out.weight
