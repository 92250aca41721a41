"""The precision-plan flags every command shares, and their parsing into one ``PrecisionPlan``."""

from __future__ import annotations

import argparse
from pathlib import Path

from daefr.precision import PRECISIONS
from daefr.runtime.auto import Sources
from daefr.runtime.plan import BACKEND_CHOICES, PlanError, PrecisionPlan


def add_precision_flags(parser: argparse.ArgumentParser) -> None:
    """--precision and its alias --fp16."""
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=None,
        help="compute precision (fp32 unless given; fp16/bf16 keep norms, softmax and the code head in fp32)",
    )  # fmt: skip
    parser.add_argument("--fp16", action="store_true", help="alias of --precision fp16")


def precision_from_args(args: argparse.Namespace) -> str:
    if args.fp16 and args.precision not in (None, "fp16"):
        raise PlanError(f"--fp16 and --precision {args.precision} disagree; pass one of them")
    return "fp16" if args.fp16 else args.precision or "fp32"


def add_backend_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend", default="auto", choices=BACKEND_CHOICES,
        help="inference backend (auto: the fastest one here at --precision; the log says which and why)",
    )  # fmt: skip


def add_plan_flags(parser: argparse.ArgumentParser, with_backend: bool = True) -> None:
    """--backend, --precision/--fp16, --compile, --channels-last, --cuda-graphs, --plugins,
    --threads, and the ONNX / engine sources (--onnx, --engine-dir)."""
    if with_backend:
        add_backend_flag(parser)
    add_precision_flags(parser)
    parser.add_argument("--compile", action="store_true", help="torch backend: torch.compile (inductor)")
    parser.add_argument("--channels-last", action="store_true", help="torch backend: NHWC convolutions")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch backend: replay CUDA graphs")
    parser.add_argument("--plugins", action="store_true", help="trt backend: the engine with our Triton plugins")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="intra-op CPU threads of the torch, ort and openvino backends (0 = the library's default)",
    )  # fmt: skip
    parser.add_argument(
        "--onnx", type=Path, help="ort/openvino backends: the end-to-end daefr ONNX (else exported from the weights)"
    )
    parser.add_argument("--engine-dir", type=Path, help="trt backend: engines + manifest.json from daefr-export")


def plan_from_args(args: argparse.Namespace, backend: str | None = None) -> PrecisionPlan:
    """The one plan the flags ask for (PlanError with a one-line reason otherwise)."""
    return PrecisionPlan(
        backend=backend or args.backend,
        precision=precision_from_args(args),
        device=args.device,
        plugins=args.plugins,
        compile=args.compile,
        cuda_graphs=args.cuda_graphs,
        threads=args.threads,
        channels_last=args.channels_last,
    )


def sources_from_args(args: argparse.Namespace) -> Sources:
    for flag in ("onnx", "engine_dir"):
        path = getattr(args, flag)
        if path is not None and flag == "onnx" and not path.is_file():
            raise PlanError(f"--onnx {path}: no such file (or not a file)")
        if path is not None and flag == "engine_dir" and not path.is_dir():
            raise PlanError(f"--engine-dir {path}: no such folder")
    sources = Sources(weights=bool(args.ckpt or args.random_weights), onnx=args.onnx, engine_dir=args.engine_dir)
    if not (sources.weights or sources.onnx or sources.engine_dir):
        raise PlanError("pass the network: --ckpt (or --random-weights), --onnx or --engine-dir")
    return sources
