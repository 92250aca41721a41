"""``daefr-export``: ONNX graphs (FP32, ``--fp16``, ``--plugins``), ORT parity, TensorRT engines.

Exit codes: 0 done (also when engines could not be built here: one line says why);
1 failed export, parity or engine build, or ``--require-trt`` without TensorRT/GPU;
2 usage error (bad flag, unknown graph, unreadable or mismatched checkpoint).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from daefr.export.triton_repo import TritonRepoError, add_triton_repo_flags, options_from_args, write_repo

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "daefr-export"
PARITY_BATCHES = (1, 3)

log = logging.getLogger("daefr.export")


class UsageError(Exception):
    """Bad flags or inputs: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print the usage block too
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    from daefr.config import PRESETS
    from daefr.export.graphs import GRAPHS
    from daefr.export.onnx_export import DEFAULT_OPSET

    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--ckpt", type=Path, help="official DAEFR .ckpt, a state_dict .pth or .safetensors")
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded RANDOM weights: a demo/smoke test, restores nothing",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    p.add_argument("--preset", default="official", choices=sorted(PRESETS), help="model size")
    p.add_argument("--out-dir", type=Path, default=Path("out/export"), help="where the artifacts go")
    p.add_argument("--only", default=",".join(GRAPHS), help="comma-separated graphs to export")
    p.add_argument(
        "--precision", choices=("fp32", "fp16", "bf16"), default=None,
        help="engines to build: fp32, or fp16 (also writes the FP16 ONNX with FP32 islands); bf16 is refused",
    )  # fmt: skip
    p.add_argument("--fp16", action="store_true", help="alias of --precision fp16")
    p.add_argument(
        "--plugins", action="store_true", help="also write ONNX with our Triton kernels as TensorRT plugins"
    )
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--dynamo", action="store_true", help="use the dynamo exporter instead of TorchScript")
    p.add_argument("--max-batch", type=int, default=8, help="largest batch of the TensorRT profile")
    p.add_argument(
        "--opt-batch", type=int, default=None, help="batch TensorRT tunes for (default: --max-batch)"
    )
    p.add_argument("--require-trt", action="store_true", help="exit 1 when engines cannot be built here")
    p.add_argument("--no-parity", action="store_true", help="skip the ONNX Runtime parity check")
    add_triton_repo_flags(p)
    p.add_argument("-v", "--verbose", action="store_true", help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    return p


def _validate(args: argparse.Namespace) -> list[str]:
    from daefr.export.graphs import GRAPHS
    from daefr.export.onnx_export import check_opset

    if args.fp16 and args.precision not in (None, "fp16"):
        raise UsageError(f"--fp16 and --precision {args.precision} disagree; pass one of them")
    if args.precision == "bf16":
        raise UsageError(
            "--precision bf16: no backend runs a bf16 export (TensorRT and ONNX Runtime take fp32 or fp16 graphs; "
            "OpenVINO's bf16 is an inference precision of the fp32 ONNX); use fp32 or fp16"
        )
    args.fp16 = args.fp16 or args.precision == "fp16"
    graphs = [g.strip() for g in args.only.split(",") if g.strip()]
    unknown = [g for g in graphs if g not in GRAPHS]
    if not graphs or unknown:
        raise UsageError(f"--only {args.only!r}: unknown graph(s) {unknown}; choose from {','.join(GRAPHS)}")
    if args.max_batch < 1:
        raise UsageError(f"--max-batch {args.max_batch}: must be >= 1")
    args.opt_batch = args.max_batch if args.opt_batch is None else args.opt_batch
    if not 1 <= args.opt_batch <= args.max_batch:
        raise UsageError(f"--opt-batch {args.opt_batch}: must be within 1..--max-batch ({args.max_batch})")
    try:
        check_opset(args.opset, args.dynamo)
    except ValueError as err:
        raise UsageError(f"--opset: {err}") from None
    if args.plugins and args.dynamo:
        raise UsageError("--plugins needs the TorchScript exporter; drop --dynamo")
    if args.ckpt is not None and not args.ckpt.is_file():
        what = "not a regular file" if args.ckpt.exists() else "no such file"
        raise UsageError(f"--ckpt {args.ckpt}: {what}")
    _check_out_dir(args)
    try:
        args.triton_options = options_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return list(dict.fromkeys(graphs))


def _check_out_dir(args: argparse.Namespace) -> None:
    """--out-dir can be written, and none of the files written there is the checkpoint."""
    from daefr.export.manifest import MANIFEST_NAME
    from daefr.outputs import OutputError, check_output_dir, check_output_file

    inputs = [args.ckpt] if args.ckpt is not None else []
    try:
        check_output_dir(args.out_dir)
        if args.ckpt is not None and args.ckpt.resolve().parent == args.out_dir.resolve():
            if args.ckpt.suffix in (".onnx", ".engine", ".json", ".cache"):
                raise OutputError(f"--ckpt {args.ckpt}: lies in --out-dir with a name the export writes")
        check_output_file(args.out_dir / MANIFEST_NAME, inputs, what="manifest")
    except OutputError as err:
        raise UsageError(str(err)) from None


def _load_model(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from daefr.checkpoint import CheckpointError, load_model
    from daefr.cli.common import random_model
    from daefr.export.manifest import sha256_file

    if args.ckpt is not None:
        try:
            model = load_model(args.ckpt, args.preset)
        except CheckpointError as err:
            hint = (
                f" (is --preset {args.preset} the checkpoint's size?)" if "does not match" in str(err) else ""
            )
            raise UsageError(f"--ckpt: {err}{hint}") from None
        return model, {"source": "checkpoint", "file": args.ckpt.name, "sha256": sha256_file(args.ckpt)}
    log.warning(
        "RANDOM weights (seed %d): the artifacts restore nothing; pass --ckpt for real engines", args.seed
    )
    model = random_model(args.preset, args.seed)
    return model, {
        "source": "random",
        "seed": args.seed,
        "note": "RANDOM WEIGHTS, demo only: not a trained model",
    }


def _mb(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.1f} MB"


def run(args: argparse.Namespace, graphs: list[str]) -> int:
    from daefr.export.manifest import artifact_entry, build_manifest, invalidate_manifest, write_manifest
    from daefr.export.onnx_export import ExportError, export_graph
    from daefr.export.parity import stages_for
    from daefr.export.trt_build import trt_unavailable_reason

    model, weights = _load_model(args)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    # The old manifest goes before any file it lists is rewritten; the new one is written last,
    # so an interrupted re-export leaves no manifest at all, never one that disagrees with its files.
    invalidate_manifest(out)
    start = time.perf_counter()
    stages = None if args.no_parity else stages_for(model, PARITY_BATCHES)
    if stages is not None:
        log.info("eager reference for batches %s in %.1f s", PARITY_BATCHES, time.perf_counter() - start)
    artifacts: list[dict[str, Any]] = []
    failed: list[str] = []
    variants = [("fp32", False)] + ([("fp16", True)] if args.fp16 else [])
    try:
        for graph in graphs:
            for precision, fp16 in variants:
                path = out / (f"{graph}.onnx" if not fp16 else f"{graph}.fp16.onnx")
                t = time.perf_counter()
                export_graph(model, graph, path, opset=args.opset, dynamo=args.dynamo, fp16=fp16)
                log.info("exported %s in %.1f s (%s)", path.name, time.perf_counter() - t, _mb(path))
                parity = _parity(model, graph, path, stages, precision, failed)
                artifacts.append(
                    artifact_entry(model, graph, path, precision=precision, variant="standard", parity=parity)
                )
            if args.plugins:
                artifacts.append(_export_plugins(model, graph, out, args))
    except ExportError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_FAILED

    reason = trt_unavailable_reason()
    engines: list[dict[str, Any]] = []
    if reason is None:
        try:
            engines = _build_engines(artifacts, out, args, stages)
        except RuntimeError as err:
            print(f"{PROG}: engine build failed: {err}", file=sys.stderr)
            failed.append("engines")
    manifest = build_manifest(
        model,
        preset=args.preset,
        weights=weights,
        opset=args.opset,
        exporter="dynamo" if args.dynamo else "torchscript",
        artifacts=artifacts,
        engines=engines,
        engines_not_built=reason,
    )
    # The plan the engines were built for: what `--backend trt --precision P [--plugins]` selects.
    manifest["plan"] = {"precision": "fp16" if args.fp16 else "fp32", "plugins": args.plugins}
    path = write_manifest(out, manifest)
    log.info("wrote %s; %d ONNX files in %.1f s", path, len(artifacts), time.perf_counter() - start)
    if args.triton_options is not None and not failed:
        try:
            write_repo(out, args.triton_repo, args.triton_options)
        except TritonRepoError as err:
            print(f"{PROG}: {err}", file=sys.stderr)
            failed.append("--triton-repo")
    if failed:
        print(f"{PROG}: parity or build FAILED for {', '.join(failed)} (details in {path})", file=sys.stderr)
        return EXIT_FAILED
    if reason is not None:
        print(f"{PROG}: TensorRT engines not built: {reason}; ONNX and parity results are in {out}")
        return EXIT_FAILED if args.require_trt else EXIT_OK
    return EXIT_OK


def _parity(
    model: Any, graph: str, path: Path, stages: Any, precision: str, failed: list[str]
) -> dict | None:
    from daefr.export.parity import check_parity

    if stages is None:
        return None
    result = check_parity(model, graph, path, stages, precision)
    (log.info if result.passed else log.error)("parity %s (%.1f s)", result.summary(), result.seconds)
    if not result.passed:
        failed.append(f"{graph} ({precision})")
    return result.to_json()


def _export_plugins(model: Any, graph: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from daefr.export.manifest import artifact_entry
    from daefr.export.plugins import export_plugin_graph

    precision = "fp16" if args.fp16 else "fp32"
    path = out / f"{graph}.plugins.{precision}.onnx"
    t = time.perf_counter()
    export_plugin_graph(model, graph, path, opset=args.opset, fp16=args.fp16)
    log.info(
        "exported %s in %.1f s (%s; ORT cannot run plugin nodes)",
        path.name,
        time.perf_counter() - t,
        _mb(path),
    )
    return artifact_entry(model, graph, path, precision=precision, variant="plugins", parity=None)


def _build_engines(
    artifacts: list[dict[str, Any]], out: Path, args: argparse.Namespace, stages: Any
) -> list[dict[str, Any]]:
    """One engine per graph from its FP16 (else FP32) ONNX, the plugin variant with --plugins;
    each compared with ONNX Runtime and eager (Polygraphy) on the batch-1 parity input."""
    import tensorrt as trt

    from daefr.export.compare import compare_backends
    from daefr.export.graphs import GRAPHS
    from daefr.export.parity import graph_arrays
    from daefr.export.trt_build import EngineSpec, build_engine, gpu_identity, timing_cache_path

    want_precision = "fp16" if args.fp16 else "fp32"
    want_variant = "plugins" if args.plugins else "standard"
    cache = timing_cache_path(out)
    engines = []
    for a in artifacts:
        if a["precision"] != want_precision or a["variant"] != want_variant:
            continue
        spec = EngineSpec(a["graph"], a["sha256"], 1, args.opt_batch, args.max_batch, args.fp16, args.plugins)
        result = build_engine(out / a["file"], spec, out, cache)
        log.info(
            "engine %s in %.1f s (%s%s)",
            result.path.name,
            result.seconds,
            _mb(result.path),
            ", cached" if result.cached else "",
        )
        entry = result.manifest_entry(spec, trt.__version__, gpu_identity())
        if stages is not None:
            graph = GRAPHS[a["graph"]]
            stage = stages[min(stages)]
            feed, eager = graph_arrays(stage, graph.inputs), graph_arrays(stage, graph.outputs)
            onnx_path = out / a["file"] if a["variant"] == "standard" else None  # ORT cannot run plugin nodes
            entry["comparison"] = compare_backends(feed, eager, onnx_path=onnx_path, engine_path=result.path)
        engines.append(entry)
    return engines


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
        logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", force=True)
        # The package logger too: another CLI run in this process may have left it at INFO.
        logging.getLogger("daefr").setLevel(level)
        graphs = _validate(args)
        # Tracing runs the daefr:: ops once on the CPU model: their CPU implementations (the
        # PyTorch references, daefr.kernels) serve it without Triton's interpreter.
        return run(args, graphs)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:  # disk full, permissions: the build failed, nothing half-written
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
