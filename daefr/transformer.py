"""The code-prediction transformer: pre-LN self-attention layers with a learned position
embedding added to queries and keys (CodeFormer's ``TransformerSALayer``), and the head.

Parameter names follow ``nn.MultiheadAttention`` (``in_proj_weight``, ``out_proj``) so the
official checkpoint loads unchanged; the attention itself goes through ``daefr.ops``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from daefr.ops import Impl, attention, check_impl


class SelfAttention(nn.Module):
    """Multi-head self-attention, batch first: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, heads: int, impl: Impl = "torch") -> None:
        super().__init__()
        self.heads = heads
        self.impl = check_impl(impl)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        qk_in = x + pos  # position embedding on queries and keys only
        q = F.linear(qk_in, w_q, b_q)
        k = F.linear(qk_in, w_k, b_k)
        v = F.linear(x, w_v, b_v)
        # (B, N, C) -> (B, heads, N, C/heads)
        q, k, v = (t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        out = attention(q, k, v, self.impl).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(out)


class TransformerLayer(nn.Module):
    """Pre-LN: x + attn(LN(x)), then x + FFN(LN(x)) with exact GELU."""

    def __init__(self, dim: int, heads: int, ffn: int, impl: Impl = "torch") -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, heads, impl)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), pos)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))
