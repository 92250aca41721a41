"""The TensorRT plugin definitions (``tensorrt.plugin``, TensorRT >= 10.9) of our AOT kernels.

This module must NOT use ``from __future__ import annotations``: ``tensorrt.plugin`` reads the
annotations of ``@trtp.register`` and ``@trtp.aot_impl`` functions at decoration time with
``issubclass`` and ``typing.get_origin``, which string annotations break (a TypeError, then no
plugin at all). ``tests/export/test_export_plugins.py`` checks both that and the shape logic
with a stand-in of ``tensorrt.plugin`` that behaves as its source does (TensorRT itself cannot
be installed on this project's machines).

- ``@trtp.register`` declares the output shapes and dtypes;
- ``@trtp.aot_impl`` returns (kernel name, PTX, launch parameters, extra int32 arguments).
  Sizes that our graphs keep static (heads, head dim, channels) are read with
  ``ShapeExpr.constant_value()``; the batch and token counts stay symbolic expressions.

``tensorrt.plugin.aot_impl`` first exists in TensorRT 10.9 (NVIDIA/TensorRT: absent from
``python/packaging/bindings_wheel/tensorrt/plugin/_lib.py`` at tag v10.8.0, defined there at
v10.9.0; v10.9.0 ``CHANGELOG.md``: "Added support for Python AOT plugins"), so 10.7/10.8 would
fail at decoration with an AttributeError: ``require_aot_plugins`` refuses them first.
"""

import math

_REGISTERED = False
MIN_TENSORRT = (10, 9)


class PluginSupportError(RuntimeError):
    """This TensorRT cannot build engines with our AOT plugins; the message says which one to install."""


def tensorrt_release(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as ``"10.9.0.34"``."""
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise PluginSupportError(
            f"cannot read the TensorRT version {version!r} (expected major.minor...)"
        ) from None


def require_aot_plugins(trt, trtp=None):  # noqa: ANN001, ANN201
    """Raise ``PluginSupportError`` unless ``trt`` (the tensorrt module) can build AOT plugins."""
    floor = ".".join(map(str, MIN_TENSORRT))
    if tensorrt_release(trt.__version__) < MIN_TENSORRT or (
        trtp is not None and not hasattr(trtp, "aot_impl")
    ):
        raise PluginSupportError(
            f"--plugins needs TensorRT >= {floor} (tensorrt.plugin.aot_impl); this is TensorRT {trt.__version__}: "
            f"pip install 'tensorrt>={floor}' or build without --plugins"
        )


def static_dim(expr, what):  # noqa: ANN001, ANN201
    """A build-time-constant dimension as an int (``ShapeExpr`` has no ``__int__``)."""
    if not expr.is_constant:
        raise ValueError(f"the {what} must be static in the ONNX graph to compile its plugin kernel")
    return int(expr.constant_value())


def register_once() -> None:
    """Register ``daefr::fused_attention`` and ``daefr::code_head`` (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import numpy as np
    import tensorrt as trt

    require_aot_plugins(trt)
    import tensorrt.plugin as trtp

    require_aot_plugins(trt, trtp)
    from daefr.export.plugin_kernels import (
        ATTENTION_BLOCK_M,
        CODE_HEAD_BLOCKS,
        attention_blocks,
        compile_attention,
        compile_code_head,
    )

    aot_result = tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]

    def triton_dtype(desc):  # noqa: ANN001, ANN202
        return {trt.float32: "fp32", trt.float16: "fp16"}[desc.dtype]

    @trtp.register("daefr::fused_attention")
    def _attention_desc(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc) -> trtp.TensorDesc:
        return q.like()

    @trtp.aot_impl("daefr::fused_attention")
    def _attention_aot(q, k, v, outputs, tactic) -> aot_result:  # noqa: ANN001
        heads = static_dim(q.shape_expr[1], "attention head count")
        head_dim = static_dim(q.shape_expr[3], "attention head dim")
        kernel = compile_attention(triton_dtype(q), heads, head_dim)
        _, block_dv = attention_blocks(head_dim)
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(q.shape_expr[2], ATTENTION_BLOCK_M)
        launch.grid_y = q.shape_expr[0] * heads
        launch.grid_z = math.ceil(head_dim / block_dv)  # both ints: trtp.cdiv refuses two ints
        launch.block_x = kernel.num_warps * 32
        launch.shared_mem = kernel.shared_mem
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(q.shape_expr[2]), trtp.SymInt32(k.shape_expr[2])])
        return kernel.name.encode(), kernel.ptx.encode(), launch, extra  # the unique entry name

    @trtp.register("daefr::code_head")
    def _code_head_desc(
        x: trtp.TensorDesc,
        ln_w: trtp.TensorDesc,
        ln_b: trtp.TensorDesc,
        proj_w: trtp.TensorDesc,
        codebook: trtp.TensorDesc,
        eps: float,
    ) -> tuple[trtp.TensorDesc, trtp.TensorDesc]:
        m = x.shape_expr[0]
        idx = trtp.from_shape_expr((m,), dtype=trt.int32)
        codes = trtp.from_shape_expr((m, codebook.shape_expr[1]), dtype=codebook.dtype)
        return idx, codes

    @trtp.aot_impl("daefr::code_head")
    def _code_head_aot(x, ln_w, ln_b, proj_w, codebook, eps, outputs, tactic) -> aot_result:  # noqa: ANN001
        c = static_dim(x.shape_expr[1], "code-head channel count")
        k = static_dim(codebook.shape_expr[0], "codebook size")
        d = static_dim(codebook.shape_expr[1], "code dim")
        kernel = compile_code_head(triton_dtype(x), c, k, d, float(np.float32(eps)))
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(x.shape_expr[0], CODE_HEAD_BLOCKS["BLOCK_M"])
        launch.block_x = kernel.num_warps * 32
        launch.shared_mem = kernel.shared_mem
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(x.shape_expr[0])])
        return kernel.name.encode(), kernel.ptx.encode(), launch, extra  # the unique entry name

    _REGISTERED = True
