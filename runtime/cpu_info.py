"""What the CPU offers the benchmarks and the bf16 paths: model name, ISA flags, and which
oneDNN kernel (AMX or AVX512-BF16) a bf16 convolution actually ran."""

from __future__ import annotations

import functools
import os
import platform
import re
import tempfile
from pathlib import Path

import torch

# The flags that decide the CPU paths (fp32 AVX-512 / AVX2 kernels, bf16 and fp16 support, AMX).
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_summary() -> dict[str, object]:
    return {
        "model": cpu_model(),
        "cores": os.cpu_count(),
        "flags": [f for f in INTERESTING_FLAGS if f in cpu_flags()],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


@functools.cache
def onednn_bf16_isa() -> str:
    """The ISA oneDNN chose for a bf16 convolution here (e.g. ``avx512_core_amx`` or
    ``avx512_core_bf16``), read from its verbose log; "unknown" if it printed none."""
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).to(torch.bfloat16)
    x = torch.randn(1, 16, 16, 16, dtype=torch.bfloat16)
    with tempfile.TemporaryFile(mode="w+b") as log:
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)  # oneDNN prints to the C stdout
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), torch.no_grad():
                conv(x)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        text = log.read().decode(errors="replace")
    found = re.findall(r"convolution,[^,]*?:([a-z0-9_]+)", text)
    return found[0] if found else "unknown"
