"""Fused attention, softmax(q k^T / sqrt(Dh)) v, with a flash-style online softmax.

Grid: (query blocks, batch * heads, head-dim slices of the output). Each program streams the
keys and values in BLOCK_N tiles, keeping the running row max, row sum and a (BLOCK_M,
BLOCK_DV) accumulator on chip, so the (Nq, Nk) score matrix never reaches global memory.

DAEFR's shapes over N = 256 tokens: 8 heads x 32 (MHCA), 8 x 64 (transformer) and 1 x 512
(VQGAN blocks). Scores are summed over the head dim in BLOCK_D chunks; the output is split in
BLOCK_DV slices along the head dim so Dh = 512 needs no 512-wide accumulator (each slice
recomputes the scores: 4 slices at Dh = 512, which also gives 4x the programs at B = 1).
Inputs keep their strides (the model passes transposed views); the output is contiguous.
"""

from __future__ import annotations

import math

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
    next_power_of_2,
    run_plan,
    upcast,
)
from ._tiles import attention_tile_configs

_CONFIGS = attention_tile_configs()


@triton.autotune(configs=_CONFIGS, key=["N_Q", "N_KV", "HEAD_DIM", "DOT_PRECISION"])
@triton.jit
def _attention_kernel(
    # pointers
    q_ptr,
    k_ptr,
    v_ptr,
    o_ptr,
    # sizes
    H,
    N_Q,
    N_KV,
    HEAD_DIM,
    qk_scale,
    # strides
    stride_qb,
    stride_qh,
    stride_qn,
    stride_qd,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_kd,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_vd,
    stride_ob,
    stride_oh,
    stride_on,
    stride_od,
    # meta-parameters
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    SINGLE_D: tl.constexpr,
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_dv = tl.program_id(2)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    o_base = o_ptr + b * stride_ob + h * stride_oh

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < N_Q
    arange_n = tl.arange(0, BLOCK_N)
    arange_d = tl.arange(0, BLOCK_D)
    offs_dv = pid_dv * BLOCK_DV + tl.arange(0, BLOCK_DV)
    mask_dv = offs_dv < HEAD_DIM
    # constexpr, not a runtime test: q_all must exist at compile time where it is used
    if SINGLE_D:  # the whole head dim in one chunk: load q once
        q_all = tl.load(
            q_base + offs_m[:, None] * stride_qn + arange_d[None, :] * stride_qd,
            mask=mask_m[:, None] & (arange_d[None, :] < HEAD_DIM),
            other=0.0,
        )
        if UPCAST:
            q_all = q_all.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running row max (log2 units)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running row sum
    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    for n0 in range(0, N_KV, BLOCK_N):
        offs_n = n0 + arange_n
        mask_n = offs_n < N_KV
        s = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for d0 in range(0, HEAD_DIM, BLOCK_D):
            offs_d = d0 + arange_d
            mask_d = offs_d < HEAD_DIM
            if SINGLE_D:
                q = q_all
            else:
                q = tl.load(
                    q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                    mask=mask_m[:, None] & mask_d[None, :],
                    other=0.0,
                )
            kt = tl.load(
                k_base + offs_d[:, None] * stride_kd + offs_n[None, :] * stride_kn,
                mask=mask_d[:, None] & mask_n[None, :],
                other=0.0,
            )  # (BLOCK_D, BLOCK_N), k transposed
            if UPCAST:
                q = q.to(tl.float32)
                kt = kt.to(tl.float32)
            s = tl.dot(q, kt, s, input_precision=DOT_PRECISION)
        s = tl.where(mask_n[None, :], s * qk_scale, float("-inf"))  # qk_scale includes log2(e)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_dv[None, :] * stride_vd,
            mask=mask_n[:, None] & mask_dv[None, :],
            other=0.0,
        )  # (BLOCK_N, BLOCK_DV)
        if UPCAST:
            v = v.to(tl.float32)
        # p rounded to v's dtype for the tensor-core product, as flash-attention does
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
        m_i = m_new

    out = acc / l_i[:, None]
    tl.store(
        o_base + offs_m[:, None] * stride_on + offs_dv[None, :] * stride_od,
        out.to(o_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_dv[None, :],
    )


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    op = "fused_attention"
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_rank(op, name, t, "(B, H, N, Dh)")
    if k.shape != v.shape:
        raise ValueError(f"{op}: k and v must have one shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"{op}: q {tuple(q.shape)} and k {tuple(k.shape)} must share B, H and Dh "
            "(q: (B, H, Nq, Dh), k and v: (B, H, Nk, Dh))"
        )
    if k.shape[2] == 0 or q.shape[3] == 0:
        raise ValueError(f"{op}: needs at least one key and Dh >= 1, got k {tuple(k.shape)}")
    check_dtypes(op, {"q": q, "k": k, "v": v})


def _head_dim_blocks(head_dim: int) -> tuple[int, int]:
    """(BLOCK_D for the scores, BLOCK_DV for the output slice); >= 16 for tl.dot."""
    padded = max(16, next_power_of_2(head_dim))
    return min(padded, 128), min(padded, 128)


def plan_fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, KernelLaunch | None]:
    """Allocate the output and build the launch; None when the output is empty."""
    batch, heads, n_q, head_dim = q.shape
    n_kv = k.shape[2]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out, None
    block_d, block_dv = _head_dim_blocks(head_dim)

    def grid(meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(n_q, meta["BLOCK_M"]), batch * heads, triton.cdiv(head_dim, block_dv))

    qk_scale = math.log2(math.e) / math.sqrt(head_dim)
    args = (
        q, k, v, out, heads, n_q, n_kv, head_dim, qk_scale,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
    )  # fmt: skip
    kwargs = {
        "BLOCK_D": block_d,
        "BLOCK_DV": block_dv,
        "SINGLE_D": block_d >= head_dim,
        "UPCAST": upcast(q.dtype),
        "DOT_PRECISION": dot_precision(q.dtype),
    }
    return out, KernelLaunch(_attention_kernel, grid, args, kwargs)


@torch.library.custom_op("daefr::fused_attention", mutates_args=())
def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: (B, H, Nq, Dh); k, v: (B, H, Nk, Dh); one dtype (fp32/fp16/bf16), any strides
    -> (B, H, Nq, Dh) contiguous. Softmax statistics and accumulation in fp32."""
    _check(q, k, v)
    check_devices("fused_attention", {"q": q, "k": k, "v": v})
    return run_plan(plan_fused_attention(q, k, v))


@fused_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    _check(q, k, v)
    return q.new_empty(q.shape)


@fused_attention.register_kernel("cpu")
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """CPU tensors: the Triton kernel under ``TRITON_INTERPRET=1`` (its tests), else the
    reference with the kernel's fp32 softmax and accumulation, so tracing and export of an
    ``impl="triton"`` model need no process-wide interpreter switch."""
    _check(q, k, v)
    if interpreting():
        return run_plan(plan_fused_attention(q, k, v))
    return attention_ref(q.float(), k.float(), v.float()).to(q.dtype).contiguous()


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch in the input dtype (the "same dtype" baseline of the tolerance rule)."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Nq, Nk)
    return torch.softmax(scores, dim=-1) @ v
