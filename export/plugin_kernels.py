"""AOT adapter kernels for the TensorRT plugins of ``plugins.register_plugins``, compiled to PTX.

Imported only when engines are built with ``--plugins``: it needs Triton (compiling for a
CUDA target); the TensorRT plugin definitions are in ``trt_plugin_defs.py``. The compile
functions are exercised on the CPU by the tests (Triton compiles PTX without a GPU), and
``plugin_lint.py`` checks every kernel the model needs against what TensorRT passes.

TensorRT calls an AOT kernel as ``kernel(inputs..., extra int32 args..., outputs...)``. The
adapters below have exactly that signature and call the real kernels of ``daefr.kernels``
with contiguous strides (TensorRT hands plugins LINEAR, i.e. contiguous, tensors); float
scalars (LayerNorm eps, the softmax scale) and the static sizes are compile-time constants.

What the PTX handed to TensorRT must satisfy (read, not run: TensorRT cannot be installed here):

- **PTX ISA version** no newer than the driver JIT-compiles, and than TensorRT's plugin PTX
  loader accepts (9.0 per pytorch/TensorRT PR #4147,
  ``py/torch_tensorrt/annotation/_custom_plugin/_aot/_triton.py`` ``_ptx_downgrade_version``:
  newer PTX "silently fail[s] to load"). We pin Triton's own ``ptx_version`` option instead
  of editing the ``.version`` line, so LLVM and Triton's passes never use newer instructions,
  and ptxas checks the result (``plugin_lint``).
- **Exactly the parameters TensorRT passes.** Triton >= 3.3 appends a global- and a
  profile-scratch pointer to every entry; TensorRT's ``IPluginV3QuickAOTBuild`` learns only
  the inputs, outputs and ``extraArgs`` (NVIDIA/TensorRT v11.1
  ``include/impl/NvInferPythonPlugin.h`` ``getLaunchParams``; ``python/.../plugin/_plugin_class.py``
  ``get_launch_params``), so the trailing scratch parameters are removed (as Torch-TensorRT's
  ``_ptx_reorder_and_strip_params`` does) after checking the body never reads them.
- **Dynamic shared memory within 48 KiB.** ``IKernelLaunchParams::setSharedMem`` is "the
  dynamic shared-memory per thread block" (``NvInferPythonPlugin.h``); nothing there says
  TensorRT opts the kernel in to more (``cudaFuncAttributeMaxDynamicSharedMemorySize``), so
  the AOT tiles stay within the CUDA default and a larger kernel fails the build.
- **A unique entry name per specialisation**: TensorRT keys the kernel it embeds by name
  (Torch-TensorRT's ``_specialize_ptx_kernel_name``: "TRT identifies kernels by name");
  our name carries the dtype and a digest of every constant.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import math
import os
import re
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
# Tiles of the AOT kernels, chosen so every kernel fits in 48 KiB of shared memory with
# NUM_STAGES=2 (sm_90a, measured by ``plugin_lint``): fp32 attention with 64x64 tiles and
# Triton's default 3 stages needed 98,304 B at head dim 64 and 131,072 B at 512; 64x32 and
# 2 stages need 41,216 B and 49,152 B. BLOCK_M is the same for every dtype (the grid uses it).
ATTENTION_BLOCK_M = 64
ATTENTION_BLOCKS = {
    "fp32": {"BLOCK_M": ATTENTION_BLOCK_M, "BLOCK_N": 32},
    "fp16": {"BLOCK_M": ATTENTION_BLOCK_M, "BLOCK_N": 64},
}
CODE_HEAD_BLOCKS = {"BLOCK_M": 32, "BLOCK_K": 64, "BLOCK_C": 64}
NUM_WARPS = 4
NUM_STAGES = 2
# TensorRT's plugin PTX loader accepts PTX ISA <= 9.0 (see the module docstring)
TENSORRT_MAX_PTX_VERSION = 90
# CUDA's limit without cudaFuncAttributeMaxDynamicSharedMemorySize, which TensorRT is not
# known to set for AOT kernels
CUDA_DEFAULT_SHARED_BYTES = 48 * 1024
# Parameters TensorRT passes to each AOT kernel: inputs + extra int32s + outputs
PLUGIN_PARAMS = {"fused_attention": 3 + 2 + 1, "code_head": 5 + 1 + 2}


class PluginCompileError(RuntimeError):
    """An AOT kernel cannot be handed to TensorRT as compiled; the message says why and what to do."""


@dataclass(frozen=True)
class PluginTarget:
    """What the AOT PTX is compiled for: the GPU (compute capability as ``major*10+minor``),
    the PTX ISA version (``major*10+minor``, at most what the deployment driver JITs and
    TensorRT loads) and the shared memory a block may use. Part of the engine key."""

    arch: int
    ptx_version: int
    max_shared_bytes: int = CUDA_DEFAULT_SHARED_BYTES

    def __post_init__(self) -> None:
        if not 70 <= self.arch <= 199:
            raise ValueError(
                f"PluginTarget.arch: {self.arch!r}; expected a compute capability like 90 (sm_90)"
            )
        if not 60 <= self.ptx_version <= TENSORRT_MAX_PTX_VERSION:
            raise ValueError(
                f"PluginTarget.ptx_version: {self.ptx_version!r}; expected 60..{TENSORRT_MAX_PTX_VERSION} "
                f"(PTX ISA 6.0..{TENSORRT_MAX_PTX_VERSION / 10:.1f}, the newest TensorRT's plugin loader accepts)"
            )
        if not 0 < self.max_shared_bytes <= 232448:
            raise ValueError(
                f"PluginTarget.max_shared_bytes: {self.max_shared_bytes!r}; expected 1..232448 (227 KiB, sm_90)"
            )


# None: resolve from this process's GPU and driver (TensorRT builds the engine there);
# the tests and plugin_lint set a target (no GPU here).
TARGET: PluginTarget | None = None


def driver_ptx_version() -> int:
    """The newest PTX ISA the installed CUDA driver JIT-compiles (``cuDriverGetVersion``,
    mapped as Triton maps CUDA versions to PTX in ``backends/nvidia/compiler.ptx_get_version``)."""
    from triton.backends.nvidia.compiler import ptx_get_version

    version = ctypes.c_int(0)
    try:
        status = ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
    except OSError as err:
        raise PluginCompileError(
            f"cannot load libcuda.so.1 ({err}): is the NVIDIA driver installed?"
        ) from err
    if status != 0:
        raise PluginCompileError(f"cuDriverGetVersion failed with CUDA error {status}")
    return ptx_get_version(f"{version.value // 1000}.{version.value % 1000 // 10}")


def resolve_target() -> PluginTarget:
    """``TARGET``, or this process's GPU with the newest PTX its driver and TensorRT accept."""
    if TARGET is not None:
        return TARGET
    import torch

    major, minor = torch.cuda.get_device_capability()
    return PluginTarget(major * 10 + minor, min(driver_ptx_version(), TENSORRT_MAX_PTX_VERSION))


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
    """One AOT kernel as TensorRT gets it: its unique entry name, the PTX (entry renamed and
    trimmed to ``num_params`` parameters) and its launch facts."""

    name: str
    ptx: str
    num_warps: int
    shared_mem: int
    num_params: int


