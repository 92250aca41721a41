"""Fused code-prediction head: LayerNorm(C) + Linear(C -> K, no bias) + argmax + gather.

Each program owns BLOCK_M tokens: it takes their LayerNorm statistics (two passes, fp32),
then walks the K codes in BLOCK_K tiles, normalising x chunk by chunk on the fly and keeping a
running (max logit, index) per token, so the (M, K) logits stay on chip unless asked for.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import (
    KernelLaunch,
    check_devices,
    check_dtypes,
    check_rank,
    dot_precision,
    interpreting,
    run_plan,
    upcast,
)
from ._tiles import codebook_tile_configs

_CONFIGS = codebook_tile_configs("BLOCK_C", interpreter_inner=128)


@triton.autotune(configs=_CONFIGS, key=["M", "C", "K", "STORE_LOGITS", "DOT_PRECISION"])
@triton.jit
def _code_head_kernel(
    # pointers
    x_ptr,
    ln_w_ptr,
    ln_b_ptr,
    w_ptr,
    codebook_ptr,
    idx_ptr,
    codes_ptr,
    logits_ptr,
    # sizes
    M,
    C,
    K,
    D,
    eps,
    # strides
    stride_xm,
    stride_xc,
    stride_wk,
    stride_wc,
    stride_ck,
    stride_cd,
    stride_om,
    stride_od,
    stride_lm,
    stride_lk,
    # meta-parameters
    STORE_LOGITS: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    arange_k = tl.arange(0, BLOCK_K)
    arange_c = tl.arange(0, BLOCK_C)
    x_rows = x_ptr + offs_m[:, None] * stride_xm

    # LayerNorm statistics in fp32: mean, then the variance around it (no cancellation)
    total = tl.zeros([BLOCK_M], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + arange_c
        mask = mask_m[:, None] & (offs_c[None, :] < C)
        total += tl.sum(tl.load(x_rows + offs_c[None, :] * stride_xc, mask=mask, other=0.0).to(tl.float32), 1)
    mean = total / C
    sq = tl.zeros([BLOCK_M], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + arange_c
        mask = mask_m[:, None] & (offs_c[None, :] < C)
        xc = tl.load(x_rows + offs_c[None, :] * stride_xc, mask=mask, other=0.0).to(tl.float32)
        xc = tl.where(mask, xc - mean[:, None], 0.0)
        sq += tl.sum(xc * xc, 1)
    rstd = 1.0 / tl.sqrt(sq / C + eps)

    best = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    best_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + arange_k
        mask_k = offs_k < K
        logits = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + arange_c
            mask_c = offs_c < C
            xc = tl.load(
                x_rows + offs_c[None, :] * stride_xc, mask=mask_m[:, None] & mask_c[None, :], other=0.0
            ).to(tl.float32)
            gamma = tl.load(ln_w_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
            beta = tl.load(ln_b_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
            xn = (xc - mean[:, None]) * rstd[:, None] * gamma[None, :] + beta[None, :]  # (BLOCK_M, BLOCK_C)
            w = tl.load(
                w_ptr + offs_c[:, None] * stride_wc + offs_k[None, :] * stride_wk,
                mask=mask_c[:, None] & mask_k[None, :],
                other=0.0,
            )  # (BLOCK_C, BLOCK_K), the weight tile transposed
            if UPCAST:
                w = w.to(tl.float32)
            # LayerNorm output rounded to the weight dtype, as PyTorch's LayerNorm returns it
            logits = tl.dot(xn.to(w.dtype), w, logits, input_precision=DOT_PRECISION)
        if STORE_LOGITS:
            tl.store(
                logits_ptr + offs_m[:, None] * stride_lm + offs_k[None, :] * stride_lk,
                logits.to(logits_ptr.dtype.element_ty),
                mask=mask_m[:, None] & mask_k[None, :],
            )
        logits = tl.where(mask_k[None, :], logits, float("-inf"))
        tile_max, tile_arg = tl.max(logits, axis=1, return_indices=True, return_indices_tie_break_left=True)
        # strict ">": an earlier tile keeps a tie, so the first index wins as in torch.argmax
        better = tile_max > best
        best = tl.where(better, tile_max, best)
        best_idx = tl.where(better, tile_arg + k0, best_idx)

    tl.store(idx_ptr + offs_m, best_idx.to(tl.int64), mask=mask_m)
    for d0 in range(0, D, BLOCK_C):
        offs_d = d0 + arange_c
        mask = mask_m[:, None] & (offs_d[None, :] < D)
        code = tl.load(codebook_ptr + best_idx[:, None] * stride_ck + offs_d[None, :] * stride_cd, mask=mask)
        tl.store(codes_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, code, mask=mask)


def _check(
    x: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    proj_weight: torch.Tensor,
    codebook: torch.Tensor,
) -> dict[str, torch.Tensor]:
    op = "code_head"
    check_rank(op, "x", x, "(M, C)")
    check_rank(op, "ln_weight", ln_weight, "(C,)")
    check_rank(op, "ln_bias", ln_bias, "(C,)")
    check_rank(op, "proj_weight", proj_weight, "(K, C)")
    check_rank(op, "codebook", codebook, "(K, D)")
    c = x.shape[1]
    if ln_weight.shape[0] != c or ln_bias.shape[0] != c or proj_weight.shape[1] != c:
        raise ValueError(
            f"{op}: channel count differs: x {tuple(x.shape)}, ln_weight {tuple(ln_weight.shape)}, "
            f"ln_bias {tuple(ln_bias.shape)}, proj_weight {tuple(proj_weight.shape)}"
        )
    if proj_weight.shape[0] != codebook.shape[0]:
        raise ValueError(
            f"{op}: proj_weight has {proj_weight.shape[0]} rows but the codebook {codebook.shape[0]} codes"
        )
    if codebook.shape[0] == 0 or c == 0:
        raise ValueError(f"{op}: empty codebook or zero channels (x {tuple(x.shape)})")
    tensors = {"x": x, "ln_weight": ln_weight, "ln_bias": ln_bias, "proj_weight": proj_weight}
    check_dtypes(op, {**tensors, "codebook": codebook})
    return {**tensors, "codebook": codebook}


def plan_code_head(
    x: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    proj_weight: torch.Tensor,
    codebook: torch.Tensor,
    return_logits: bool,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], KernelLaunch | None]:
    """Allocate the outputs (idx, codes, logits) and build the launch; None when M == 0."""
    m, c = x.shape
    k, d = codebook.shape
    idx = torch.empty(m, dtype=torch.int64, device=x.device)
    codes = torch.empty(m, d, dtype=codebook.dtype, device=x.device)
    logits = torch.empty(m, k if return_logits else 0, dtype=x.dtype, device=x.device)
    if m == 0:
        return (idx, codes, logits), None

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(m, meta["BLOCK_M"]),)

    # an empty (M, 0) tensor may have no valid address: pass codes, never written then
    logits_or_codes = logits if return_logits else codes
    args = (
        x, ln_weight, ln_bias, proj_weight, codebook, idx, codes, logits_or_codes, m, c, k, d, eps,
        *x.stride(), *proj_weight.stride(), *codebook.stride(), *codes.stride(), *logits.stride(),
    )  # fmt: skip
    kwargs = {
        "STORE_LOGITS": return_logits,
        "UPCAST": upcast(x.dtype),
        "DOT_PRECISION": dot_precision(x.dtype),
    }
    return (idx, codes, logits), KernelLaunch(_code_head_kernel, grid, args, kwargs)


@torch.library.custom_op("daefr::code_head", mutates_args=())
def code_head(
    x: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    proj_weight: torch.Tensor,
    codebook: torch.Tensor,
    return_logits: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x: (M, C); ln_weight, ln_bias: (C,); proj_weight: (K, C); codebook: (K, D); one dtype
    -> (idx (M,) int64, codes (M, D) in codebook dtype, logits (M, K) in x dtype, or (M, 0)
    when ``return_logits`` is False). LayerNorm and logits in fp32, first index on ties.
    """
    tensors = _check(x, ln_weight, ln_bias, proj_weight, codebook)
    check_devices("code_head", tensors)
    return run_plan(plan_code_head(x, ln_weight, ln_bias, eps, proj_weight, codebook, return_logits))


