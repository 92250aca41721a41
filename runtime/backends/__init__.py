"""Restorer backends behind one contract (``Restorer.restore(batch) -> (restored, code_idx)``).

``create_restorer(plan, ...)`` builds the one a ``PrecisionPlan`` names (torch, ort, openvino,
trt; resolve "auto" first with ``daefr.runtime.auto.resolve``); a backend that cannot run on
this machine raises ``BackendUnavailable`` with the reason in one line.
"""

from __future__ import annotations

import copy
from pathlib import Path

from daefr.model import DAEFR
from daefr.runtime.backends.base import BackendError, BackendUnavailable, Restorer, RestorerBase
from daefr.runtime.plan import BACKEND_CHOICES, BACKENDS, PlanError, PrecisionPlan

__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "BackendError",
    "BackendUnavailable",
    "PlanError",
    "PrecisionPlan",
    "Restorer",
    "RestorerBase",
    "create_restorer",
    "export_onnx",
]


def create_restorer(
    plan: PrecisionPlan,
    *,
    model: DAEFR | None = None,
    onnx: str | Path | None = None,
    engine_dir: str | Path | None = None,
    workdir: str | Path | None = None,
) -> Restorer:
    """The restorer ``plan`` names, built exactly as the plan says.

    torch: needs ``model`` (its ``impl`` is kept). ort / openvino: ``onnx`` (the end-to-end
    graph from daefr-export, in the plan's precision for ort), or ``model`` and ``workdir`` to
    export one here. trt: ``engine_dir`` (engines + manifest.json from ``daefr-export``); the
    plan's precision and plugins pick the engine.
    """
    if plan.backend == "auto":
        raise PlanError("create_restorer: resolve --backend auto first (daefr.runtime.auto.resolve)")
    plan.check_backend(plan.backend)
    if plan.backend == "torch":
        from daefr.runtime.backends.torch_backend import TorchRestorer

        if model is None:
            raise PlanError("the torch backend needs weights: --ckpt or --random-weights")
        return TorchRestorer(model, plan)
    if plan.backend == "trt":
        from daefr.runtime.backends.trt_backend import TrtRestorer

        if engine_dir is None:
            raise PlanError("the trt backend needs --engine-dir (engines + manifest.json from daefr-export)")
        return TrtRestorer(engine_dir, device=plan.device, precision=plan.precision, plugins=plan.plugins)
    # ort and openvino run an ONNX file: the plan's FP16 export for ort fp16, else the fp32 one
    # (OpenVINO's bf16 is an inference precision of the fp32 graph).
    onnx_fp16 = plan.backend == "ort" and plan.precision == "fp16"
    if onnx is None:
        if model is None or workdir is None:
            raise PlanError(f"the {plan.backend} backend needs --onnx, or --ckpt/--random-weights to export one")
        suffix = ".fp16.onnx" if onnx_fp16 else ".onnx"
        onnx = export_onnx(model, Path(workdir) / f"daefr{suffix}", fp16=onnx_fp16)
    if plan.backend == "ort":
        from daefr.runtime.backends.ort_backend import OrtRestorer

        return OrtRestorer(onnx, device=plan.device, threads=plan.threads, precision=plan.precision)
    from daefr.runtime.backends.openvino_backend import OpenVinoRestorer

    return OpenVinoRestorer(onnx, precision=plan.precision, threads=plan.threads)


def export_onnx(model: DAEFR, path: str | Path, fp16: bool = False) -> Path:
    """Export ``model`` as the end-to-end ``daefr`` graph (dynamic batch; ``fp16``: the FP16
    graph with ``daefr.precision.POLICY``'s float32 islands) for the ONNX backends."""
    try:
        from daefr.export.onnx_export import export_graph
    except ImportError as err:
        raise BackendUnavailable(
            f"daefr.export is not available ({err}); pass an ONNX file with --onnx"
        ) from err
    # A copy: exporting on the CPU must not move the caller's model off its device.
    return export_graph(copy.deepcopy(model).float().cpu().eval(), "daefr", Path(path), fp16=fp16)
