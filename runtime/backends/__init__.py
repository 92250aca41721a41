"""Restorer backends behind one contract (``Restorer.restore(batch) -> (restored, code_idx)``).

``create_restorer("torch" | "ort" | "trt", ...)`` builds one; a backend that cannot run on this
machine raises ``BackendUnavailable`` with the reason in one line.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from daefr.model import DAEFR
from daefr.runtime.backends.base import BackendError, BackendUnavailable, Restorer, RestorerBase

BACKENDS: tuple[str, ...] = ("torch", "ort", "trt")

__all__ = [
    "BACKENDS",
    "BackendError",
    "BackendUnavailable",
    "Restorer",
    "RestorerBase",
    "create_restorer",
    "export_onnx",
]


def create_restorer(
    name: str,
    *,
    model: DAEFR | None = None,
    onnx: str | Path | None = None,
    engine_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    fp16: bool = False,
    cuda_graphs: bool = False,
    threads: int = 0,
) -> Restorer:
    """The restorer ``name`` on ``device``.

    torch: needs ``model`` (its ``impl`` is kept), ``fp16``, ``cuda_graphs``.
    ort: needs ``onnx`` (the end-to-end graph; see ``export_onnx``), ``threads`` (0 = all cores).
    trt: needs ``engine_dir`` (engines + manifest.json from ``daefr-export``); ``fp16`` picks
    the FP16 engine listed there.
    """
    if name == "torch":
        from daefr.runtime.backends.torch_backend import TorchRestorer

        if model is None:
            raise ValueError("torch backend: pass model=")
        dtype = torch.float16 if fp16 else torch.float32
        return TorchRestorer(model, device=device, dtype=dtype, cuda_graphs=cuda_graphs)
    if cuda_graphs:
        raise ValueError(f"{name} backend: cuda_graphs applies to the torch backend only")
    if name == "ort":
        from daefr.runtime.backends.ort_backend import OrtRestorer

        if onnx is None:
            raise ValueError("ort backend: pass onnx= (an end-to-end graph from daefr-export or export_onnx)")
        if fp16:
            raise ValueError(
                "ort backend: precision is fixed by the ONNX graph; pass an fp16 export instead of fp16="
            )
        return OrtRestorer(onnx, device=device, threads=threads)
    if name == "trt":
        from daefr.runtime.backends.trt_backend import TrtRestorer

        if engine_dir is None:
            raise ValueError("trt backend: pass engine_dir= (engines + manifest.json from daefr-export)")
        return TrtRestorer(engine_dir, device=device, fp16=fp16)  # fp16 picks the FP16 engine
    raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")


def export_onnx(model: DAEFR, path: str | Path) -> Path:
    """Export ``model`` as the end-to-end ``daefr`` graph (fp32, dynamic batch) for the ort backend."""
    try:
        from daefr.export.onnx_export import export_graph
    except ImportError as err:
        raise BackendUnavailable(
            f"ort backend: daefr.export is not available ({err}); pass an ONNX file"
        ) from err
    # A copy: exporting on the CPU must not move the caller's model off its device.
    return export_graph(copy.deepcopy(model).float().cpu().eval(), "daefr", Path(path))