_ENTRY = re.compile(r"\.visible \.entry (\w+)\(([^)]*)\)")


def entry_params(ptx: str) -> tuple[str, list[str]]:
    """(entry name, its ``.param`` declarations) of the one kernel in ``ptx``."""
    entries = _ENTRY.findall(ptx)
    if len(entries) != 1:
        raise PluginCompileError(f"expected one .entry in the PTX, found {len(entries)}")
    name, params = entries[0]
    return name, [p.strip() for p in params.split(",") if p.strip()]


def ptx_version(ptx: str) -> int:
    """The ``.version`` of ``ptx`` as ``major*10+minor`` (``.version 9.0`` -> 90)."""
    found = re.search(r"^\.version (\d+)\.(\d+)", ptx, flags=re.MULTILINE)
    if found is None:
        raise PluginCompileError("the PTX has no .version line")
    return int(found.group(1)) * 10 + int(found.group(2))


def for_tensorrt(ptx: str, unique_name: str, num_params: int) -> str:
    """``ptx`` with its entry renamed to ``unique_name`` and only its first ``num_params``
    parameters declared (Triton's trailing scratch pointers removed); refuses when the body
    reads a removed parameter."""
    name, params = entry_params(ptx)
    if len(params) < num_params:
        raise PluginCompileError(f"{name} declares {len(params)} parameters, TensorRT passes {num_params}")
    entry = _ENTRY.search(ptx)
    body = ptx[entry.end() :]
    read = {int(i) for i in re.findall(rf"\b{name}_param_(\d+)\b", body)}
    if any(i >= num_params for i in read):
        raise PluginCompileError(
            f"{name} reads parameters {sorted(i for i in read if i >= num_params)} beyond the {num_params} "
            "TensorRT passes (Triton scratch memory?)"
        )
    kept = ",\n\t".join(params[:num_params])
    ptx = ptx[: entry.start()] + f".visible .entry {name}(\n\t{kept}\n)" + body
    return re.sub(rf"\b{name}(?=\(|_param_\d|\s)", unique_name, ptx)


