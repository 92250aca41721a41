"""Benchmark the fused kernels against eager PyTorch and torch.compile, on a CUDA GPU.

    python -m daefr.kernels.bench [--batches 1,8,32] [--dtypes float16,float32] [--out PATH]

For each kernel and B faces (M = B * 256 tokens) it prints the median time of the kernel, of
the eager PyTorch baselines and of ``torch.compile`` of the reference, the speed-up of the
kernel over each, and the fraction of the roofline floor reached:
floor = max(bytes moved once / HBM bandwidth, FLOPs / peak FLOP rate). Peaks come from
``PEAKS`` (NVIDIA datasheet numbers, dense, no sparsity) by device name, else the bandwidth is
derived from ``torch.cuda.get_device_properties`` and the FLOP floor is left out. fp32 kernels
use exact fp32 products (no tensor cores), so their FLOP peak is the CUDA-core fp32 rate.
Times come from ``triton.testing.do_bench`` (CUDA events, L2 flushed between runs) and include
the Python launch overhead of each call, which dominates at B = 1.

Attention is timed on the strides the model passes (``MODEL_ATTENTION_LAYOUTS``: transposed
views, not contiguous copies), and each row names the config the autotuner chose, to be read
beside the offline compile report (``python -m daefr.kernels.compile_report``).

Before timing, each kernel's output on the very inputs it is timed on is checked against a
float64 reference with the rules of ``kernels/tolerances.py`` (a fast wrong kernel is no result).

Exit status: 0 measured and checked; 1 measured but a check failed; 2 no CUDA GPU or no Triton
(one line on stderr), or bad arguments.
``--out PATH`` writes the report atomically, as JSON if PATH ends in .json, else as the text
table, with the device name, torch/triton/CUDA versions and the date.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from daefr.atomic import write_report
from daefr.kernels.tolerances import (
    ATTENTION_ERROR_FLOOR,
    CODE_HEAD_LOGIT_EPS,
    ERROR_RATIO,
    NEAREST_CODE_DIST_RTOL,
)

TOKENS = 256  # N, tokens per face
# device-name substring -> (HBM bytes/s, fp16/bf16 tensor-core FLOP/s, fp32 CUDA-core FLOP/s)
# First match wins, so the specific H100 variants come before the plain "H100" (SXM5).
PEAKS: dict[str, tuple[float, float, float]] = {
    "H100 PCIe": (2.0e12, 756e12, 51e12),
    "H100 NVL": (3.9e12, 835e12, 60e12),
    "H100": (3.35e12, 989e12, 67e12),
    "H200": (4.8e12, 989e12, 67e12),
}
# (kernel, baseline the target is measured against, speed-up the issue asks for, at B)
TARGETS: list[tuple[str, str, float, int | None]] = [
    ("nearest_code", "cdist+argmin+gather", 3.0, 8),
    ("code_head", "eager", 2.0, None),
    ("attention", "sdpa", 1.0, None),
]
FLOOR_TARGET = 0.5  # every kernel within 2x of its floor
# (heads, head dim) -> how the model lays q, k, v out, so the kernel is timed on the strides it
# gets (Triton specialises on them): the VQGAN blocks and MHCA view channels-first features
# (B, C, N) as heads, (B, H, Dh, N) transposed; the transformer splits tokens-first (B, N, C).
# tests/kernels/test_kernel_bench.py checks these against the calls the model really makes.
MODEL_ATTENTION_LAYOUTS: dict[tuple[int, int], str] = {
    (1, 512): "channels-first",
    (8, 32): "channels-first",
    (8, 64): "tokens-first",
}


@dataclass
class Row:
    kernel: str
    shape: str
    batch: int
    dtype: str
    kernel_us: float
    check_passed: bool  # the kernel's output on the timed inputs, against float64 (tests' rule)
    check_detail: str
    baselines_us: dict[str, float] = field(default_factory=dict)
    floor_us: float | None = None
    config: str = ""  # the autotuner's choice, as in reports/cpu/kernels_sm90_compile.txt

    @property
    def floor_fraction(self) -> float | None:
        return None if self.floor_us is None else self.floor_us / self.kernel_us


def device_peaks() -> tuple[str, float, float | None, float | None]:
    """(name, HBM bytes/s, half FLOP/s or None, fp32 FLOP/s or None) of GPU 0."""
    props = torch.cuda.get_device_properties(0)
    for key, (bw, half, fp32) in PEAKS.items():
        if key in props.name:
            return props.name, bw, half, fp32
    # memory_clock_rate is in kHz; HBM and GDDR transfer twice per clock
    bw = 2 * props.memory_clock_rate * 1e3 * props.memory_bus_width / 8
    return props.name, bw, None, None


def floor_us(nbytes: float, flops: float, dtype: torch.dtype, peaks: tuple) -> float | None:
    _, bw, half, fp32 = peaks
    peak = fp32 if dtype == torch.float32 else half
    if peak is None:
        return None
    return max(nbytes / bw, flops / peak) * 1e6


def time_us(fn: Callable[[], object]) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3


# -- correctness of what is timed: the rules of kernels/tolerances.py, against float64 --------


def check_nearest_code(z: torch.Tensor, codebook: torch.Tensor, idx: torch.Tensor) -> tuple[bool, str]:
    zd, cd = z.double(), codebook.double()
    dist = torch.cdist(zd, cd) ** 2
    terms = zd.pow(2).sum(1) + cd.pow(2).sum(1).max()
    excess = dist.gather(1, idx[:, None])[:, 0] - dist.min(1).values
    ok = excess <= NEAREST_CODE_DIST_RTOL[z.dtype] * terms
    detail = f"nearest code (up to near ties) for {ok.double().mean():.2%} of {ok.numel()} tokens"
    return bool(ok.all()), detail


def check_code_head(args: tuple, idx: torch.Tensor) -> tuple[bool, str]:
    from daefr.kernels.head import code_head_ref

    dtype = args[0].dtype
    _, _, logits64 = code_head_ref(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
    picked = logits64.gather(1, idx[:, None])[:, 0]
    ok = picked >= logits64.max(1).values - CODE_HEAD_LOGIT_EPS[dtype]
    return bool(ok.all()), f"top logit (up to near ties) for {ok.double().mean():.2%} of {ok.numel()} tokens"


def check_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> tuple[bool, str]:
    from daefr.kernels.attention import attention_ref

    ref = attention_ref(q.double(), k.double(), v.double())
    err = (out.double() - ref).abs().max().item()
    err_torch = (attention_ref(q, k, v).double() - ref).abs().max().item()
    ok = err <= ERROR_RATIO * err_torch + ATTENTION_ERROR_FLOOR[q.dtype]
    return ok, f"max error {err:.2e} vs plain PyTorch {err_torch:.2e} (limit {ERROR_RATIO:g}x)"


# -- the benchmarks ------------------------------------------------------------------------


def bench_nearest_code(
    batch: int, dtype: torch.dtype, peaks: tuple, compiled: bool, device: str = "cuda"
) -> Row:
    from daefr.kernels import nearest_code
    from daefr.kernels.quantize import _nearest_code_kernel, nearest_code_ref

    m, k, d = batch * TOKENS, 1024, 256
    z = torch.randn(m, d, device=device, dtype=dtype)
    codebook = torch.randn(k, d, device=device, dtype=dtype)

    def cdist_argmin_gather() -> torch.Tensor:
        return codebook[torch.cdist(z, codebook).argmin(dim=1)]

    baselines = {"cdist+argmin+gather": cdist_argmin_gather, "eager": lambda: nearest_code_ref(z, codebook)}
    if compiled:
        ref_c = torch.compile(nearest_code_ref)
        baselines["compiled"] = lambda: ref_c(z, codebook)
    s = z.element_size()
    nbytes = (2 * m * d + k * d) * s + 8 * m
    return measure(
        "nearest_code",
        f"M={m} K={k} D={d}",
        batch,
        dtype,
        lambda: nearest_code(z, codebook),
        lambda out: check_nearest_code(z, codebook, out[0]),
        baselines,
        floor_us(nbytes, 2 * m * k * d, dtype, peaks),
        _nearest_code_kernel,
    )


def bench_code_head(
    batch: int, dtype: torch.dtype, peaks: tuple, compiled: bool, device: str = "cuda"
) -> Row:
    from daefr.kernels import code_head
    from daefr.kernels.head import _code_head_kernel, code_head_ref

    m, c, k, d = batch * TOKENS, 512, 1024, 256

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device).to(dtype)

    args = (
        randn(m, c),
        1 + 0.1 * randn(c),  # LayerNorm weight and bias: random, never ones and zeros
        0.1 * randn(c),
        1e-5,
        randn(k, c) / c**0.5,
        randn(k, d),
    )

    def eager_head(*a: object) -> tuple[torch.Tensor, torch.Tensor]:
        idx, codes, _ = code_head_ref(*a)
        return idx, codes

    baselines = {"eager": lambda: eager_head(*args)}
    if compiled:
        head_c = torch.compile(eager_head)
        baselines["compiled"] = lambda: head_c(*args)
    s = args[0].element_size()
    nbytes = (m * c + k * c + 2 * m * d + 2 * c) * s + 8 * m
    return measure(
        "code_head",
        f"M={m} C={c} K={k} D={d}",
        batch,
        dtype,
        lambda: code_head(*args),
        lambda out: check_code_head(args, out[0]),
        baselines,
        floor_us(nbytes, 2 * m * k * c, dtype, peaks),
        _code_head_kernel,
    )


def bench_attention(
    batch: int,
    heads: int,
    head_dim: int,
    dtype: torch.dtype,
    peaks: tuple,
    compiled: bool,
    device: str = "cuda",
) -> Row:
    from daefr.kernels import fused_attention
    from daefr.kernels.attention import _attention_kernel, attention_ref

    layout = MODEL_ATTENTION_LAYOUTS.get((heads, head_dim), "contiguous")
    q, k, v = (attention_input(batch, heads, head_dim, layout, dtype, device) for _ in range(3))
    baselines = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "eager": lambda: attention_ref(q, k, v),
    }
    if compiled:
        ref_c = torch.compile(attention_ref)
        baselines["compiled"] = lambda: ref_c(q, k, v)
    elems = batch * heads * TOKENS * head_dim
    nbytes = 4 * elems * q.element_size()
    flops = 4 * elems * TOKENS
    return measure(
        "attention",
        f"{heads}x{head_dim} N={TOKENS}",
        batch,
        dtype,
        lambda: fused_attention(q, k, v),
        lambda out: check_attention(q, k, v, out),
        baselines,
        floor_us(nbytes, flops, dtype, peaks),
        _attention_kernel,
    )


def attention_input(
    batch: int, heads: int, head_dim: int, layout: str, dtype: torch.dtype, device: str
) -> torch.Tensor:
    """A random (B, H, N, Dh) tensor with the strides of ``layout`` (MODEL_ATTENTION_LAYOUTS)."""
    channels = heads * head_dim
    if layout == "channels-first":
        features = torch.randn(batch, channels, TOKENS, device=device, dtype=dtype)
        return features.view(batch, heads, head_dim, TOKENS).transpose(2, 3)
    if layout == "tokens-first":
        tokens = torch.randn(batch, TOKENS, channels, device=device, dtype=dtype)
        return tokens.view(batch, TOKENS, heads, head_dim).transpose(1, 2)
    if layout == "contiguous":
        return torch.randn(batch, heads, TOKENS, head_dim, device=device, dtype=dtype)
    raise ValueError(f"unknown attention layout {layout!r}")


def measure(
    kernel: str,
    shape: str,
    batch: int,
    dtype: torch.dtype,
    fn: Callable[[], object],
    check: Callable[[object], tuple[bool, str]],
    baselines: dict[str, Callable[[], object]],
    floor: float | None,
    autotuner: object,
) -> Row:
    """Check the kernel's output on these inputs first, then time it and each baseline; note
    the config ``autotuner`` chose for these inputs."""
    from daefr.kernels._tiles import describe_config

    passed, detail = check(fn())
    dtype_name = str(dtype).removeprefix("torch.")
    row = Row(kernel, shape, batch, dtype_name, time_us(fn), passed, detail, floor_us=floor)
    row.config = describe_config(autotuner.best_config)
    for name, base in baselines.items():
        row.baselines_us[name] = time_us(base)
    return row


def format_rows(rows: list[Row]) -> list[str]:
    lines = []
    for r in rows:
        cols = [f"{r.kernel:<13}{r.shape:<24}B={r.batch:<3}{r.dtype:<9}kernel {r.kernel_us:8.1f} us"]
        for name, t in r.baselines_us.items():
            cols.append(f"{name} {t:8.1f} us ({t / r.kernel_us:5.2f}x)")
        frac = r.floor_fraction
        cols.append("floor n/a" if frac is None else f"floor {r.floor_us:6.1f} us ({frac:4.0%} reached)")
        cols.append("check ok" if r.check_passed else f"CHECK FAILED: {r.check_detail}")
        cols.append(f"config {r.config}")
        lines.append(" | ".join(cols))
    return lines


def check_targets(rows: list[Row]) -> list[str]:
    lines = []
    for kernel, baseline, ratio, at_batch in TARGETS:
        for r in rows:
            if r.kernel != kernel or (at_batch is not None and r.batch != at_batch):
                continue
            got = r.baselines_us[baseline] / r.kernel_us
            verdict = "met" if got >= ratio else "MISSED"
            lines.append(
                f"target {kernel} {r.shape} B={r.batch} {r.dtype}: >= {ratio:g}x {baseline}, "
                f"got {got:.2f}x: {verdict}"
            )
    for r in rows:
        frac = r.floor_fraction
        if frac is not None and frac < FLOOR_TARGET:
            lines.append(
                f"target within 2x of floor: {r.kernel} {r.shape} B={r.batch} {r.dtype} at {frac:.0%}: MISSED"
            )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m daefr.kernels.bench",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batches", default="1,8,32", help="faces per batch, comma-separated")
    parser.add_argument("--dtypes", default="float16,float32", help="float16, bfloat16, float32")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--out", default=None, help="also write the report here (.json: JSON, else text)")
    args = parser.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
        args.dtypes = [getattr(torch, name) for name in args.dtypes.split(",")]
    except (ValueError, AttributeError) as err:
        parser.error(f"bad --batches/--dtypes: {err}")
    if any(b < 1 for b in args.batches) or any(
        d not in (torch.float16, torch.bfloat16, torch.float32) for d in args.dtypes
    ):
        parser.error("batches must be >= 1 and dtypes among float16, bfloat16, float32")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "daefr.kernels.bench: no CUDA GPU (torch.cuda.is_available() is False); nothing measured",
            file=sys.stderr,
        )
        return 2
    try:
        import triton
    except ImportError:
        print("daefr.kernels.bench: Triton is not installed: pip install daefr[triton]", file=sys.stderr)
        return 2
    peaks = device_peaks()
    compiled = not args.no_compile
    rows: list[Row] = []
    for dtype in args.dtypes:
        for batch in args.batches:
            rows.append(bench_nearest_code(batch, dtype, peaks, compiled))
            rows.append(bench_code_head(batch, dtype, peaks, compiled))
            for heads, head_dim in ((8, 32), (8, 64), (1, 512)):
                rows.append(bench_attention(batch, heads, head_dim, dtype, peaks, compiled))
    name, bw, half, fp32 = peaks
    meta = {
        "device": name,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "peak_hbm_bytes_per_s": bw,
        "peak_half_flops": half,
        "peak_fp32_flops": fp32,
    }
    header = [f"{k}: {v}" for k, v in meta.items()]
    text = "\n".join([*header, "", *format_rows(rows), "", *check_targets(rows)]) + "\n"
    print(text, end="")
    if args.out:
        payload = {
            "meta": meta,
            "rows": [asdict(r) | {"floor_fraction": r.floor_fraction} for r in rows],
            "targets": check_targets(rows),
        }
        write_report(args.out, text, payload)
    failed = [r for r in rows if not r.check_passed]
    for r in failed:
        print(f"check failed: {r.kernel} {r.shape} B={r.batch} {r.dtype}: {r.check_detail}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
