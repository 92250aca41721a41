"""Autotune configs of the kernels: the codebook walkers (quantizer, code head) and attention.

The GPU lists are what the autotuner tries on a GPU and what ``compile_report`` compiles."""

from __future__ import annotations

import triton

from ._launch import interpreting

# (BLOCK_M tokens, BLOCK_K codes, inner block over the channels, num_warps, num_stages)
GPU_TILES: list[tuple[int, int, int, int, int]] = [
    (16, 64, 128, 4, 2),
    (32, 64, 64, 4, 3),
    (64, 64, 64, 4, 3),
    (64, 128, 64, 8, 3),
    (128, 64, 64, 8, 3),
]


def codebook_tile_configs(inner: str, interpreter_inner: int) -> list[triton.Config]:
    """Configs over (BLOCK_M, BLOCK_K, ``inner``). The interpreter accepts one config only, and
    big tiles mean fewer of its (slow) Python steps: 128 x 128 x ``interpreter_inner`` there."""
    if interpreting():
        return [triton.Config({"BLOCK_M": 128, "BLOCK_K": 128, inner: interpreter_inner})]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_K": bk, inner: bi}, num_warps=w, num_stages=s)
        for bm, bk, bi, w, s in GPU_TILES
    ]


# (BLOCK_M queries, BLOCK_N keys, num_warps, num_stages)
ATTENTION_GPU_TILES: list[tuple[int, int, int, int]] = [
    (64, 32, 4, 2),
    (64, 64, 4, 2),
    (128, 64, 8, 2),
    (32, 32, 4, 2),
]


def attention_tile_configs() -> list[triton.Config]:
    """One 64 x 64 config in the interpreter (it accepts one only)."""
    if interpreting():
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64})]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
        for bm, bn, w, s in ATTENTION_GPU_TILES
    ]


def describe_config(config: triton.Config) -> str:
    """'BLOCK_M=64 BLOCK_N=32 w4 s2': the tile sizes, warps and pipeline stages."""
    blocks = " ".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{blocks} w{config.num_warps} s{config.num_stages}"
