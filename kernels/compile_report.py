"""Compile every autotune config of every kernel for Hopper (sm_90), without a GPU.

    python -m daefr.kernels.compile_report [--dtypes float32,float16,bfloat16] [--out PATH]

The CPU tests run the kernels in Triton's interpreter, which checks what they compute but never
compiles them; on a GPU the autotuner silently drops a config that fails to compile or needs
too much shared memory. This report closes that gap offline, with Triton's own compiler and
ptxas (both ship in the triton wheel):

1. the official-size model runs on PyTorch's ``meta`` device with ``impl="triton"`` and every
   kernel call it makes is recorded with the shapes and strides the model really passes
   (the forward pass; the HQ-path quantization; the code head with logits, as training and
   parity use it);
2. for each dtype, each distinct call and each autotune config, the launch that the launcher
   itself builds (``plan_*`` in each kernel file: the same arguments, hence the same
   specialisation) is compiled to a cubin for sm_90a;
3. each row gives the registers and spill bytes per thread (``ptxas -v``), the shared memory
   per block, whether the dots use Hopper tensor cores (``wgmma``), older ``mma`` or none,
   and the theoretical occupancy on one H100/H200 SM from those numbers.

Problems (exit 1): a config that does not compile, one that needs more shared memory than a
block may have, a half-precision kernel whose dots use no tensor core instruction, or a
kernel call left with no usable config. Spills are reported, not failed. Nothing here ran on
a GPU: these are compiler facts, not timings. Exit 2: run under ``TRITON_INTERPRET=1`` (the
interpreter's configs are not the GPU's), or Triton missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from daefr.atomic import write_report
from daefr.kernels._launch import KernelLaunch, interpreting
from daefr.kernels._tiles import describe_config

ARCH = 90  # H100 and H200


@dataclass(frozen=True)
class SmLimits:
    """Per-SM resources of compute capability 9.0 (CUDA C Programming Guide, H100 and H200)."""

    registers: int = 65536
    register_unit_per_warp: int = 256  # registers are allocated per warp in units of 256
    max_warps: int = 64
    max_blocks: int = 32
    shared_per_sm: int = 233472  # 228 KiB
    shared_per_block: int = 232448  # 227 KiB, the most one block may opt in to
    shared_reserved_per_block: int = 1024


SM90 = SmLimits()


@dataclass(frozen=True)
class KernelCall:
    """One call the model makes: the custom op, where it comes from, and its arguments
    (meta tensors keep the shapes and strides the model passes)."""

    op: str
    source: str
    args: tuple

    def key(self) -> tuple:
        return (self.op, *(_describe(a, strides=True) for a in self.args))

    def shapes(self) -> str:
        """The distinct tensor shapes, in argument order (q, k, v of one shape show once);
        "*" marks a strided view (not contiguous), as the model passes it."""
        tensors = [a for a in self.args if isinstance(a, torch.Tensor)]
        shapes = [_describe(t, strides=False) + ("" if t.is_contiguous() else "*") for t in tensors]
        return " ".join(dict.fromkeys(shapes))

    def with_dtype(self, dtype: torch.dtype) -> KernelCall:
        def convert(a: object) -> object:
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                return torch.empty_strided(a.shape, a.stride(), dtype=dtype, device="meta")
            return a

        return dataclasses.replace(self, args=tuple(convert(a) for a in self.args))


def _describe(a: object, strides: bool) -> str:
    if not isinstance(a, torch.Tensor):
        return repr(a)
    shape = "x".join(str(s) for s in a.shape)
    return f"{shape}@{a.stride()}" if strides else shape


class _KernelCallRecorder(TorchDispatchMode):
    def __init__(self, source: str = "") -> None:
        super().__init__()
        self.source = source
        self.calls: list[KernelCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func.namespace == "daefr":
            self.calls.append(KernelCall(func._schema.name.split("::")[1], self.source, tuple(args)))
        return func(*args, **(kwargs or {}))


def record_model_calls(batch: int = 1) -> list[KernelCall]:
    """The kernel calls of the official model at ``batch`` faces, deduplicated, in call order."""
    import daefr.kernels.attention  # noqa: F401  (registers the daefr:: ops and their fakes)
    import daefr.kernels.head  # noqa: F401
    import daefr.kernels.quantize  # noqa: F401
    from daefr import DAEFR, DAEFRConfig

    config = DAEFRConfig()
    with torch.device("meta"):
        model = DAEFR(config, impl="triton").eval()
        image = torch.empty(batch, 3, config.vqgan.resolution, config.vqgan.resolution)
    recorder = _KernelCallRecorder()
    with recorder, torch.inference_mode():
        recorder.source = "forward"
        model(image)
        recorder.source = "HQ-path quantize"
        model.vqvae.Fixed_quantize.quantize(model.encode_hq(image))
    calls = recorder.calls
    heads = [c for c in calls if c.op == "code_head"]
    # the same head with logits (training, parity): the last argument is return_logits
    calls += [KernelCall(h.op, "code head with logits", (*h.args[:-1], True)) for h in heads[:1]]
    unique: dict[tuple, KernelCall] = {}
    for call in calls:
        unique.setdefault(call.key(), call)
    return list(unique.values())


def distinct_compilations(calls: Iterable[KernelCall]) -> list[KernelCall]:
    """The first of each group of calls that Triton compiles to the same code.

    Triton specialises on dtypes, pointer alignment and which integers (sizes, strides) are 1
    or multiples of 16, not on the sizes themselves: batch 1 and batch 2 mostly share their
    kernels, but at batch 1 the quantizer gets a transposed view where batch 2 gets a copy.
    """
    groups: dict[tuple, list[KernelCall]] = {}
    for call in calls:
        _, launch = _planners()[call.op](*call.args)
        config = launch.kernel.configs[0]
        _, specialization, _ = _binder(launch.kernel.fn)(*launch.args, **launch.kwargs, **config.all_kwargs())
        groups.setdefault((call.op, repr(specialization)), []).append(call)
    return [group[0] for group in groups.values()]


def _planners() -> dict[str, Callable[..., tuple[object, KernelLaunch | None]]]:
    from daefr.kernels.attention import plan_fused_attention
    from daefr.kernels.head import plan_code_head
    from daefr.kernels.quantize import plan_nearest_code

    return {
        "nearest_code": plan_nearest_code,
        "code_head": plan_code_head,
        "fused_attention": plan_fused_attention,
    }


@dataclass
class Row:
    op: str
    source: str
    shapes: str
    dtype: str
    config: str
    num_warps: int
    compiled: bool
    error: str = ""
    registers: int | None = None
    spill_stores: int | None = None
    spill_loads: int | None = None
    shared_bytes: int | None = None
    tensor_cores: str | None = None  # "wgmma", "mma" or "none"
    occupancy: float | None = None  # resident warps / 64 per SM, theoretical
    compile_s: float = 0.0


@dataclass(frozen=True)
class PtxasUsage:
    registers: int
    spill_stores: int
    spill_loads: int


def parse_ptxas_log(log: str) -> PtxasUsage:
    """Registers and spill bytes per thread from ``ptxas -v`` (one kernel per log)."""
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if regs is None or spills is None:
        raise ValueError(f"no register/spill line in the ptxas log:\n{log[-1000:]}")
    return PtxasUsage(int(regs.group(1)), int(spills.group(1)), int(spills.group(2)))


def tensor_core_instructions(ptx: str) -> str:
    if re.search(r"\bwgmma\.mma_async", ptx):
        return "wgmma"
    if re.search(r"\bmma\.sync", ptx):
        return "mma"
    return "none"


def theoretical_occupancy(registers: int, num_warps: int, shared_bytes: int, sm: SmLimits = SM90) -> float:
    """Resident warps per SM over the maximum, from registers, shared memory and block limits."""
    per_warp = -(-registers * 32 // sm.register_unit_per_warp) * sm.register_unit_per_warp
    blocks = min(
        (sm.registers // per_warp) // num_warps,
        sm.shared_per_sm // (shared_bytes + sm.shared_reserved_per_block),
        sm.max_blocks,
        sm.max_warps // num_warps,
    )
    return blocks * num_warps / sm.max_warps


def _ptxas_usage(ptx: str) -> PtxasUsage:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        # the flags Triton's own make_cubin passes (-v, --regAllocOptLevel=2, the arch)
        cmd = [
            get_ptxas(ARCH).path, "-v", "--regAllocOptLevel=2",
            f"--gpu-name={sm_arch_from_capability(ARCH)}", src, "-o", os.path.join(tmp, "kernel.cubin"),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return parse_ptxas_log(done.stderr + done.stdout)


@functools.cache
def _sm90_backend() -> tuple[object, object]:
    """(target, backend) of Triton's NVIDIA compiler for sm_90, without a driver."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    target = GPUTarget("cuda", ARCH, 32)
    return target, make_backend(target)


