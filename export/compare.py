"""Backends compared output by output through Polygraphy's runners, eager as the reference.

ONNX Runtime runs everywhere (the CPU tests use this path); TensorRT only where it is
installed with a GPU. Polygraphy, like TensorRT, is imported when a comparison runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from daefr.export.parity import error_stats

Arrays = Mapping[str, np.ndarray]


def runner_outputs(runner: Any, feed: Arrays) -> dict[str, np.ndarray]:
    """Activate a Polygraphy runner, run ``feed`` once, return its outputs as numpy arrays."""
    with runner:
        return {name: np.asarray(value) for name, value in runner.infer(dict(feed)).items()}


def onnxrt_outputs(onnx_path: Path, feed: Arrays) -> dict[str, np.ndarray]:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    session = SessionFromOnnx(str(onnx_path), providers=["CPUExecutionProvider"])
    return runner_outputs(OnnxrtRunner(session), feed)


def trt_outputs(engine_path: Path, feed: Arrays) -> dict[str, np.ndarray]:
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return runner_outputs(TrtRunner(EngineFromBytes(BytesFromPath(str(engine_path)))), feed)


def output_stats(got: Arrays, want: Arrays) -> dict[str, dict[str, float]]:
    """Per output of ``want``: ``parity.error_stats`` for floats, ``{"agreement": share of
    equal values}`` for integer outputs (code indices). An output missing from ``got`` is an
    error naming it."""
    missing = sorted(set(want) - set(got))
    if missing:
        raise KeyError(f"outputs {missing} missing from the compared backend (it has {sorted(got)})")
    result = {}
    for name, w in want.items():
        g = got[name]
        if g.shape != w.shape:
            raise ValueError(f"output {name!r}: shape {g.shape} != reference {w.shape}")
        if np.issubdtype(w.dtype, np.integer):
            result[name] = {"agreement": float((g.astype(np.int64) == w.astype(np.int64)).mean())}
        else:
            result[name] = error_stats(g, w)
    return result


def compare_backends(
    feed: Arrays, eager: Arrays, *, onnx_path: Path | None = None, engine_path: Path | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """ONNX Runtime and/or TensorRT against eager, and against each other when both run:
    ``{"onnxrt_vs_eager": {output: stats}, "trt_vs_eager": ..., "trt_vs_onnxrt": ...}``.
    Plugin-variant graphs pass no ``onnx_path`` (ONNX Runtime cannot run their custom nodes)."""
    if onnx_path is None and engine_path is None:
        raise ValueError("compare_backends: give onnx_path, engine_path or both")
    result: dict[str, dict[str, dict[str, float]]] = {}
    ort_out = onnxrt_outputs(onnx_path, feed) if onnx_path is not None else None
    if ort_out is not None:
        result["onnxrt_vs_eager"] = output_stats(ort_out, eager)
    if engine_path is not None:
        trt_out = trt_outputs(engine_path, feed)
        result["trt_vs_eager"] = output_stats(trt_out, eager)
        if ort_out is not None:
            result["trt_vs_onnxrt"] = output_stats(trt_out, ort_out)
    return result
