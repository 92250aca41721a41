"""``--plugins``: our Triton kernels inside the TensorRT engine as AOT quickly-deployable plugins.

Two halves:

1. **ONNX** (runs and is tested on the CPU). The plugin variant of a graph is the model with
   ``impl="triton"`` traced by the TorchScript exporter: its kernels are the torch custom ops
   ``daefr::fused_attention`` and ``daefr::code_head`` (``daefr.kernels``), and the symbolics
   below turn each call into one ONNX node in domain ``daefr`` whose op type is the plugin
   name, with the attributes TensorRT's ONNX parser reads: ``plugin_namespace="daefr"``
   (plugin id ``daefr::<op>``) and ``aot=1`` (use the AOT implementation). Tracing runs the
   kernels once, so on a CPU ``TRITON_INTERPRET=1`` must be set before ``daefr.kernels`` is
   imported (the CLI does it).
2. **TensorRT** (``register_plugins``; UNTESTED here: TensorRT cannot be installed on this
   project's machines). ``@trtp.register`` declares output shapes/dtypes and
   ``@trtp.aot_impl`` returns the kernel compiled to PTX with its launch parameters, so the
   engine runs without Python (``daefr-trt-run``). TensorRT launches an AOT kernel with
   (input pointers, int32 extra arguments, output pointers); our kernels take sizes, strides
   and float scalars in between, so ``plugin_kernels.py`` holds thin adapter kernels with
   that calling convention which call the real kernels with contiguous strides, and
   ``trt_plugin_defs.py`` the TensorRT definitions.

ONNX Runtime has no implementation of these nodes: plugin-variant graphs are checked for
their nodes (tests), and their engines compared with eager (``compare.compare_backends``
without an ONNX path), not in ORT.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from daefr.export.graphs import CODE_IDX_DTYPE, build_graph, check_graph_name
from daefr.export.onnx_export import export_module
from daefr.model import DAEFR

NAMESPACE = "daefr"  # ONNX domain == TensorRT plugin namespace
PLUGIN_OPS = ("fused_attention", "code_head")
SYMBOLIC_OPSET = 1


class PluginTransformer(nn.Module):
    """fused_feat -> code_idx (B, N) int32 through ``DAEFR.predict_codes`` (the code-head op)."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, fused_feat: torch.Tensor) -> torch.Tensor:
        return self.model.predict_codes(fused_feat)[0].to(CODE_IDX_DTYPE)


class PluginEndToEnd(nn.Module):
    """lq_image -> restored, code_idx int32: ``DAEFR.forward`` itself, codes from the plugin."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = self.model(lq_image)
        return result.restored, result.code_idx.to(CODE_IDX_DTYPE)


def triton_twin(model: DAEFR) -> DAEFR:
    """A DAEFR with ``impl="triton"`` sharing ``model``'s weights (no copy)."""
    twin = DAEFR(model.config, impl="triton")
    twin.load_state_dict(model.state_dict(), strict=True, assign=True)
    return twin.eval()


def build_plugin_graph(model: DAEFR, graph: str) -> nn.Module:
    twin = triton_twin(model)
    if graph == "transformer":
        return PluginTransformer(twin).eval()
    if graph == "daefr":
        return PluginEndToEnd(twin).eval()
    return build_graph(twin, graph)


def _fused_attention_symbolic(g, q, k, v):  # noqa: ANN001, ANN202 (TorchScript graph values)
    out = g.op(f"{NAMESPACE}::fused_attention", q, k, v, plugin_namespace_s=NAMESPACE, aot_i=1)
    out.setType(q.type())
    return out


def _code_head_symbolic(g, x, ln_weight, ln_bias, eps, proj_weight, codebook, return_logits):  # noqa: ANN001, ANN202
    from torch.onnx import symbolic_helper

    if symbolic_helper._maybe_get_const(return_logits, "b"):
        raise ValueError("the code_head plugin does not return logits; export the graph without them")
    idx, codes = g.op(
        f"{NAMESPACE}::code_head",
        x,
        ln_weight,
        ln_bias,
        proj_weight,
        codebook,
        eps_f=float(symbolic_helper._maybe_get_const(eps, "f")),
        plugin_namespace_s=NAMESPACE,
        aot_i=1,
        outputs=2,
    )
    m = x.type().sizes()[0] if x.type().sizes() else None
    idx.setType(x.type().with_dtype(CODE_IDX_DTYPE).with_sizes([m]))  # int32, as TensorRT wants
    codes.setType(codebook.type().with_sizes([m, codebook.type().sizes()[1]]))
    empty_logits = g.op("Constant", value_t=torch.zeros(0, 0))  # never consumed: pruned
    return idx, codes, empty_logits


@contextlib.contextmanager
def plugin_symbolics() -> Iterator[None]:
    """Within the block, the TorchScript exporter writes our custom ops as plugin nodes."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    table = {"fused_attention": _fused_attention_symbolic, "code_head": _code_head_symbolic}
    for op, fn in table.items():
        register_custom_op_symbolic(f"{NAMESPACE}::{op}", fn, SYMBOLIC_OPSET)
    try:
        yield
    finally:
        for op in table:
            unregister_custom_op_symbolic(f"{NAMESPACE}::{op}", SYMBOLIC_OPSET)


def export_plugin_graph(model: DAEFR, graph: str, path: Path, *, opset: int = 18, fp16: bool = False) -> Path:
    """The plugin variant of ``graph`` (TorchScript exporter only), written atomically."""
    spec = check_graph_name(graph)
    with plugin_symbolics():
        return export_module(
            model,
            build_plugin_graph(model, graph),
            spec,
            Path(path),
            opset=opset,
            dynamo=False,
            fp16=fp16,
            variant="plugins",
        )


def register_plugins() -> None:
    """Register ``daefr::fused_attention`` and ``daefr::code_head`` with TensorRT (AOT).

    Needs TensorRT >= 10.9 (``tensorrt.plugin.aot_impl``, checked) and Triton with a CUDA
    target; read against TensorRT's source, never run (TensorRT cannot be installed here).
    Idempotent: the TensorRT plugin registry refuses a second registration of one id.
    """
    from daefr.export import trt_plugin_defs

    trt_plugin_defs.register_once()
