"""VQGAN building blocks with the parameter names of taming-transformers / RestoreFormer.

Every module here keeps the original attribute names (``norm1``, ``conv1``, ``nin_shortcut``,
``q``/``k``/``v``/``proj_out``, ``down.{i}.block.{j}``...) because the official checkpoint's
keys are these names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daefr.config import VQGANConfig
from daefr.ops import Impl, attention, check_impl, nearest_code

GROUPNORM_EPS = 1e-6


def normalize(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=GROUPNORM_EPS, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = normalize(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)
        else:
            self.nin_shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        shortcut = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return shortcut + h


class MultiHeadAttnBlock(nn.Module):
    """RestoreFormer's attention block over a (B, C, H, W) map.

    Self-attention: ``forward(x)``; q, k, v all come from ``norm1(x)``.
    Cross-attention: ``forward(x, y)``; queries from ``norm2(y)``, keys and values from
    ``norm1(x)``. The output is always added to the raw ``x``.
    """

    def __init__(self, channels: int, heads: int, groups: int, impl: Impl = "torch") -> None:
        super().__init__()
        self.heads = heads
        self.impl = check_impl(impl)
        self.norm1 = normalize(channels, groups)
        self.norm2 = normalize(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, c, h, w = t.shape
        # (B, C, H, W) -> (B, heads, N, C/heads); channel c belongs to head c // (C/heads)
        return t.reshape(b, self.heads, c // self.heads, h * w).transpose(2, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        kv_source = self.norm1(x)
        q_source = kv_source if y is None else self.norm2(y)
        q = self._split_heads(self.q(q_source))
        k = self._split_heads(self.k(kv_source))
        v = self._split_heads(self.v(kv_source))
        out = attention(q, k, v, self.impl)  # (B, heads, N, C/heads)
        out = out.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Asymmetric pad (right, bottom) then a stride-2 3x3 conv, as in taming."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution level: ``block`` (resnets), ``attn`` (maybe empty), down/upsample."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def run_blocks(self, h: torch.Tensor) -> torch.Tensor:
        """Each resnet block, followed by its attention block where the level has them."""
        for i_block, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i_block](h)
        return h


class Encoder(nn.Module):
    """(B, 3, R, R) in [-1, 1] -> (B, z_channels, R/2^(L-1), R/2^(L-1))."""

    def __init__(self, cfg: VQGANConfig, impl: Impl = "torch") -> None:
        super().__init__()
        groups = cfg.norm_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        resolution = cfg.resolution
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for i_level, mult in enumerate(cfg.ch_mult):
            level = Level()
            block_in = cfg.ch * in_mult[i_level]
            block_out = cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out, groups))
                block_in = block_out
                if resolution in cfg.attn_resolutions:
                    level.attn.append(MultiHeadAttnBlock(block_in, cfg.attn_heads, groups, impl))
            if i_level != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(block_in)
                resolution //= 2
            self.down.append(level)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, groups)
        self.mid.attn_1 = MultiHeadAttnBlock(block_in, cfg.attn_heads, groups, impl)
        self.mid.block_2 = ResnetBlock(block_in, block_in, groups)
        self.norm_out = normalize(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level.run_blocks(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, r, r) -> (B, 3, R, R), not clamped."""

    def __init__(self, cfg: VQGANConfig, impl: Impl = "torch") -> None:
        super().__init__()
        groups = cfg.norm_groups
        block_in = cfg.ch * cfg.ch_mult[-1]
        resolution = cfg.latent_size
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(block_in, block_in, groups)
        self.mid.attn_1 = MultiHeadAttnBlock(block_in, cfg.attn_heads, groups, impl)
        self.mid.block_2 = ResnetBlock(block_in, block_in, groups)
        levels: list[Level] = []
        for i_level in reversed(range(len(cfg.ch_mult))):
            level = Level()
            block_out = cfg.ch * cfg.ch_mult[i_level]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out, groups))
                block_in = block_out
                if resolution in cfg.attn_resolutions:
                    level.attn.append(MultiHeadAttnBlock(block_in, cfg.attn_heads, groups, impl))
            if i_level != 0:
                level.upsample = Upsample(block_in)
                resolution *= 2
            levels.insert(0, level)  # up.0 is the full-resolution level, as in taming
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, cfg.in_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for level in reversed(self.up):
            h = level.run_blocks(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Codebook(nn.Module):
    """A (K, D) codebook stored as ``embedding.weight`` (the official key layout)."""

    def __init__(self, size: int, dim: int, impl: Impl = "torch") -> None:
        super().__init__()
        self.impl = check_impl(impl)
        self.embedding = nn.Embedding(size, dim)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        """idx: (B, N) int -> codes (B, N, D)."""
        return self.embedding.weight[idx]

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z: (B, D, h, w) -> (nearest codes (B, D, h, w), idx (B, h*w))."""
        b, d, h, w = z.shape
        tokens = z.permute(0, 2, 3, 1).reshape(b * h * w, d)  # (M, D)
        idx, codes = nearest_code(tokens, self.embedding.weight, self.impl)
        codes = codes.reshape(b, h, w, d).permute(0, 3, 1, 2)
        return codes, idx.reshape(b, h * w)