@functools.cache
def _binder(jit: object) -> Callable:
    """Triton's own argument binder for sm_90: (bound args, specialization, options)."""
    from triton.runtime.jit import create_function_from_signature

    return create_function_from_signature(jit.signature, jit.params, _sm90_backend()[1])


def compile_launch(launch: KernelLaunch, config: object) -> object:
    """Compile ``launch`` with one autotune config for sm_90, as the JIT would on an H100.

    Uses Triton's JIT binder (the runtime's argument specialisation) and ``triton.compile``
    with an explicit target, so no driver or GPU is needed.
    """
    import triton
    from triton.compiler import ASTSource

    jit = launch.kernel.fn
    target, backend = _sm90_backend()
    kwargs = {**launch.kwargs, **config.all_kwargs()}
    bound, specialization, options = _binder(jit)(*launch.args, **kwargs)
    options, signature, constexprs, attrs = jit._pack_args(backend, kwargs, bound, specialization, options)
    return triton.compile(
        ASTSource(jit, signature, constexprs, attrs), target=target, options=options.__dict__
    )


def compile_rows(call: KernelCall, progress: Callable[[str], None] = lambda _: None) -> list[Row]:
    _, launch = _planners()[call.op](*call.args)
    assert launch is not None, f"{call.op} {call.shapes()} launches nothing"
    dtype = str(next(a.dtype for a in call.args if isinstance(a, torch.Tensor))).replace("torch.", "")
    rows = []
    for config in launch.kernel.configs:
        row = Row(
            call.op, call.source, call.shapes(), dtype, describe_config(config), config.num_warps, False
        )
        progress(f"{call.op} {dtype} {row.config}")
        start = time.perf_counter()
        try:
            kernel = compile_launch(launch, config)
            usage = _ptxas_usage(kernel.asm["ptx"])
        except Exception as err:  # a compile failure is a result of this report, not a crash
            row.error = (
                f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
            )
        else:
            row.compiled = True
            row.registers = usage.registers
            row.spill_stores = usage.spill_stores
            row.spill_loads = usage.spill_loads
            row.shared_bytes = kernel.metadata.shared
            row.tensor_cores = tensor_core_instructions(kernel.asm["ptx"])
            row.occupancy = theoretical_occupancy(usage.registers, config.num_warps, kernel.metadata.shared)
        row.compile_s = time.perf_counter() - start
        rows.append(row)
    return rows


