"""AOT adapter kernels and the TensorRT plugin definitions behind ``plugins.register_plugins``.

Imported only when engines are built with ``--plugins``: it needs Triton (compiling for a
CUDA target) and, for ``register_once``, TensorRT >= 10.7 with ``tensorrt.plugin``. UNTESTED
against TensorRT here (it cannot be installed on this project's machines); ``compile_ptx``
is exercised on the CPU by the tests (Triton compiles PTX without a GPU).

TensorRT calls an AOT kernel as ``kernel(inputs..., extra int32 args..., outputs...)``. The
adapters below have exactly that signature and call the real kernels of ``daefr.kernels``
with contiguous strides (TensorRT hands plugins LINEAR, i.e. contiguous, tensors); float
scalars (LayerNorm eps, the softmax scale) and the static sizes are compile-time constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import triton
import triton.language as tl

from daefr.kernels.attention import _attention_kernel
from daefr.kernels.head import _code_head_kernel

# The kernels are autotuned; the adapters call the plain jitted function with one config.
_attention_body = _attention_kernel.fn
_code_head_body = _code_head_kernel.fn
ATTENTION_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64}
CODE_HEAD_BLOCKS = {"BLOCK_M": 32, "BLOCK_K": 64, "BLOCK_C": 64}
NUM_WARPS = 4


@triton.jit
def code_head_aot(
    # inputs
    x_ptr,
    ln_w_ptr,
    ln_b_ptr,
    w_ptr,
    codebook_ptr,
    # extra int32 arguments
    M,
    # outputs
    idx_ptr,
    codes_ptr,
    # meta-parameters
    C: tl.constexpr,
    K: tl.constexpr,
    D: tl.constexpr,
    EPS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    # (M, C) x, (K, C) proj, (K, D) codebook, all contiguous; no logits (codes_ptr as dummy).
    _code_head_body(
        x_ptr, ln_w_ptr, ln_b_ptr, w_ptr, codebook_ptr, idx_ptr, codes_ptr, codes_ptr,
        M, C, K, D, EPS,
        C, 1, C, 1, D, 1, D, 1, 0, 0,
        STORE_LOGITS=False, UPCAST=False, DOT_PRECISION="ieee",
        BLOCK_M=BLOCK_M, BLOCK_K=BLOCK_K, BLOCK_C=BLOCK_C,
    )  # fmt: skip


@triton.jit
def fused_attention_aot(
    # inputs
    q_ptr,
    k_ptr,
    v_ptr,
    # extra int32 arguments
    N_Q,
    N_KV,
    # outputs
    o_ptr,
    # meta-parameters
    H: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    QK_SCALE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # (B, H, N, Dh) contiguous q, k, v and o.
    _attention_body(
        q_ptr, k_ptr, v_ptr, o_ptr, H, N_Q, N_KV, HEAD_DIM, QK_SCALE,
        H * N_Q * HEAD_DIM, N_Q * HEAD_DIM, HEAD_DIM, 1,
        H * N_KV * HEAD_DIM, N_KV * HEAD_DIM, HEAD_DIM, 1,
        H * N_KV * HEAD_DIM, N_KV * HEAD_DIM, HEAD_DIM, 1,
        H * N_Q * HEAD_DIM, N_Q * HEAD_DIM, HEAD_DIM, 1,
        BLOCK_D=BLOCK_D, BLOCK_DV=BLOCK_DV, SINGLE_D=BLOCK_D >= HEAD_DIM, UPCAST=False,
        DOT_PRECISION="tf32", BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
    )  # fmt: skip


@dataclass(frozen=True)
class CompiledKernel:
    name: str
    ptx: str
    num_warps: int
    shared_mem: int


def _compile(
    fn: object, signature: dict[str, str], constexprs: dict[str, object], arch: int | None
) -> CompiledKernel:
    from triton.backends.compiler import GPUTarget

    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    target = None if arch is None else GPUTarget("cuda", arch, 32)
    compiled = triton.compile(src, target=target, options={"num_warps": NUM_WARPS})
    return CompiledKernel(
        compiled.metadata.name, compiled.asm["ptx"], compiled.metadata.num_warps, compiled.metadata.shared
    )


def compile_code_head(
    dtype: str, c: int, k: int, d: int, eps: float, arch: int | None = None
) -> CompiledKernel:
    """dtype: Triton type of x/weights ("fp32" under ``precision.POLICY``)."""
    ptr = f"*{dtype}"
    signature = {
        "x_ptr": ptr, "ln_w_ptr": ptr, "ln_b_ptr": ptr, "w_ptr": ptr, "codebook_ptr": ptr,
        "M": "i32", "idx_ptr": "*i32", "codes_ptr": ptr,
    }  # fmt: skip
    constexprs = {"C": c, "K": k, "D": d, "EPS": eps, **CODE_HEAD_BLOCKS}
    return _compile(code_head_aot, signature, constexprs, arch)


def attention_blocks(head_dim: int) -> tuple[int, int]:
    padded = max(16, 1 << max(head_dim - 1, 0).bit_length())
    return min(padded, 128), min(padded, 128)


def compile_attention(dtype: str, heads: int, head_dim: int, arch: int | None = None) -> CompiledKernel:
    ptr = f"*{dtype}"
    signature = {"q_ptr": ptr, "k_ptr": ptr, "v_ptr": ptr, "N_Q": "i32", "N_KV": "i32", "o_ptr": ptr}
    block_d, block_dv = attention_blocks(head_dim)
    constexprs = {
        "H": heads, "HEAD_DIM": head_dim, "QK_SCALE": math.log2(math.e) / math.sqrt(head_dim),
        "BLOCK_D": block_d, "BLOCK_DV": block_dv, **ATTENTION_BLOCKS,
    }  # fmt: skip
    return _compile(fused_attention_aot, signature, constexprs, arch)


_REGISTERED = False


def register_once() -> None:
    """The ``tensorrt.plugin`` definitions (shape/type descriptors + AOT implementations)."""
    global _REGISTERED
    if _REGISTERED:
        return
    import numpy as np
    import tensorrt as trt
    import tensorrt.plugin as trtp

    def triton_dtype(desc: trtp.TensorDesc) -> str:
        return {trt.float32: "fp32", trt.float16: "fp16"}[desc.dtype]

    @trtp.register("daefr::fused_attention")
    def _attention_desc(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc) -> trtp.TensorDesc:
        return q.like()

    @trtp.aot_impl("daefr::fused_attention")
    def _attention_aot(q, k, v, outputs, tactic):  # noqa: ANN001, ANN202 (signature checked by TensorRT)
        heads, head_dim = int(q.shape_expr[1]), int(q.shape_expr[3])  # static in our graphs
        kernel = compile_attention(triton_dtype(q), heads, head_dim)
        block_d, block_dv = attention_blocks(head_dim)
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(q.shape_expr[2], ATTENTION_BLOCKS["BLOCK_M"])
        launch.grid_y = q.shape_expr[0] * heads
        launch.grid_z = trtp.cdiv(head_dim, block_dv)
        launch.block_x = kernel.num_warps * 32
        launch.shared_mem = kernel.shared_mem
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(q.shape_expr[2]), trtp.SymInt32(k.shape_expr[2])])
        return kernel.name.encode(), kernel.ptx.encode(), launch, extra

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
    def _code_head_aot(x, ln_w, ln_b, proj_w, codebook, eps, outputs, tactic):  # noqa: ANN001, ANN202
        c, k, d = int(x.shape_expr[1]), int(codebook.shape_expr[0]), int(codebook.shape_expr[1])
        kernel = compile_code_head(triton_dtype(x), c, k, d, float(np.float32(eps)))
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(x.shape_expr[0], CODE_HEAD_BLOCKS["BLOCK_M"])
        launch.block_x = kernel.num_warps * 32
        launch.shared_mem = kernel.shared_mem
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(x.shape_expr[0])])
        return kernel.name.encode(), kernel.ptx.encode(), launch, extra

    _REGISTERED = True
