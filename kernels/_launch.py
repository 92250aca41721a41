"""Checks and choices shared by the launchers (no Triton import here)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_rank(op: str, name: str, t: torch.Tensor, layout: str) -> None:
    """layout: the expected dimensions in letters, e.g. "(M, D)"."""
    rank = len([dim for dim in layout.strip("()").split(",") if dim.strip()])
    if t.ndim != rank:
        raise ValueError(f"{op}: {name} must be {layout}, got shape {tuple(t.shape)}")


def check_dtypes(op: str, tensors: dict[str, torch.Tensor]) -> torch.dtype:
    """All tensors share one dtype out of fp32/fp16/bf16; returns it."""
    dtypes = {name: t.dtype for name, t in tensors.items()}
    first = next(iter(dtypes.values()))
    if first not in FLOAT_DTYPES:
        raise ValueError(f"{op}: dtype {first} not supported; use float32, float16 or bfloat16")
    if any(d != first for d in dtypes.values()):
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise ValueError(f"{op}: inputs must share one dtype, got {listed}; cast them first")
    return first


def check_devices(op: str, tensors: dict[str, torch.Tensor]) -> None:
    """One device for all; CUDA unless the Triton interpreter runs (then CPU is fine too)."""
    devices = {name: t.device for name, t in tensors.items()}
    first = next(iter(devices.values()))
    if any(d != first for d in devices.values()):
        listed = ", ".join(f"{n}={d}" for n, d in devices.items())
        raise ValueError(f"{op}: inputs must be on one device, got {listed}")
    if first.type != "cuda" and not interpreting():
        raise ValueError(
            f"{op}: Triton kernels need CUDA tensors, got {first}; move the inputs to a GPU, "
            "or set TRITON_INTERPRET=1 before the first kernel call to run them on the CPU"
        )


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs: exact fp32 products ("ieee"), so nearest-code indices match PyTorch's fp32
    matmul (TF32 flips near ties). Half inputs: the value is ignored by tl.dot."""
    return "ieee" if dtype == torch.float32 else "tf32"


def upcast(dtype: torch.dtype) -> bool:
    """bf16 arithmetic is wrong in the Triton interpreter (measured: garbage results), so
    there bf16 tiles are cast to fp32 right after loading; on a GPU they stay bf16."""
    return dtype == torch.bfloat16 and interpreting()


def next_power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


@dataclass(frozen=True)
class KernelLaunch:
    """One call of an autotuned Triton kernel, as its launcher builds it.

    The launcher runs it (``launch()``); ``daefr.kernels.compile_report`` compiles the very same
    arguments for every autotune config without a GPU, so both always see one argument list.
    """

    kernel: Any  # a triton.runtime.Autotuner over a @triton.jit function
    grid: Callable[[dict], tuple[int, ...]]
    args: tuple
    kwargs: dict[str, Any]

    def launch(self) -> None:
        self.kernel[self.grid](*self.args, **self.kwargs)


def run_plan(planned: tuple[Any, KernelLaunch | None]) -> Any:
    """Launch what a ``plan_*`` function built (nothing for empty inputs); return its outputs."""
    outputs, launch = planned
    if launch is not None:
        launch.launch()
    return outputs
