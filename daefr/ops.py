"""The three hot operations of DAEFR behind one explicit ``impl`` choice.

``impl="torch"`` runs plain PyTorch; ``impl="triton"`` runs the fused kernels of
``daefr.kernels`` (imported only when first used, so this module works without Triton).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

Impl = Literal["torch", "triton"]
IMPLS: tuple[str, ...] = ("torch", "triton")


def check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose one of {IMPLS}")
    return impl


class CodeHeadOutput(NamedTuple):
    """idx: (M,) int64; codes: (M, D); logits: (M, K) or None."""

    idx: torch.Tensor
    codes: torch.Tensor
    logits: torch.Tensor | None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, impl: Impl = "torch") -> torch.Tensor:
    """softmax(q k^T / sqrt(Dh)) v.  q: (B, heads, Nq, Dh); k, v: (B, heads, Nk, Dh)."""
    if impl == "triton":
        from daefr.kernels import fused_attention

        return fused_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)


def nearest_code(
    z: torch.Tensor, codebook: torch.Tensor, impl: Impl = "torch"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest codebook row by squared L2 distance (first index wins ties).

    z: (M, D); codebook: (K, D) -> (idx (M,) int64, codes (M, D) in codebook dtype).
    """
    if impl == "triton":
        from daefr.kernels import nearest_code as nearest_code_triton

        return nearest_code_triton(z, codebook)
    zf, cf = z.float(), codebook.float()
    dist = (zf * zf).sum(1, keepdim=True) - 2 * zf @ cf.t() + (cf * cf).sum(1)[None, :]
    idx = dist.argmin(dim=1)
    return idx, codebook[idx]


def code_head(
    x: torch.Tensor,
    norm: torch.nn.LayerNorm,
    proj_weight: torch.Tensor,
    codebook: torch.Tensor,
    impl: Impl = "torch",
    return_logits: bool = False,
) -> CodeHeadOutput:
    """LayerNorm + Linear(no bias) + argmax + codebook gather.

    x: (M, C); proj_weight: (K, C); codebook: (K, D).
    """
    if impl == "triton":
        from daefr.kernels import code_head as code_head_triton
        from daefr.kernels import code_head_with_logits

        args = (x, norm.weight, norm.bias, norm.eps, proj_weight, codebook)
        if return_logits:
            return CodeHeadOutput(*code_head_with_logits(*args))
        idx, codes = code_head_triton(*args)
        return CodeHeadOutput(idx, codes, None)
    logits = F.linear(norm(x), proj_weight)  # (M, K)
    idx = logits.argmax(dim=-1)
    return CodeHeadOutput(idx, codebook[idx], logits if return_logits else None)
