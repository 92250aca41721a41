"""``--backend auto``: the fastest backend that can run here at the requested precision.

The rule table is ordered by measured speed on the network alone (``reports/cpu/network_official.txt``:
official preset, batch 1, AMD EPYC with AVX512-BF16 and no AMX, 2 shared cores, timed calls
interleaved across variants). There ONNX Runtime fp32 was 2.02x eager fp32 NCHW and OpenVINO
fp32 1.92x (equal within the noise of a shared machine; an earlier sequential run had OpenVINO
2.16x, ORT 1.65x), eager channels_last 1.32x, all with every code equal; OpenVINO bf16 3.44x,
eager bf16 1.58x (95-97 % of codes); ORT fp16 1.71x. Issue 19's Intel Xeon (AMX) had OpenVINO
1.77x, channels_last 1.37x, ONNX Runtime 1.10x: OpenVINO is first or tied on every CPU measured,
so it leads; ONNX Runtime comes second (ahead of channels_last on this CPU, behind it on the Xeon).
A rule applies when its backend is installed, the weights it needs were given, and the plan's
other flags allow it. Reduced precision changes codes, so it is never chosen for the user: the
precision is the plan's (fp32 unless asked).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from daefr.runtime.plan import PlanError, PrecisionPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    device: str  # "cpu" | "cuda"
    precision: str
    backend: str
    channels_last: bool
    why: str


# First applicable rule wins. The "why" is what the log line says.
RULES: tuple[Rule, ...] = (
    Rule("cpu", "fp32", "openvino", False, "OpenVINO fp32: fastest or tied exact CPU variant on every CPU measured (1.9-2.2x eager NCHW here)"),
    Rule("cpu", "fp32", "ort", False, "ONNX Runtime fp32: exact, 1.65-2.0x eager NCHW here (OpenVINO not usable)"),
    Rule("cpu", "fp32", "torch", True, "eager channels_last: exact and 1.3x eager NCHW (no ONNX backend usable)"),
    Rule("cpu", "bf16", "openvino", False, "OpenVINO bf16 inference precision: the fastest bf16 CPU variant (3.4x eager fp32 here)"),
    Rule("cpu", "bf16", "torch", True, "eager bf16 channels_last with fp32 norms and code head (1.6x eager fp32 here)"),
    Rule("cpu", "fp16", "ort", False, "only ONNX Runtime runs fp16 on the CPU (the FP16 ONNX, 1.7x eager fp32 here)"),
    Rule("cuda", "fp32", "trt", False, "a TensorRT engine is the fastest GPU path when one is given"),
    Rule("cuda", "fp32", "torch", False, "eager PyTorch on the GPU (no TensorRT engine given)"),
    Rule("cuda", "fp16", "trt", False, "a TensorRT FP16 engine is the fastest GPU path when one is given"),
    Rule("cuda", "fp16", "torch", False, "eager fp16 with the policy's fp32 islands (no TensorRT engine given)"),
    Rule("cuda", "bf16", "torch", False, "only eager PyTorch runs bf16 on the GPU"),
)


@dataclass(frozen=True)
class Sources:
    """Where the network comes from: weights (--ckpt/--random-weights), an ONNX file, engines."""

    weights: bool = False
    onnx: Path | None = None
    engine_dir: Path | None = None
    expected_faces: int | None = None  # None: unknown / many (video)


# Without --onnx the ONNX backends export the graph first: on the official preset that cost
# (export + OpenVINO compile, reports/cpu/network_official.txt's setup_s) is repaid only after
# this many faces at the measured speed-up over eager channels_last; below it auto stays eager.
EXPORT_BREAK_EVEN_FACES = 16


def check_sources(plan: PrecisionPlan, sources: Sources) -> None:
    """PlanError unless ``plan.backend`` (not auto) has what it builds from, and nothing it ignores."""
    b = plan.backend
    if b == "torch" and not sources.weights:
        raise PlanError("the torch backend needs --ckpt or --random-weights")
    if b in ("ort", "openvino") and not (sources.onnx or sources.weights):
        raise PlanError(f"the {b} backend needs --onnx, or --ckpt/--random-weights to export one")
    if b == "trt" and not sources.engine_dir:
        raise PlanError("the trt backend needs --engine-dir")
    if sources.weights and ((b in ("ort", "openvino") and sources.onnx) or b == "trt"):
        raise PlanError(f"the {b} backend takes its weights from --onnx/--engine-dir; drop --ckpt/--random-weights")
    if sources.onnx and b not in ("ort", "openvino"):
        raise PlanError(f"--onnx is read by the ort and openvino backends, not --backend {b}")
    if sources.engine_dir and b != "trt":
        raise PlanError(f"--engine-dir is read by the trt backend, not --backend {b}")


def unavailable(backend: str, plan: PrecisionPlan, sources: Sources) -> str | None:
    """Why ``backend`` cannot take ``plan`` here, or None."""
    try:
        candidate = replace(plan, backend=backend, channels_last=False)
        check_sources(candidate, sources)
    except PlanError as err:
        return str(err)
    module = {"ort": "onnxruntime", "openvino": "openvino", "trt": "tensorrt"}.get(backend)
    if module and importlib.util.find_spec(module) is None:
        return f"{module} is not installed"
    if backend in ("ort", "openvino") and sources.onnx is None and importlib.util.find_spec("onnx") is None:
        return "exporting an ONNX file needs the export extra (onnx)"
    exports = backend in ("ort", "openvino") and sources.onnx is None
    if exports and sources.expected_faces is not None and sources.expected_faces < EXPORT_BREAK_EVEN_FACES:
        return (
            f"exporting the ONNX first costs more than it saves for {sources.expected_faces} face(s) "
            f"(< {EXPORT_BREAK_EVEN_FACES}); pass --onnx to use it"
        )
    if backend == "openvino" and plan.precision == "bf16" and not cpu_has_bf16():
        return "this CPU has neither AVX512-BF16 nor AMX"
    if plan.device_type == "cuda" and not torch.cuda.is_available():
        return "no CUDA device"
    return None


def cpu_has_bf16() -> bool:
    from daefr.runtime.cpu_info import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve(plan: PrecisionPlan, sources: Sources) -> tuple[PrecisionPlan, str]:
    """(the plan with a concrete backend, one line saying what was chosen and why)."""
    if plan.backend != "auto":
        check_sources(plan, sources)
        return plan, f"{plan.label()}: asked for"
    forced = {"compile": "torch", "cuda_graphs": "torch", "channels_last": "torch", "plugins": "trt"}
    only = {b for flag, b in forced.items() if getattr(plan, flag)}
    if len(only) > 1:
        raise PlanError("--plugins (trt) and --compile/--cuda-graphs/--channels-last (torch) exclude each other")
    tried = []
    for rule in RULES:
        if rule.device != plan.device_type or rule.precision != plan.precision:
            continue
        if only and rule.backend not in only:
            continue
        why_not = unavailable(rule.backend, plan, sources)
        if why_not is not None:
            tried.append(f"{rule.backend}: {why_not}")
            continue
        chosen = replace(plan, backend=rule.backend, channels_last=plan.channels_last or rule.channels_last)
        chosen.check_backend(chosen.backend)
        return chosen, f"--backend auto chose {chosen.label()}: {rule.why}"
    raise PlanError(
        f"--backend auto: nothing runs --precision {plan.precision} on {plan.device_type} with these flags "
        f"({'; '.join(tried) or 'no rule'}); pick a --backend or another --precision"
    )