def unique_kernel_name(base: str, dtype: str, constexprs: dict[str, object], target: PluginTarget) -> str:
    """``base_dtype_<digest>``: one name per specialisation (dtype, constants, target)."""
    payload = json.dumps(
        {"c": constexprs, "t": asdict(target), "w": NUM_WARPS, "s": NUM_STAGES}, sort_keys=True
    )
    return f"{base}_{dtype}_{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def _compile(
    op: str,
    fn: object,
    dtype: str,
    signature: dict[str, str],
    constexprs: dict[str, object],
    target: PluginTarget,
) -> CompiledKernel:
    from triton.backends.compiler import GPUTarget

    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    options = {"num_warps": NUM_WARPS, "num_stages": NUM_STAGES, "ptx_version": target.ptx_version}
    compiled = triton.compile(src, target=GPUTarget("cuda", target.arch, 32), options=options)
    meta = compiled.metadata
    # TensorRT provides no Triton scratch buffer: the scratch pointers must be unused (size 0)
    scratch = getattr(meta, "global_scratch_size", 0) + getattr(meta, "profile_scratch_size", 0)
    if scratch:
        raise PluginCompileError(
            f"{meta.name} needs {scratch} bytes of Triton scratch memory, which a TensorRT AOT plugin launch does not provide"
        )
    if meta.shared > target.max_shared_bytes:
        raise PluginCompileError(
            f"the {op} plugin kernel ({dtype}, {constexprs}) needs {meta.shared} bytes of shared memory, more than "
            f"the {target.max_shared_bytes} a TensorRT AOT launch is known to allow; use smaller tiles in "
            "daefr/export/plugin_kernels.py or build without --plugins"
        )
    name = unique_kernel_name(meta.name, dtype, constexprs, target)
    ptx = for_tensorrt(compiled.asm["ptx"], name, PLUGIN_PARAMS[op])
    return CompiledKernel(name, ptx, meta.num_warps, meta.shared, PLUGIN_PARAMS[op])


@functools.cache
def _compile_in_subprocess(request: str) -> CompiledKernel:
    """Under TRITON_INTERPRET=1 (the export CLI traces with the interpreter) every @triton.jit
    function here is an interpreted one that cannot be compiled: compile in a fresh process.
    Memoised: TensorRT calls ``aot_impl`` for every plugin node and tactic."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "daefr.export.plugin_kernels"],
        input=request, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise PluginCompileError(f"compiling the plugin kernel ({request}) failed:\n{done.stderr[-3000:]}")
    return CompiledKernel(**json.loads(done.stdout.strip().splitlines()[-1]))


def _request(kernel: str, target: PluginTarget, **params: object) -> str:
    return json.dumps({"kernel": kernel, "target": asdict(target), **params}, sort_keys=True)


def compile_code_head(
    dtype: str, c: int, k: int, d: int, eps: float, target: PluginTarget | None = None
) -> CompiledKernel:
    """dtype: Triton type of x/weights ("fp32" under ``precision.POLICY``)."""
    target = resolve_target() if target is None else target
    if interpreting():
        return _compile_in_subprocess(_request("code_head", target, dtype=dtype, c=c, k=k, d=d, eps=eps))
    return _compile_code_head(dtype, c, k, d, eps, target)


@functools.cache
def _compile_code_head(
    dtype: str, c: int, k: int, d: int, eps: float, target: PluginTarget
) -> CompiledKernel:
    ptr = f"*{dtype}"
    signature = {
        "x_ptr": ptr, "ln_w_ptr": ptr, "ln_b_ptr": ptr, "w_ptr": ptr, "codebook_ptr": ptr,
        "M": "i32", "idx_ptr": "*i32", "codes_ptr": ptr,
    }  # fmt: skip
    constexprs = {"C": c, "K": k, "D": d, "EPS": eps, **CODE_HEAD_BLOCKS}
    return _compile("code_head", code_head_aot, dtype, signature, constexprs, target)


attention_blocks = _head_dim_blocks  # (BLOCK_D, BLOCK_DV), as the eager launcher picks them


def compile_attention(
    dtype: str, heads: int, head_dim: int, target: PluginTarget | None = None
) -> CompiledKernel:
    target = resolve_target() if target is None else target
    if interpreting():
        return _compile_in_subprocess(
            _request("attention", target, dtype=dtype, heads=heads, head_dim=head_dim)
        )
    return _compile_attention(dtype, heads, head_dim, target)


@functools.cache
def _compile_attention(dtype: str, heads: int, head_dim: int, target: PluginTarget) -> CompiledKernel:
    if dtype not in ATTENTION_BLOCKS:
        raise PluginCompileError(
            f"no AOT attention tiles for {dtype!r}; expected one of {sorted(ATTENTION_BLOCKS)}"
        )
    ptr = f"*{dtype}"
    signature = {"q_ptr": ptr, "k_ptr": ptr, "v_ptr": ptr, "N_Q": "i32", "N_KV": "i32", "o_ptr": ptr}
    block_d, block_dv = attention_blocks(head_dim)
    constexprs = {
        "H": heads, "HEAD_DIM": head_dim, "QK_SCALE": math.log2(math.e) / math.sqrt(head_dim),
        "BLOCK_D": block_d, "BLOCK_DV": block_dv, **ATTENTION_BLOCKS[dtype],
        # exact fp32 products for fp32, as the eager launcher (kernels/_launch.dot_precision)
        "DOT_PRECISION": "ieee" if dtype == "fp32" else "tf32",
    }  # fmt: skip
    return _compile("fused_attention", fused_attention_aot, dtype, signature, constexprs, target)


def main() -> int:
    """``python -m daefr.export.plugin_kernels`` < JSON request: compile, print the kernel as JSON."""
    request = json.loads(sys.stdin.read())
    compile_fn = {"attention": compile_attention, "code_head": compile_code_head}[request.pop("kernel")]
    request["target"] = PluginTarget(**request["target"])
    print(json.dumps(asdict(compile_fn(**request))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
