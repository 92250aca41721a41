"""The precision plan: one validated value that says how the network runs.

Built once from the flags (``daefr.cli.plan_flags``) and passed unchanged to restorer creation
(``daefr.runtime.restorers``), the export, the manifest, the benchmarks and the report. A
choice a backend cannot honour is a ``PlanError`` (exit 2 at the CLI), never dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from daefr.precision import DTYPES, PRECISIONS

BACKENDS: tuple[str, ...] = ("torch", "ort", "openvino", "trt")
BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)

# Which precisions each backend can run, and where. A pair missing here is refused.
#   torch: fp16 is a CUDA precision (CPU fp16 convolutions are slower than fp32 and not a
#     target); bf16 runs on both (oneDNN's AMX / AVX512-BF16 kernels on the CPU).
#   ort: the FP16 ONNX (POLICY islands); ONNX Runtime's CPU provider has no bf16 kernels.
#   openvino: fp32 or bf16 *inference precision* of the fp32 ONNX (its CPU plugin decides per
#     layer); its fp16 inference precision is for ARM / GPUs, not these CPUs.
#   trt: the engines daefr-export builds (fp32, or fp16 with --fp16); no bf16 export.
SUPPORTED: dict[str, dict[str, tuple[str, ...]]] = {
    "torch": {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "fp16", "bf16")},
    "ort": {"cpu": ("fp32", "fp16"), "cuda": ("fp32", "fp16")},
    "openvino": {"cpu": ("fp32", "bf16")},
    "trt": {"cuda": ("fp32", "fp16")},
}


# Intra-op threads beyond this are a typo, not a machine (ONNX Runtime would start them all).
MAX_THREADS = 1024


class PlanError(ValueError):
    """A plan no backend can honour as asked; the message names the flag and what to try."""


@dataclass(frozen=True)
class PrecisionPlan:
    """How the network runs.

    backend: one of ``BACKEND_CHOICES`` ("auto" until ``daefr.runtime.auto.resolve``).
    precision: "fp32" | "fp16" | "bf16" (the compute precision; I/O stays float32).
    device: "cpu" or "cuda[:N]". plugins: trt only, our Triton kernels inside the engine.
    compile: torch only, ``torch.compile`` (inductor). cuda_graphs: torch on CUDA only.
    threads: intra-op CPU threads (0 = the library's default). channels_last: torch only,
    NHWC convolutions (exact in fp32).
    """

    backend: str = "auto"
    precision: str = "fp32"
    device: str = "cpu"
    plugins: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    threads: int = 0
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKEND_CHOICES:
            raise PlanError(f"--backend {self.backend!r}: choose one of {', '.join(BACKEND_CHOICES)}")
        if self.precision not in PRECISIONS:
            raise PlanError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise PlanError(f"--device {self.device!r}: {err}") from None
        if device.type not in ("cpu", "cuda"):
            raise PlanError(f"--device {self.device}: only cpu and cuda devices are supported")
        if not isinstance(self.threads, int) or not 0 <= self.threads <= MAX_THREADS:
            raise PlanError(f"--threads {self.threads}: must be within 0..{MAX_THREADS} (0 = the library's default)")
        only = {"plugins": ("trt",), "compile": ("torch",), "cuda_graphs": ("torch",), "channels_last": ("torch",)}
        for flag, backends in only.items():
            if getattr(self, flag) and self.backend not in (*backends, "auto"):
                raise PlanError(
                    f"--{flag.replace('_', '-')} applies to the {'/'.join(backends)} backend only, "
                    f"not --backend {self.backend}; drop the flag or pick that backend"
                )
        if self.cuda_graphs and device.type != "cuda":
            raise PlanError("--cuda-graphs needs --device cuda (graphs replay CUDA work only)")
        if self.backend != "auto":
            self.check_backend(self.backend)

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]

    def check_backend(self, backend: str) -> None:
        """PlanError unless ``backend`` can run this plan's precision on its device."""
        devices = SUPPORTED[backend]
        if self.device_type not in devices:
            raise PlanError(
                f"--backend {backend} runs on {', '.join(devices)}, not --device {self.device}"
            )
        allowed = devices[self.device_type]
        if self.precision not in allowed:
            raise PlanError(
                f"--backend {backend} on {self.device_type} runs {', '.join(allowed)}, not "
                f"--precision {self.precision}; pick one of those or another backend"
            )

    def with_backend(self, backend: str) -> PrecisionPlan:
        return replace(self, backend=backend)

    def label(self) -> str:
        """e.g. ``torch bf16 channels_last compile`` (benchmark rows, log lines)."""
        extras = [f for f in ("channels_last", "compile", "cuda_graphs", "plugins") if getattr(self, f)]
        return " ".join([self.backend, self.precision, *extras])

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
