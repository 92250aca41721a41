"""Export one graph to ONNX: eval -> trace -> checker (full) -> shape inference -> [FP16] -> file.

The file is written atomically: the checks run on a temporary file beside the target, which
is renamed only when everything passed, so a failed export never leaves a half-written
``.onnx`` under the final name.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from daefr.atomic import atomic_path
from daefr.export.graphs import GraphSpec, build_graph, check_graph_name, example_inputs, tensor_specs
from daefr.export.precision import convert_to_fp16
from daefr.model import DAEFR

log = logging.getLogger(__name__)

# LayerNormalization needs opset 17; the TorchScript exporter stops at 20, and GroupNormalization
# at 21 failed to import into TensorRT 10.7 (deployment notes). The dynamo exporter needs 18.
TORCHSCRIPT_OPSETS = range(17, 21)
DYNAMO_OPSETS = range(18, 21)
DEFAULT_OPSET = 18
EXPORT_BATCH = 2  # a batch-1 example would let dynamo specialise the batch axis to 1


class ExportError(RuntimeError):
    """An export that produced no valid ONNX; the message names the graph and the file."""


def check_opset(opset: int, dynamo: bool) -> None:
    allowed = DYNAMO_OPSETS if dynamo else TORCHSCRIPT_OPSETS
    if opset not in allowed:
        exporter = "dynamo" if dynamo else "TorchScript"
        raise ValueError(
            f"opset {opset} is not supported with the {exporter} exporter; use {allowed.start}..{allowed.stop - 1}"
        )


def export_graph(
    model: DAEFR,
    graph: str,
    path: Path,
    *,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = False,
    fp16: bool = False,
) -> Path:
    """Export graph ``graph`` of ``model`` (a float32 CPU model) to ``path``; returns ``path``.

    ``fp16`` writes the FP16 variant (``precision.POLICY`` islands in FP32, float32 I/O).
    The batch axis is dynamic; names are those of ``graphs.GRAPHS[graph]``.
    """
    spec = check_graph_name(graph)
    return export_module(
        model, build_graph(model, graph), spec, Path(path), opset=opset, dynamo=dynamo, fp16=fp16
    )


def export_module(
    model: DAEFR,
    module: nn.Module,
    spec: GraphSpec,
    path: Path,
    *,
    opset: int,
    dynamo: bool,
    fp16: bool,
    variant: str = "standard",
) -> Path:
    """``export_graph`` for a given module with ``spec``'s signature (plugin variants use it)."""
    check_opset(opset, dynamo)
    params = list(model.parameters())
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        raise ValueError("export needs the float32 model on the CPU; FP16 is applied to the ONNX (fp16=True)")
    example = example_inputs(model, spec.name, EXPORT_BATCH)
    with atomic_path(path) as tmp:
        try:
            _trace(module.eval(), spec, example, tmp, opset, dynamo)
            onnx_model = onnx.load(str(tmp))
            onnx.checker.check_model(onnx_model, full_check=True)
            _pin_signature(onnx_model, spec, model)
            onnx_model = onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True)
            if fp16:
                onnx_model = convert_to_fp16(onnx_model)
            precision = "fp16" if fp16 else "fp32"
            meta = {"daefr.graph": spec.name, "daefr.precision": precision, "daefr.variant": variant}
            onnx.helper.set_model_props(onnx_model, meta)
            onnx.checker.check_model(onnx_model, full_check=True)
            onnx.save(onnx_model, str(tmp))
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, RuntimeError) as err:
            raise ExportError(f"export of graph {spec.name!r} to {path} failed: {err}") from err
    log.debug("exported %s (%s, opset %d) to %s", spec.name, precision, opset, path)
    return path


def _trace(
    module: nn.Module,
    spec: GraphSpec,
    example: tuple[torch.Tensor, ...],
    path: Path,
    opset: int,
    dynamo: bool,
) -> None:
    names = {"input_names": list(spec.inputs), "output_names": list(spec.outputs)}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about shape arithmetic it records as graph ops; the exported graph
        # is checked below (dynamic batch included) instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # We choose the exporter explicitly (``dynamo``) and test both: silence the notices.
        warnings.filterwarnings(
            "ignore", message="You are using the legacy TorchScript", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=1024)
            torch.onnx.export(
                module,
                example,
                str(path),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=tuple({0: batch} for _ in spec.inputs),
                external_data=False,
                verbose=False,
                **names,
            )
        else:
            axes = {n: {0: "batch"} for n in (*spec.inputs, *spec.outputs)}
            torch.onnx.export(
                module, example, str(path), dynamo=False, opset_version=opset, dynamic_axes=axes, **names
            )


def _pin_signature(onnx_model: onnx.ModelProto, spec: GraphSpec, model: DAEFR) -> None:
    """Names, dtypes and shapes of the graph's inputs and outputs are API: check them, and
    write the preset's fixed sizes where the tracer left symbolic ones (spatial sizes after
    a computed Pad), with the batch axis named ``batch``. Shape inference runs afterwards in
    strict mode, so a pinned size that contradicts the graph is an error.
    """
    expected = tensor_specs(model)
    for kind, wanted, values in (
        ("inputs", spec.inputs, onnx_model.graph.input),
        ("outputs", spec.outputs, onnx_model.graph.output),
    ):
        got = [v.name for v in values]
        if got != list(wanted):
            raise ExportError(f"graph {spec.name!r}: {kind} are {got}, expected {list(wanted)}")
        for v in values:
            tensor = v.type.tensor_type
            want = expected[v.name]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)
            if str(dtype) != str(want.dtype).removeprefix("torch."):
                raise ExportError(f"graph {spec.name!r}: {v.name} is {dtype}, expected {want.dtype}")
            if len(tensor.shape.dim) != len(want.shape):
                raise ExportError(
                    f"graph {spec.name!r}: {v.name} has rank {len(tensor.shape.dim)}, expected {want.shape}"
                )
            for dim, size in zip(tensor.shape.dim, want.shape, strict=True):
                if isinstance(size, str):
                    if dim.HasField("dim_value"):
                        raise ExportError(
                            f"graph {spec.name!r}: {v.name} has a fixed batch size {dim.dim_value}"
                        )
                    dim.dim_param = size
                elif dim.HasField("dim_value") and dim.dim_value != size:
                    raise ExportError(
                        f"graph {spec.name!r}: {v.name} has shape {tensor.shape}, expected {want.shape}"
                    )
                else:
                    dim.dim_value = size
