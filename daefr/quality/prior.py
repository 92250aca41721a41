"""The quality-conditioned part of DAEFR (IQPFR Fig. 3), registered as ``model.iqp``.

What the paper fixes and what is chosen here (the paper's summary is silent on the layers):

- **HQ+ codebook** ``hq_plus_quantize`` (K+, D): quantizes the same HQ features Z_h as the common
  codebook, learned only from faces scoring above S_thr (``daefr.training.iqp_codebook``).
- **Condition**: the score S (B,) in [0, 1] -> Fourier features -> MLP -> FiLM (scale, shift)
  of the transformer's input tokens. FiLM, not an extra token, so that every token sees S
  through the same per-channel gain; the last layer starts at zero, so a fresh plug-in
  leaves the plain transformer's features unchanged.
- **Two code sequences**: the plain head ``idx_pred_layer`` predicts the common codes, a second
  head ``plus_pred_layer`` the HQ+ codes, from the same conditioned features.
- **Fusion** ``fuse``: 1x1 conv of the two looked-up maps concatenated (B, 2D, r, r) -> (B, D,
  r, r), the decoder's input. It starts as "common codes only" ([I | 0]), so the plain
  decoder sees what it was trained on until ``iqp-codebook`` teaches it the HQ+ half.
- Buffers: ``threshold`` (S_thr) and ``quality_range`` ([lowest, highest] S the model was
  trained for); ``--quality`` defaults to the highest.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from daefr.config import DAEFRConfig
from daefr.ops import Impl
from daefr.vqgan import Codebook


def fourier_features(quality: torch.Tensor, dim: int) -> torch.Tensor:
    """quality (B,) in [0, 1] -> (B, dim): sin and cos of pi*f*S, f = 1..dim/2.

    pi, not 2*pi: with 2*pi every frequency has period 1 and S = 0 and S = 1 got the same
    features (measured: identical codes); cos(pi*S) is monotone on [0, 1], so every S differs.
    """
    freqs = torch.arange(1, dim // 2 + 1, dtype=torch.float32, device=quality.device)  # (F,)
    angles = math.pi * quality.float().unsqueeze(-1) * freqs  # (B, F)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class QualityPrior(nn.Module):
    def __init__(self, config: DAEFRConfig, impl: Impl = "torch") -> None:
        super().__init__()
        q = config.quality
        if q is None:
            raise ValueError("QualityPrior needs DAEFRConfig.quality")
        c, d = config.transformer_dim, config.vqgan.code_dim
        self.embed_dim = q.embed_dim
        self.hq_plus_quantize = Codebook(q.hq_plus_size, d, impl)
        self.cond = nn.Sequential(nn.Linear(q.embed_dim, c), nn.SiLU(), nn.Linear(c, 2 * c))
        self.plus_pred_layer = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, q.hq_plus_size, bias=False))
        self.fuse = nn.Conv2d(2 * d, d, 1)
        self.register_buffer("threshold", torch.tensor(q.threshold, dtype=torch.float32))
        self.register_buffer("quality_range", torch.tensor([0.0, 1.0], dtype=torch.float32))
        with torch.no_grad():
            nn.init.zeros_(self.cond[2].weight)
            nn.init.zeros_(self.cond[2].bias)
            self.fuse.weight.zero_()
            self.fuse.weight[:, :d, 0, 0] = torch.eye(d)
            self.fuse.bias.zero_()

        self.run_quality: float | None = None  # set by ``--quality``; not a weight, never saved

    @property
    def default_quality(self) -> float:
        """The S a call without ``quality`` runs at: ``run_quality`` if set (``--quality``, so
        that every backend wrapper calling ``model(image)`` keeps it), else the highest S the
        model was trained for."""
        return float(self.quality_range[1]) if self.run_quality is None else self.run_quality

    def condition(self, tokens: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, C), quality (B,) -> FiLM-conditioned tokens (B, N, C)."""
        scale, shift = self.cond(fourier_features(quality, self.embed_dim)).to(tokens.dtype).chunk(2, -1)
        return tokens * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # (B, 1, C) broadcast over N

    def fuse_codes(self, common: torch.Tensor, plus: torch.Tensor) -> torch.Tensor:
        """common, plus: (B, D, r, r) looked-up maps -> decoder input (B, D, r, r)."""
        return self.fuse(torch.cat([common, plus], dim=1))


def check_quality(quality: torch.Tensor, batch: int) -> None:
    """quality must be (B,) floats in [0, 1] (eager check; the ONNX graph does not check)."""
    if quality.ndim != 1 or quality.shape[0] != batch or not quality.is_floating_point():
        raise ValueError(
            f"quality must be a ({batch},) float tensor, got {tuple(quality.shape)} {quality.dtype}"
        )
    if not bool(((quality >= 0) & (quality <= 1)).all()):
        raise ValueError(f"quality must be in [0, 1], got {quality.tolist()}")
