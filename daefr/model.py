"""DAEFR inference network, state_dict-compatible with the official release.

Attribute names and registration order reproduce the original model's keys exactly
(``position_emb``, ``vqvae.*``, ``cross_attention.*``, ``feat_emb``, ``ft_layers.*``,
``idx_pred_layer.*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from daefr.config import DAEFRConfig
from daefr.ops import Impl, check_impl, code_head
from daefr.quality.prior import QualityPrior, check_quality
from daefr.transformer import TransformerLayer
from daefr.vqgan import Codebook, Decoder, Encoder, MultiHeadAttnBlock

# Submodules of ``vqvae`` that only training uses; absent unless ``training_modules``.
TRAINING_ONLY_PREFIXES: tuple[str, ...] = (
    "vqvae.Fixed_encoder.",
    "vqvae.HQ_quantize.",
    "vqvae.LQ_quantize.",
    "vqvae.Fixed_quant_conv.",
)


@dataclass(frozen=True)
class Restoration:
    """restored: (B, 3, H, W) float, about [-1, 1], not clamped; code_idx: (B, N) int64;
    plus_idx: the HQ+ codes (B, N) int64 of a quality-conditioned model, else None."""

    restored: torch.Tensor
    code_idx: torch.Tensor
    plus_idx: torch.Tensor | None = None


class DualVQGAN(nn.Module):
    """The ``vqvae`` container: LQ encoder, HQ encoder, HQ decoder and the HQ codebook."""

    def __init__(self, config: DAEFRConfig, impl: Impl = "torch") -> None:
        super().__init__()
        cfg = config.vqgan
        self.encoder = Encoder(cfg, impl)  # LQ branch
        self.HQ_encoder = Encoder(cfg, impl)
        if config.training_modules:
            self.Fixed_encoder = Encoder(cfg, impl)
        self.decoder = Decoder(cfg, impl)
        self.Fixed_quantize = Codebook(cfg.codebook_size, cfg.code_dim, impl)  # the HQ codebook
        if config.training_modules:
            self.HQ_quantize = Codebook(cfg.codebook_size, cfg.code_dim, impl)
            self.LQ_quantize = Codebook(cfg.codebook_size, cfg.code_dim, impl)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.HQ_quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        if config.training_modules:
            self.Fixed_quant_conv = nn.Conv2d(cfg.z_channels, cfg.code_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.code_dim, cfg.z_channels, 1)


class DAEFR(nn.Module):
    """Dual Associated Encoder for Face Restoration (inference).

    ``impl`` picks the implementation of attention, code head and quantizer:
    ``"torch"`` (plain PyTorch) or ``"triton"`` (the fused kernels in ``daefr.kernels``).
    """

    def __init__(self, config: DAEFRConfig | None = None, impl: Impl = "torch") -> None:
        super().__init__()
        self.config = config or DAEFRConfig()
        self.impl = check_impl(impl)
        cfg = self.config
        vq = cfg.vqgan
        self.position_emb = nn.Parameter(torch.zeros(cfg.num_tokens, cfg.transformer_dim))
        self.vqvae = DualVQGAN(cfg, impl)
        self.cross_attention = MultiHeadAttnBlock(vq.code_dim, cfg.fusion_heads, vq.norm_groups, impl)
        self.feat_emb = nn.Linear(vq.code_dim, cfg.transformer_dim)
        self.ft_layers = nn.ModuleList(
            TransformerLayer(cfg.transformer_dim, cfg.transformer_heads, cfg.transformer_ffn, impl)
            for _ in range(cfg.transformer_layers)
        )
        self.idx_pred_layer = nn.Sequential(
            nn.LayerNorm(cfg.transformer_dim),
            nn.Linear(cfg.transformer_dim, vq.codebook_size, bias=False),
        )
        if cfg.quality is not None:  # IQPFR plug-in: its keys (iqp.*) come after the plain ones
            self.iqp = QualityPrior(cfg, impl)

    # -- stages ---------------------------------------------------------------------------
    def check_input(self, image: torch.Tensor) -> None:
        r = self.config.vqgan.resolution
        if image.ndim != 4 or image.shape[1] != 3 or image.shape[2:] != (r, r):
            raise ValueError(f"expected an image batch of shape (B, 3, {r}, {r}), got {tuple(image.shape)}")

    def encode_lq(self, image: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, R, R) in [-1, 1] -> LQ features (B, D, r, r)."""
        return self.vqvae.quant_conv(self.vqvae.encoder(image))

    def encode_hq(self, image: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, R, R) in [-1, 1] (the degraded face) -> HQ features (B, D, r, r)."""
        return self.vqvae.HQ_quant_conv(self.vqvae.HQ_encoder(image))

    def fuse(self, hq_feat: torch.Tensor, lq_feat: torch.Tensor) -> torch.Tensor:
        """MHCA: queries from LQ, keys/values from HQ, residual on HQ -> (B, D, r, r)."""
        return self.cross_attention(hq_feat, lq_feat)

    def transformer_features(
        self, fused_feat: torch.Tensor, quality: torch.Tensor | None = None
    ) -> torch.Tensor:
        """fused_feat: (B, D, r, r) [, quality (B,) in [0, 1]] -> token features (B, N, C)."""
        tokens = fused_feat.flatten(2).transpose(1, 2)  # (B, N, D), token = row * r + col
        x = self.feat_emb(tokens)  # (B, N, C)
        if quality is not None:
            x = self.iqp.condition(x, quality)
        pos = self.position_emb.unsqueeze(0).to(x.dtype)  # (1, N, C)
        for layer in self.ft_layers:
            x = layer(x, pos)
        return x

    def predict_logits(self, fused_feat: torch.Tensor) -> torch.Tensor:
        """-> code logits (B, N, K)."""
        return self.idx_pred_layer(self.transformer_features(fused_feat))

    def predict_codes(self, fused_feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (code_idx (B, N) int64, quantized features (B, D, r, r))."""
        x = self.transformer_features(fused_feat)
        b, n, c = x.shape
        norm, proj = self.idx_pred_layer
        head = code_head(
            x.reshape(b * n, c), norm, proj.weight, self.vqvae.Fixed_quantize.embedding.weight, self.impl
        )
        return head.idx.reshape(b, n), self.codes_to_features(head.codes.reshape(b, n, -1))

    def predict_dual_codes(
        self, fused_feat: torch.Tensor, quality: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conditioned model: -> (common idx (B, N), HQ+ idx (B, N), decoder input (B, D, r, r))."""
        x = self.transformer_features(fused_feat, quality)
        b, n, c = x.shape
        flat = x.reshape(b * n, c)
        heads = []
        for (norm, proj), codebook in (
            (self.idx_pred_layer, self.vqvae.Fixed_quantize),
            (self.iqp.plus_pred_layer, self.iqp.hq_plus_quantize),
        ):
            head = code_head(flat, norm, proj.weight, codebook.embedding.weight, self.impl)
            heads.append((head.idx.reshape(b, n), self.codes_to_features(head.codes.reshape(b, n, -1))))
        (common_idx, common), (plus_idx, plus) = heads
        return common_idx, plus_idx, self.iqp.fuse_codes(common, plus)

    def lookup_dual(self, code_idx: torch.Tensor, plus_idx: torch.Tensor) -> torch.Tensor:
        """Conditioned model: common and HQ+ idx (B, N) -> fused decoder input (B, D, r, r)."""
        plus = self.codes_to_features(self.iqp.hq_plus_quantize.lookup(plus_idx))
        return self.iqp.fuse_codes(self.lookup(code_idx), plus)

    def codes_to_features(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: (B, N, D) -> (B, D, r, r)."""
        b, n, d = codes.shape
        r = self.config.vqgan.latent_size
        return codes.transpose(1, 2).reshape(b, d, r, r)

    def lookup(self, code_idx: torch.Tensor) -> torch.Tensor:
        """code_idx: (B, N) int -> quantized HQ features (B, D, r, r)."""
        return self.codes_to_features(self.vqvae.Fixed_quantize.lookup(code_idx))

    def decode_features(self, quant_feat: torch.Tensor) -> torch.Tensor:
        """quantized features (B, D, r, r) -> restored (B, 3, R, R), not clamped."""
        return self.vqvae.decoder(self.vqvae.post_quant_conv(quant_feat))

    def decode(self, code_idx: torch.Tensor) -> torch.Tensor:
        """code_idx: (B, N) -> restored (B, 3, R, R)."""
        return self.decode_features(self.lookup(code_idx))

    # -- end to end -----------------------------------------------------------------------
    def forward(self, image: torch.Tensor, quality: torch.Tensor | None = None) -> Restoration:
        """image: (B, 3, R, R) float in [-1, 1] -> Restoration(restored, code_idx).

        ``quality`` (B,) in [0, 1]: the condition S of a quality-conditioned model (default: the
        highest S it was trained for); a plain model refuses it.
        """
        self.check_input(image)
        if self.config.quality is None and quality is not None:
            raise ValueError("quality: this is a plain DAEFR model; only an IQPFR-conditioned one takes it")
        fused = self.fuse(self.encode_hq(image), self.encode_lq(image))
        if self.config.quality is not None:
            if quality is None:
                quality = torch.full((image.shape[0],), self.iqp.default_quality, device=image.device)
            check_quality(quality, image.shape[0])
            code_idx, plus_idx, quant_feat = self.predict_dual_codes(fused, quality)
            return Restoration(self.decode_features(quant_feat), code_idx, plus_idx)
        code_idx, quant_feat = self.predict_codes(fused)
        return Restoration(self.decode_features(quant_feat), code_idx)