def find_problems(rows: Iterable[Row], sm: SmLimits = SM90) -> list[str]:
    rows = list(rows)
    problems = []
    for r in rows:
        where = f"{r.op} {r.shapes} {r.dtype} [{r.config}]"
        if not r.compiled:
            problems.append(f"does not compile: {where}: {r.error}")
            continue
        if r.shared_bytes > sm.shared_per_block:
            problems.append(f"needs {r.shared_bytes} B of shared memory (> {sm.shared_per_block}): {where}")
        if r.dtype in ("float16", "bfloat16") and r.tensor_cores == "none":
            problems.append(f"half-precision dots without tensor cores: {where}")
    usable: dict[tuple, bool] = {}
    for r in rows:
        call = (r.op, r.shapes, r.source, r.dtype)
        usable[call] = usable.get(call, False) or (r.compiled and r.shared_bytes <= sm.shared_per_block)
    problems += [f"no usable config: {' '.join(k)}" for k, ok in usable.items() if not ok]
    return problems


def format_rows(rows: list[Row]) -> list[str]:
    """One line per config: registers and spill-store bytes per thread, shared memory per block,
    the tensor-core instructions of the dots and the theoretical occupancy of one SM."""
    head = (
        f"{'kernel':<16}{'shapes':<32}{'from':<22}{'dtype':<10}{'config':<40}{'regs':>5}{'spill B':>8}"
        f"{'smem KiB':>9}{'tensor':>7}{'occup.':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r.op:<16}{r.shapes:<32}{r.source:<22}{r.dtype:<10}{r.config:<40}"
        if not r.compiled:
            lines.append(f"{left}FAILED {r.error}")
            continue
        lines.append(
            f"{left}{r.registers:>5}{r.spill_stores:>8}"
            f"{r.shared_bytes / 1024:>9.1f}{r.tensor_cores:>7}{r.occupancy:>7.0%}"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m daefr.kernels.compile_report",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dtypes", default="float32,float16,bfloat16", help="comma-separated")
    parser.add_argument("--ops", default="nearest_code,code_head,fused_attention", help="comma-separated")
    parser.add_argument("--out", default=None, help="also write the report here (.json: JSON, else text)")
    args = parser.parse_args(argv)
    names = args.dtypes.split(",")
    if any(n not in ("float32", "float16", "bfloat16") for n in names):
        parser.error(f"--dtypes: choose among float32, float16, bfloat16, got {args.dtypes}")
    args.dtypes = [getattr(torch, n) for n in names]
    args.ops = args.ops.split(",")
    if any(op not in ("nearest_code", "code_head", "fused_attention") for op in args.ops):
        parser.error(
            f"--ops: choose among nearest_code, code_head, fused_attention, got {','.join(args.ops)}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prog = "daefr.kernels.compile_report"
    if interpreting():
        print(f"{prog}: unset TRITON_INTERPRET: the interpreter's configs are not the GPU's", file=sys.stderr)
        return 2
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # 3.9's default, without its warning
    try:
        import triton
    except ImportError:
        print(f"{prog}: Triton is not installed: pip install daefr[triton]", file=sys.stderr)
        return 2
    recorded = [c for batch in (1, 2) for c in record_model_calls(batch) if c.op in args.ops]
    calls = distinct_compilations(recorded)
    rows: list[Row] = []
    start = time.perf_counter()
    for dtype in args.dtypes:
        for call in calls:
            rows += compile_rows(
                call.with_dtype(dtype), lambda what: print(f"compiling {what}", file=sys.stderr)
            )
    from triton.backends.nvidia.compiler import get_ptxas

    meta = {
        "target": f"sm_{ARCH}a (H100, H200), compiled on this machine, not run",
        "triton": triton.__version__,
        "ptxas": get_ptxas(ARCH).version,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "compile_seconds": round(time.perf_counter() - start, 1),
    }
    problems = find_problems(rows)
    spilling = [r for r in rows if r.compiled and r.spill_stores]
    summary = [
        f"{sum(r.compiled for r in rows)}/{len(rows)} configs compiled; "
        f"{len(spilling)} spill registers to local memory; {len(problems)} problem(s)",
        *problems,
    ]
    legend = "shapes: * a strided view, as the model passes it; regs, spill B: per thread (ptxas -v)"
    text = "\n".join([*(f"{k}: {v}" for k, v in meta.items()), legend, "", *format_rows(rows), "", *summary])
    text += "\n"
    print(text, end="")
    if args.out:
        payload = {"meta": meta, "rows": [dataclasses.asdict(r) for r in rows], "problems": problems}
        write_report(args.out, text, payload)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
