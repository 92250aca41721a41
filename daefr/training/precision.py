"""Mixed precision: off by default (plain fp32, as the original trains). ``"bf16"`` or
``"fp16"`` turn on ``torch.autocast`` for the networks' convolutions and matmuls, with a
``GradScaler`` for fp16; the nearest-code searches, the stage-3 ground truth and the losses
stay fp32 in every mode (``autoencoder.nearest_code_fp32``, ``fusion.FusionNet``). The CLI
allows AMP on CUDA only; on the CPU the same code paths run in tests."""

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
