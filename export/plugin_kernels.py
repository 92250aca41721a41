"""AOT adapter kernels for the TensorRT plugins of ``plugins.register_plugins``, compiled to PTX.

Imported only when engines are built with ``--plugins``: it needs Triton (compiling for a
CUDA target); the TensorRT plugin definitions are in ``trt_plugin_defs.py``. The compile
functions are exercised on the CPU by the tests (Triton compiles PTX without a GPU).

TensorRT calls an AOT kernel as ``kernel(inputs..., extra int32 args..., outputs...)``. The
adapters below have exactly that signature and call the real kernels of ``daefr.kernels``
with contiguous strides (TensorRT hands plugins LINEAR, i.e. contiguous, tensors); float
scalars (LayerNorm eps, the softmax scale) and the static sizes are compile-time constants.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

import triton
import triton.language as tl

from daefr.kernels._launch import interpreting
from daefr.kernels.attention import _attention_kernel, _head_dim_blocks
from daefr.kernels.head import _code_head_kernel

# The kernels are autotuned; the adapters call the plain jitted function with one config.
_attention_body = _attention_kernel.fn
_code_head_body = _code_head_kernel.fn
ATTENTION_BLOCKS = {"BLOCK_M": 64, "BLOCK_N": 64}
CODE_HEAD_BLOCKS = {"BLOCK_M": 32, "BLOCK_K": 64, "BLOCK_C": 64}
NUM_WARPS = 4
# None: compile for the GPU of this process (TensorRT builds the engine there); tests set 90
TARGET_ARCH: int | None = None


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
    DOT_PRECISION: tl.constexpr,
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
        DOT_PRECISION=DOT_PRECISION, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
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
    arch = TARGET_ARCH if arch is None else arch
    target = None if arch is None else GPUTarget("cuda", arch, 32)
    compiled = triton.compile(src, target=target, options={"num_warps": NUM_WARPS})
    # Triton appends scratch pointers to every kernel; TensorRT passes only inputs, extra
    # int32s and outputs, so they must be unused (size 0), as they are for these kernels
    meta = compiled.metadata
    scratch = getattr(meta, "global_scratch_size", 0) + getattr(meta, "profile_scratch_size", 0)
    if scratch:
        raise RuntimeError(
            f"{meta.name} needs {scratch} bytes of Triton scratch memory, which a TensorRT AOT "
            "plugin launch does not provide"
        )
    return CompiledKernel(meta.name, compiled.asm["ptx"], meta.num_warps, meta.shared)


def _compile_in_subprocess(kernel: str, arch: int | None, **kwargs: object) -> CompiledKernel:
    """Under TRITON_INTERPRET=1 (the export CLI traces with the interpreter) every @triton.jit
    function here is an interpreted one that cannot be compiled: compile in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    arch = TARGET_ARCH if arch is None else arch  # the child's TARGET_ARCH is its default
    request = json.dumps({"kernel": kernel, "arch": arch, **kwargs})
    done = subprocess.run(
        [sys.executable, "-m", "daefr.export.plugin_kernels"],
        input=request, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"compiling the {kernel} plugin kernel ({request}) failed:\n{done.stderr[-3000:]}")
    return CompiledKernel(**json.loads(done.stdout.strip().splitlines()[-1]))


def compile_code_head(
    dtype: str, c: int, k: int, d: int, eps: float, arch: int | None = None
) -> CompiledKernel:
    """dtype: Triton type of x/weights ("fp32" under ``precision.POLICY``)."""
    if interpreting():
        return _compile_in_subprocess("code_head", dtype=dtype, c=c, k=k, d=d, eps=eps, arch=arch)
    ptr = f"*{dtype}"
    signature = {
        "x_ptr": ptr, "ln_w_ptr": ptr, "ln_b_ptr": ptr, "w_ptr": ptr, "codebook_ptr": ptr,
        "M": "i32", "idx_ptr": "*i32", "codes_ptr": ptr,
    }  # fmt: skip
    constexprs = {"C": c, "K": k, "D": d, "EPS": eps, **CODE_HEAD_BLOCKS}
    return _compile(code_head_aot, signature, constexprs, arch)


attention_blocks = _head_dim_blocks  # (BLOCK_D, BLOCK_DV), as the eager launcher picks them


def compile_attention(dtype: str, heads: int, head_dim: int, arch: int | None = None) -> CompiledKernel:
    if interpreting():
        return _compile_in_subprocess("attention", dtype=dtype, heads=heads, head_dim=head_dim, arch=arch)
    ptr = f"*{dtype}"
    signature = {"q_ptr": ptr, "k_ptr": ptr, "v_ptr": ptr, "N_Q": "i32", "N_KV": "i32", "o_ptr": ptr}
    block_d, block_dv = attention_blocks(head_dim)
    constexprs = {
        "H": heads, "HEAD_DIM": head_dim, "QK_SCALE": math.log2(math.e) / math.sqrt(head_dim),
        "BLOCK_D": block_d, "BLOCK_DV": block_dv, **ATTENTION_BLOCKS,
        # exact fp32 products for fp32, as the eager launcher (kernels/_launch.dot_precision)
        "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32",
    }  # fmt: skip
    return _compile(fused_attention_aot, signature, constexprs, arch)


def main() -> int:
    """``python -m daefr.export.plugin_kernels`` < JSON request: compile, print the kernel as JSON."""
    request = json.loads(sys.stdin.read())
    compile_fn = {"attention": compile_attention, "code_head": compile_code_head}[request.pop("kernel")]
    print(json.dumps(asdict(compile_fn(**request))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
