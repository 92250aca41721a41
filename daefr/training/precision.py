"""Mixed precision: ``torch.autocast`` in bf16 or fp16 on CUDA, with a ``GradScaler`` for
fp16; "off" is plain fp32 (the only mode on the CPU, checked by the CLI)."""

from __future__ import annotations

import contextlib

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[amp])


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def default_amp(device: torch.device) -> str:
    """bf16 where the GPU has it, else fp16 on CUDA; off on the CPU."""
    if device.type != "cuda":
        return "off"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
