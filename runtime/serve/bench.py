"""``daefr-bench serve``: C concurrent clients x N requests against ``daefr-serve`` (HTTP and
gRPC), side by side with the same workload on the same backend called in-process, so the
serving overhead is a measured ratio.

Without ``--http-url`` the benchmark starts its own server (from .venv-serve) with the same
restorer flags and stops it afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from daefr.atomic import atomic_write_text
from daefr.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, add_logging_flags
from daefr.quality.cli import add_quality_flag
from daefr.runtime.backends import BackendError, BackendUnavailable
from daefr.runtime.cli_video import add_restorer_flags, check_restorer_flags
from daefr.runtime.serve.cli import build_serve_restorer
from daefr.runtime.video import latency_summary

log = logging.getLogger(__name__)
PROTOCOLS = ("http", "grpc")


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve",
        help="daefr-serve throughput and p50/p99 latency over HTTP/gRPC vs in-process calls",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_restorer_flags(p)
    add_quality_flag(p)  # the served model's S (IQPFR checkpoints), for the server and the in-process calls
    p.add_argument("--clients", type=int, default=4, help="concurrent client threads (C)")
    p.add_argument("--requests", type=int, default=8, help="timed requests per client (N)")
    p.add_argument("--faces", type=int, default=1, help="faces per request")
    p.add_argument("--warmup", type=int, default=1, help="untimed requests per client first")
    p.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: http, grpc")
    p.add_argument("--http-url", help="a running daefr-serve (HOST:PORT); default: start one here")
    p.add_argument("--grpc-url", help="its gRPC HOST:PORT (with --http-url)")
    p.add_argument("--metrics-url", help="its metrics HOST:PORT (with --http-url; for batch sizes)")
    p.add_argument("--max-batch-size", type=int, default=8, help="the started server's batch limit")
    p.add_argument("--queue-delay-us", type=int, default=2000, help="the started server's batcher delay")
    p.add_argument("--request-timeout", type=float, default=600, help="seconds a client waits for one answer")
    p.add_argument("--out", type=Path, help="write the results as JSON here, the table beside it (.txt)")
    add_logging_flags(p)
    return p


def check_serve_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    check_restorer_flags(parser, args)
    for name in ("clients", "requests", "faces", "max_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0 or args.queue_delay_us < 0 or args.request_timeout <= 0:
        parser.error("--warmup and --queue-delay-us must be >= 0, --request-timeout > 0")
    if args.faces > args.max_batch_size and not args.http_url:
        parser.error(f"--faces {args.faces} is over the server's --max-batch-size {args.max_batch_size}")
    args.protocol_list = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not args.protocol_list or set(args.protocol_list) - set(PROTOCOLS):
        parser.error(f"--protocols {args.protocols!r}: choose from {','.join(PROTOCOLS)}")
    if "grpc" in args.protocol_list and args.http_url and not args.grpc_url:
        parser.error("--http-url with the grpc protocol needs --grpc-url")
    return args


def server_argv(args: argparse.Namespace) -> list[str]:
    """The daefr-serve flags that build the same restorer as ``args``."""
    argv = ["--backend", args.plan.backend, "--preset", args.preset, "--seed", str(args.seed), "--impl", args.impl,
            "--device", args.device, "--threads", str(args.threads), "--max-batch-size", str(args.max_batch_size),
            "--queue-delay-us", str(args.queue_delay_us), "-q"]  # fmt: skip
    argv += ["--random-weights"] if args.random_weights else ["--ckpt", str(args.ckpt)] if args.ckpt else []
    for flag, value in (("--onnx", args.onnx), ("--engine-dir", args.engine_dir)):
        if value:
            argv += [flag, str(value)]
    argv += ["--precision", args.plan.precision]
    argv += [] if args.quality is None else ["--quality", repr(args.quality)]
    flags = {"--channels-last": args.channels_last, "--compile": args.compile, "--cuda-graphs": args.cuda_graphs,
             "--plugins": args.plugins}  # fmt: skip
    return argv + [flag for flag, on in flags.items() if on]


def run_clients(
    make_call: Callable[[], Callable[[np.ndarray], Any]], args: argparse.Namespace, r: int
) -> dict:
    """C threads, each with its own ``make_call()``, N timed calls each: throughput and latency."""
    latencies: list[float] = []
    errors: list[str] = []
    lock, start = threading.Lock(), threading.Barrier(args.clients + 1)

    def client(k: int) -> None:
        lq = np.random.default_rng(k).uniform(-1, 1, (args.faces, 3, r, r)).astype(np.float32)
        try:
            call = make_call()
            for _ in range(args.warmup):
                call(lq)
        except Exception as err:
            errors.append(str(err))
        start.wait()
        for _ in range(args.requests if not errors else 0):
            t = time.perf_counter()
            try:
                call(lq)
            except Exception as err:
                errors.append(str(err))
                return
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise BackendError(f"{len(errors)} request(s) failed, first: {errors[0]}")
    faces = len(latencies) * args.faces
    return {
        "faces": faces,
        "seconds": seconds,
        "faces_per_s": faces / seconds,
        "latency_ms": latency_summary(latencies),
    }


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from daefr.runtime.serve.client import Client, inference_counts, is_ready
    from daefr.runtime.serve.launch import ServerProcess

    if args.http_url and not is_ready(args.http_url):
        raise BackendError(f"no daefr-serve is ready at {args.http_url} (/v2/health/ready, /v2/models/daefr/ready); "
                           "start one, or drop --http-url to let the benchmark start its own")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="daefr-bench-serve-") as tmp:
        restorer = build_serve_restorer(args, Path(tmp))
    # The server runs what auto chose here, so both sides measure one backend.
    args.plan = dataclasses.replace(args.plan, backend=restorer.name)
    try:
        r = restorer.resolution
        log.info("in-process: %d clients x %d requests of %d faces", args.clients, args.requests, args.faces)
        direct = run_clients(lambda: lambda lq: restorer.restore(torch.from_numpy(lq)), args, r)
        # The same faces in the batches a server would form, from one caller: the backend's best.
        batched = argparse.Namespace(
            **{**vars(args), "clients": 1, "faces": min(args.clients * args.faces, args.max_batch_size)}
        )
        best = run_clients(lambda: lambda lq: restorer.restore(torch.from_numpy(lq)), batched, r)
    finally:
        restorer.close()
    results = [{"mode": "in-process", **direct}, {"mode": f"in-proc B{batched.faces}", **best}]
    server = None if args.http_url else ServerProcess(server_argv(args)).start()
    try:
        urls = {
            "http": args.http_url or server.http_url,
            "grpc": args.grpc_url or (server.grpc_url if server else None),
        }
        metrics = args.metrics_url or (server.metrics_url if server else None)
        for protocol in args.protocol_list:
            before = inference_counts(metrics) if metrics else {}
            log.info(
                "%s: %d clients x %d requests of %d faces", protocol, args.clients, args.requests, args.faces
            )
            row = run_clients(
                lambda p=protocol: Client(urls[p], p, timeout_s=args.request_timeout).restore, args, r
            )
            if metrics:
                after = inference_counts(metrics)
                runs = after["nv_inference_exec_count"] - before.get("nv_inference_exec_count", 0)
                done = after["nv_inference_count"] - before.get("nv_inference_count", 0)
                row["mean_batch"] = done / runs if runs else None  # warm-up requests included
            results.append({"mode": protocol, **row})
    finally:
        if server is not None:
            server.stop()
    for row in results:  # ratios to the in-process run with the same clients
        row["faces_per_s_ratio"] = row["faces_per_s"] / direct["faces_per_s"]
        row["p50_ratio"] = row["latency_ms"]["p50"] / direct["latency_ms"]["p50"]
    return results


def format_serve_table(results: list[dict[str, Any]]) -> str:
    """One row per mode; the x columns are ratios to the first row (in-process, same clients)."""
    head = f"{'mode':<14} {'faces/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10} {'x faces/s':>9} {'x p50':>6}"
    lines = [head, "-" * len(head)]
    for row in results:
        lat = row["latency_ms"]
        batch = f"{row['mean_batch']:.2f}" if row.get("mean_batch") else "-"
        ratio, p50r = f"{row['faces_per_s_ratio']:.2f}", f"{row['p50_ratio']:.2f}"
        lines.append(f"{row['mode']:<14} {row['faces_per_s']:>8.3g} {lat['p50']:>8.1f} {lat['p99']:>8.1f} "
                     f"{batch:>10} {ratio:>9} {p50r:>6}")  # fmt: skip
    return "\n".join(lines)


def run_serve_bench(args: argparse.Namespace, prog: str) -> int:
    from daefr.checkpoint import CheckpointError
    from daefr.runtime.bench import device_description, versions

    if args.threads > 0:
        torch.set_num_threads(args.threads)  # in-process side; the server gets --threads too
    try:
        results = measure(args)
    except (UsageError, CheckpointError, BackendUnavailable) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (BackendError, RuntimeError, OSError) as err:
        print(f"{prog} serve: {err}", file=sys.stderr)
        return EXIT_FAILED
    table = format_serve_table(results)
    print(table)
    if args.out:
        report = {
            "benchmark": "serve",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device_description(args.device),
            "versions": versions(),
            "backend": args.plan.backend,
            "preset": args.preset,
            "weights": "random (speed only)" if args.random_weights else str(args.ckpt),
            "threads": args.threads,
            "clients": args.clients,
            "requests_per_client": args.requests,
            "faces_per_request": args.faces,
            "server": (
                {"max_batch_size": args.max_batch_size, "queue_delay_us": args.queue_delay_us}
                if not args.http_url
                else {"url": args.http_url}
            ),  # fmt: skip
            "results": results,
        }
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        atomic_write_text(args.out.with_suffix(".txt"), table + "\n")
        log.info("results in %s and %s", args.out, args.out.with_suffix(".txt"))
    return EXIT_OK
