"""Lint every AOT plugin kernel the model needs, offline, as ``--plugins`` compiles them.

    python -m daefr.export.plugin_lint [--arch 90] [--ptx-version 90] [--max-shared-bytes 49152]

No GPU and no TensorRT are needed: the kernel calls come from the official model run on
PyTorch's ``meta`` device (``kernels.compile_report.record_model_calls``), each plugin kernel
is compiled by ``plugin_kernels`` (the code ``aot_impl`` runs inside TensorRT) in every dtype
a plugin node may carry, and each PTX is checked for what TensorRT needs (see
``plugin_kernels``' docstring for the sources):

- its ``.version`` is at most the configured PTX ISA (``--ptx-version``, <= 9.0);
- its entry declares exactly the parameters TensorRT passes (inputs + extras + outputs);
- its shared memory is within ``--max-shared-bytes`` (48 KiB: no opt-in is known);
- its entry name is unique among all kernels (TensorRT keys embedded kernels by name);
- Triton's own ptxas assembles it for the target (the trimmed, renamed PTX is valid at that
  ISA version).

Exit 0: no problem; 1: problems (listed); 2: usage error or run under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from daefr.export import plugin_kernels as pk

DTYPES = ("fp32", "fp16")  # what trt_plugin_defs.triton_dtype accepts


@dataclass(frozen=True)
class PluginKernelCall:
    """One plugin kernel the model needs: the op and its compile-time sizes."""

    op: str  # "fused_attention" | "code_head"
    sizes: tuple[tuple[str, int | float], ...]

    def describe(self) -> str:
        return f"{self.op}(" + ", ".join(f"{k}={v}" for k, v in self.sizes) + ")"


def model_plugin_calls() -> list[PluginKernelCall]:
    """The distinct plugin kernel specialisations of the official model (meta device)."""
    from daefr.kernels.compile_report import record_model_calls

    calls: dict[PluginKernelCall, None] = {}
    for call in record_model_calls():
        if call.op == "fused_attention":
            q = call.args[0]  # (B, H, N, Dh)
            calls[PluginKernelCall(call.op, (("heads", q.shape[1]), ("head_dim", q.shape[3])))] = None
        elif call.op == "code_head":
            x, eps, codebook = call.args[0], call.args[3], call.args[5]  # x (M, C), codebook (K, D)
            sizes = (("c", x.shape[1]), ("k", codebook.shape[0]), ("d", codebook.shape[1]), ("eps", eps))
            calls[PluginKernelCall(call.op, sizes)] = None
    return list(calls)


def compile_call(call: PluginKernelCall, dtype: str, target: pk.PluginTarget) -> pk.CompiledKernel:
    sizes = dict(call.sizes)
    if call.op == "fused_attention":
        return pk.compile_attention(dtype, sizes["heads"], sizes["head_dim"], target)
    return pk.compile_code_head(dtype, sizes["c"], sizes["k"], sizes["d"], float(sizes["eps"]), target)


def ptxas_error(ptx: str, arch: int) -> str | None:
    """None when Triton's ptxas assembles ``ptx`` for ``arch``, else its last error line."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [get_ptxas(arch).path, f"--gpu-name={sm_arch_from_capability(arch)}", src, "-o", src + ".cubin"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return None
    lines = (done.stderr + done.stdout).strip().splitlines()
    return lines[-1] if lines else f"ptxas exit {done.returncode}"


def lint_kernels(
    kernels: Iterable[tuple[str, str, pk.CompiledKernel]], target: pk.PluginTarget, assemble: bool = True
) -> list[str]:
    """Problems of ``(what, op, kernel)`` triples against ``target``; empty when all pass."""
    kernels = list(kernels)
    problems = []
    names = Counter(k.name for _, _, k in kernels)
    for what, op, kernel in kernels:
        version = pk.ptx_version(kernel.ptx)
        if version > target.ptx_version:
            problems.append(
                f"{what}: PTX .version {version / 10:.1f} is newer than the limit {target.ptx_version / 10:.1f}"
            )
        name, params = pk.entry_params(kernel.ptx)
        if name != kernel.name:
            problems.append(f"{what}: the PTX entry is {name}, TensorRT is told {kernel.name}")
        if len(params) != pk.PLUGIN_PARAMS[op]:
            problems.append(f"{what}: {len(params)} .params, TensorRT passes {pk.PLUGIN_PARAMS[op]}")
        if kernel.shared_mem > target.max_shared_bytes:
            problems.append(
                f"{what}: {kernel.shared_mem} B of shared memory, limit {target.max_shared_bytes} B"
            )
        if names[kernel.name] > 1:
            problems.append(f"{what}: entry name {kernel.name} is used by {names[kernel.name]} kernels")
        if assemble and (error := ptxas_error(kernel.ptx, target.arch)):
            problems.append(f"{what}: ptxas refuses it: {error}")
    return problems


def lint_model(target: pk.PluginTarget, log: callable = lambda _: None) -> list[str]:  # type: ignore[valid-type]
    """Compile and lint every plugin kernel of the official model in every dtype."""
    kernels, problems = [], []
    for call in model_plugin_calls():
        for dtype in DTYPES:
            what = f"{call.describe()} {dtype}"
            try:
                kernel = compile_call(call, dtype, target)
            except pk.PluginCompileError as err:
                problems.append(f"{what}: {err}")
                continue
            log(
                f"{what}: {kernel.name} {kernel.shared_mem} B shared, PTX {pk.ptx_version(kernel.ptx) / 10:.1f}"
            )
            kernels.append((what, call.op, kernel))
    return problems + lint_kernels(kernels, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m daefr.export.plugin_lint", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--arch", type=int, default=90, help="compute capability as major*10+minor (default: 90)"
    )
    parser.add_argument(
        "--ptx-version", type=int, default=pk.TENSORRT_MAX_PTX_VERSION,
        help="newest PTX ISA the deployment driver JITs, as major*10+minor (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-shared-bytes", type=int, default=pk.CUDA_DEFAULT_SHARED_BYTES,
        help="shared memory a block may use (default: %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if pk.interpreting():
        print("plugin_lint: unset TRITON_INTERPRET (the interpreter compiles no PTX)", file=sys.stderr)
        return 2
    try:
        target = pk.PluginTarget(args.arch, args.ptx_version, args.max_shared_bytes)
    except ValueError as err:
        print(f"plugin_lint: {err}", file=sys.stderr)
        return 2
    problems = lint_model(target, log=print)
    for problem in problems:
        print(f"PROBLEM {problem}")
    print(
        f"{'FAILED' if problems else 'OK'}: {len(problems)} problem(s) for sm_{target.arch}, PTX {target.ptx_version / 10:.1f}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