@code_head.register_fake
def _(x, ln_weight, ln_bias, eps, proj_weight, codebook, return_logits):
    _check(x, ln_weight, ln_bias, proj_weight, codebook)
    m = x.shape[0]
    k, d = codebook.shape
    idx = x.new_empty(m, dtype=torch.int64)
    return idx, codebook.new_empty(m, d), x.new_empty(m, k if return_logits else 0)


@code_head.register_kernel("cpu")
def _(x, ln_weight, ln_bias, eps, proj_weight, codebook, return_logits):
    """CPU tensors: the Triton kernel under ``TRITON_INTERPRET=1`` (its tests), else the
    reference with the kernel's fp32 LayerNorm and logits, so tracing and export of an
    ``impl="triton"`` model need no process-wide interpreter switch."""
    _check(x, ln_weight, ln_bias, proj_weight, codebook)
    if interpreting():
        return run_plan(plan_code_head(x, ln_weight, ln_bias, eps, proj_weight, codebook, return_logits))
    f32 = (t.float() for t in (x, ln_weight, ln_bias))
    idx, _, logits = code_head_ref(*f32, eps, proj_weight.float(), codebook)
    logits = logits.to(x.dtype) if return_logits else x.new_empty(x.shape[0], 0)
    return idx, codebook[idx].contiguous(), logits


def code_head_ref(
    x: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    proj_weight: torch.Tensor,
    codebook: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain PyTorch in the input dtype -> (idx, codes, logits (M, K))."""
    xn = torch.nn.functional.layer_norm(x, (x.shape[-1],), ln_weight, ln_bias, eps)
    logits = xn @ proj_weight.t()  # (M, K)
    idx = logits.argmax(dim=-1)
    return idx, codebook[idx], logits
