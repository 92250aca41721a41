"""Fused nearest-code quantizer: squared L2 to every code, argmin, gather, in one kernel.

Each program owns BLOCK_M tokens and walks the codebook in BLOCK_K tiles, keeping a running
(min distance, index) per token, so the (M, K) distance matrix never reaches global memory.
dist = |z|^2 - 2 z.c + |c|^2 in fp32, the formula of ``daefr.ops.nearest_code``'s torch path.
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

_CONFIGS = codebook_tile_configs("BLOCK_D", interpreter_inner=64)


@triton.autotune(configs=_CONFIGS, key=["M", "K", "D", "DOT_PRECISION"])
@triton.jit
def _nearest_code_kernel(
    # pointers
    z_ptr,
    codebook_ptr,
    idx_ptr,
    codes_ptr,
    # sizes
    M,
    K,
    D,
    # strides
    stride_zm,
    stride_zd,
    stride_ck,
    stride_cd,
    stride_om,
    stride_od,
    # meta-parameters
    UPCAST: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    arange_k = tl.arange(0, BLOCK_K)
    arange_d = tl.arange(0, BLOCK_D)

    # |z|^2 per token, fp32
    zz = tl.zeros([BLOCK_M], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + arange_d
        z = tl.load(
            z_ptr + offs_m[:, None] * stride_zm + offs_d[None, :] * stride_zd,
            mask=mask_m[:, None] & (offs_d[None, :] < D),
            other=0.0,
        ).to(tl.float32)
        zz += tl.sum(z * z, axis=1)

    best_dist = tl.full([BLOCK_M], float("inf"), dtype=tl.float32)
    best_idx = tl.zeros([BLOCK_M], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + arange_k
        mask_k = offs_k < K
        zc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
        cc = tl.zeros([BLOCK_K], dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + arange_d
            mask_d = offs_d < D
            z = tl.load(
                z_ptr + offs_m[:, None] * stride_zm + offs_d[None, :] * stride_zd,
                mask=mask_m[:, None] & mask_d[None, :],
                other=0.0,
            )  # (BLOCK_M, BLOCK_D)
            c = tl.load(
                codebook_ptr + offs_d[:, None] * stride_cd + offs_k[None, :] * stride_ck,
                mask=mask_d[:, None] & mask_k[None, :],
                other=0.0,
            )  # (BLOCK_D, BLOCK_K), the codebook tile transposed
            if UPCAST:
                z = z.to(tl.float32)
                c = c.to(tl.float32)
            zc = tl.dot(z, c, zc, input_precision=DOT_PRECISION)  # fp32 accumulation
            c32 = c.to(tl.float32)
            cc += tl.sum(c32 * c32, axis=0)
        dist = zz[:, None] - 2.0 * zc + cc[None, :]
        dist = tl.where(mask_k[None, :], dist, float("inf"))
        tile_min, tile_arg = tl.min(dist, axis=1, return_indices=True, return_indices_tie_break_left=True)
        # strict "<": an earlier tile keeps a tie, so the first index wins as in torch.argmin
        better = tile_min < best_dist
        best_dist = tl.where(better, tile_min, best_dist)
        best_idx = tl.where(better, tile_arg + k0, best_idx)

    tl.store(idx_ptr + offs_m, best_idx.to(tl.int64), mask=mask_m)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + arange_d
        mask = mask_m[:, None] & (offs_d[None, :] < D)
        code = tl.load(codebook_ptr + best_idx[:, None] * stride_ck + offs_d[None, :] * stride_cd, mask=mask)
        tl.store(codes_ptr + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od, code, mask=mask)


def _check(z: torch.Tensor, codebook: torch.Tensor) -> None:
    op = "nearest_code"
    check_rank(op, "z", z, "(M, D)")
    check_rank(op, "codebook", codebook, "(K, D)")
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"{op}: code dim differs, z is {tuple(z.shape)} and codebook is {tuple(codebook.shape)}"
        )
    if codebook.shape[0] == 0:
        raise ValueError(f"{op}: the codebook is empty")
    check_dtypes(op, {"z": z, "codebook": codebook})


def plan_nearest_code(
    z: torch.Tensor, codebook: torch.Tensor
) -> tuple[tuple[torch.Tensor, torch.Tensor], KernelLaunch | None]:
    """Allocate the outputs (idx, codes) and build the launch; None when there is no token."""
    m, d = z.shape
    k = codebook.shape[0]
    idx = torch.empty(m, dtype=torch.int64, device=z.device)
    codes = torch.empty(m, d, dtype=codebook.dtype, device=z.device)
    if m == 0:
        return (idx, codes), None

    def grid(meta: dict) -> tuple[int]:
        return (triton.cdiv(m, meta["BLOCK_M"]),)

    args = (z, codebook, idx, codes, m, k, d, *z.stride(), *codebook.stride(), *codes.stride())
    kwargs = {"UPCAST": upcast(z.dtype), "DOT_PRECISION": dot_precision(z.dtype)}
    return (idx, codes), KernelLaunch(_nearest_code_kernel, grid, args, kwargs)


@torch.library.custom_op("daefr::nearest_code", mutates_args=())
def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z: (M, D), codebook: (K, D), fp32/fp16/bf16, any strides
    -> (idx (M,) int64, codes (M, D) contiguous in codebook dtype).

    Squared L2 in fp32, first index on ties. NaN tokens get index 0 (torch.argmin returns the
    NaN's position instead).
    """
    _check(z, codebook)
    check_devices("nearest_code", {"z": z, "codebook": codebook})
    return run_plan(plan_nearest_code(z, codebook))


@nearest_code.register_fake
def _(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check(z, codebook)
    idx = z.new_empty(z.shape[0], dtype=torch.int64)
    return idx, codebook.new_empty(z.shape[0], codebook.shape[1])


@nearest_code.register_kernel("cpu")
def _(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CPU tensors: the Triton kernel under ``TRITON_INTERPRET=1`` (its tests), else the
    reference (the same fp32 distance, first index on ties; NaN tokens get index 0 as in the kernel)."""
    _check(z, codebook)
    if interpreting():
        return run_plan(plan_nearest_code(z, codebook))
    idx, _ = nearest_code_ref(z, codebook)
    idx = torch.where(z.isnan().any(dim=1), torch.zeros_like(idx), idx)
    return idx, codebook[idx].contiguous()


def nearest_code_ref(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch: the same fp32 distance formula, argmin, gather."""
    zf, cf = z.float(), codebook.float()
    dist = (zf * zf).sum(1, keepdim=True) - 2 * zf @ cf.t() + (cf * cf).sum(1)[None, :]  # (M, K)
    idx = dist.argmin(dim=1)
    return idx, codebook[idx]
