"""The backend/precision variants a report compares, each built only if it can run here.

A variant is a way to run the whole network (a ``Restorer``) and, where possible, each graph
on its own (``GraphRunner``) so the report can tell in which graph error enters. Variants that
cannot run on this machine are kept with the one-line reason, never silently dropped.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from daefr.model import DAEFR
from daefr.runtime.backends import BackendUnavailable, PlanError, PrecisionPlan, Restorer, create_restorer

log = logging.getLogger(__name__)

# The graphs whose error and time the report breaks down, in pipeline order.
STAGE_GRAPHS: tuple[str, ...] = ("lq_encoder", "hq_encoder", "mhca", "transformer", "decoder")

GraphRunner = Callable[[str, tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]


@dataclass
class Variant:
    """One column of the report. ``restorer``/``run_graph`` are None when ``skipped`` says why."""

    name: str
    backend: str
    precision: str
    device: str
    restorer: Restorer | None = None
    run_graph: GraphRunner | None = None
    skipped: str | None = None
    plan: PrecisionPlan | None = None  # what the restorer was built from, where one was
    build_seconds: float | None = None  # export / engine build
    artifact_bytes: int | None = None  # ONNX file or engine size

    def close(self) -> None:
        if self.restorer is not None:
            self.restorer.close()


def torch_graph_runner(model: DAEFR, device: torch.device, dtype: torch.dtype) -> GraphRunner:
    """Run one graph of the eager model (its graph module from daefr.export.graphs)."""
    from daefr.export.graphs import build_graph

    modules: dict[str, torch.nn.Module] = {}

    @torch.inference_mode()
    def run(name: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if name not in modules:
            modules[name] = build_graph(model, name)
        moved = tuple(t.to(device, dtype) if t.is_floating_point() else t.to(device) for t in inputs)
        out = modules[name](*moved)
        out = out if isinstance(out, tuple) else (out,)
        return tuple(t.float() if t.is_floating_point() else t for t in out)

    return run


def ort_graph_runner(onnx_paths: dict[str, Path], providers: list[str]) -> GraphRunner:
    import numpy as np
    import onnxruntime as ort

    sessions: dict[str, ort.InferenceSession] = {}

    def run(name: str, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if name not in sessions:
            sessions[name] = ort.InferenceSession(str(onnx_paths[name]), providers=providers)
        session = sessions[name]
        feed = {}
        for meta, tensor in zip(session.get_inputs(), inputs, strict=True):
            array = tensor.detach().cpu().numpy()
            if meta.type == "tensor(float16)":
                array = array.astype(np.float16)
            elif meta.type == "tensor(int32)":
                array = array.astype(np.int32)
            feed[meta.name] = array
        outs = session.run(None, feed)
        return tuple(
            torch.from_numpy(np.asarray(o)).float()
            if np.asarray(o).dtype.kind == "f"
            else torch.from_numpy(np.asarray(o))
            for o in outs
        )

    return run


def eager_variants(model: DAEFR, device: torch.device) -> list[Variant]:
    """Eager fp32 (the reference) and, on CUDA, fp16 and the Triton kernels."""
    variants = [
        Variant(
            "eager fp32",
            "torch",
            "fp32",
            str(device),
            restorer=create_restorer(PrecisionPlan("torch", device=str(device)), model=copy.deepcopy(model)),
            run_graph=torch_graph_runner(model, device, torch.float32),
        )
    ]
    for name, impl, fp16 in (
        ("eager fp16", "torch", True),
        ("eager fp32 + triton", "triton", False),
        ("eager fp16 + triton", "triton", True),
    ):
        precision = "fp16" if fp16 else "fp32"
        variant = Variant(name, "torch", precision, str(device))
        if device.type != "cuda":
            variant.skipped = "needs a CUDA GPU (fp16 and Triton timings are GPU-only; none here)"
        else:
            clone = copy.deepcopy(model)
            if impl == "triton":
                clone = _with_impl(clone, "triton")
            dtype = torch.float16 if fp16 else torch.float32
            try:
                plan = PrecisionPlan("torch", precision, device=str(device))
                variant.restorer = create_restorer(plan, model=clone)
                variant.run_graph = torch_graph_runner(clone, device, dtype)
            except (BackendUnavailable, RuntimeError, ImportError) as err:
                variant.skipped = str(err).splitlines()[0]
        variants.append(variant)
    return variants


def _with_impl(model: DAEFR, impl: str) -> DAEFR:
    """The same weights in a model built with another ``impl``."""
    other = DAEFR(model.config, impl=impl)
    other.load_state_dict(model.state_dict())
    return other.eval()


def ort_variants(model: DAEFR, device: torch.device, work_dir: Path) -> list[Variant]:
    """ONNX Runtime over fp32 and fp16 exports, with the provider that matches ``device``."""
    import time

    try:
        import onnxruntime as ort

        from daefr.export.onnx_export import export_graph
    except ImportError as err:
        return [Variant("ort fp32", "ort", "fp32", str(device), skipped=f"not installed: {err}")]
    available = ort.get_available_providers()
    if device.type == "cuda":
        provider, label = "CUDAExecutionProvider", "ort cuda"
    else:
        provider, label = "CPUExecutionProvider", "ort cpu"
    variants = []
    for fp16 in (False, True):
        precision = "fp16" if fp16 else "fp32"
        variant = Variant(f"{label} {precision}", "ort", precision, str(device))
        variants.append(variant)
        if provider not in available:
            variant.skipped = f"onnxruntime has no {provider} here (installed: {', '.join(available)})"
            continue
        cpu_model = copy.deepcopy(model).float().cpu().eval()
        paths: dict[str, Path] = {}
        start = time.perf_counter()
        for graph in ("daefr", *STAGE_GRAPHS):
            path = work_dir / f"{graph}{'_fp16' if fp16 else ''}.onnx"
            paths[graph] = export_graph(cpu_model, graph, path, fp16=fp16)
        variant.build_seconds = time.perf_counter() - start
        variant.artifact_bytes = paths["daefr"].stat().st_size
        try:
            plan = PrecisionPlan("ort", precision, device=str(device))
            variant.restorer = create_restorer(plan, onnx=paths["daefr"])
            variant.run_graph = ort_graph_runner(paths, [provider])
        except BackendUnavailable as err:
            variant.skipped = str(err)
    return variants


def trt_variants(device: torch.device, engine_dirs: dict[str, Path | None]) -> list[Variant]:
    """TensorRT fp16 engines without and with our Triton plugins, from ``daefr-export``.

    ``engine_dirs``: {"trt fp16": dir or None, "trt fp16 + plugins": dir or None}.
    """
    variants = []
    for name, plugins in (("trt fp16", False), ("trt fp16 + plugins", True)):
        variant = Variant(name, "trt", "fp16+plugins" if plugins else "fp16", str(device))
        variants.append(variant)
        engine_dir = engine_dirs.get(name)
        if engine_dir is None:
            variant.skipped = (
                "no engine: build one with daefr-export --fp16 [--plugins] on a machine with TensorRT"
            )
            continue
        try:
            # The label is what runs: the FP16 engine, with or without our plugins, from the manifest.
            variant.plan = PrecisionPlan("trt", "fp16", device=str(device), plugins=plugins)
            variant.restorer = create_restorer(variant.plan, engine_dir=engine_dir)
        except (BackendUnavailable, PlanError) as err:
            variant.skipped = str(err)
    return variants
