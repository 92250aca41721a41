"""``daefr-serve``: restore faces behind a Triton Inference Server (HTTP, gRPC, metrics).

Model ``daefr``: input ``lq_image`` float32 (B, 3, R, R) in [-1, 1]; outputs ``restored``
float32 (B, 3, R, R) and ``code_idx`` int64 (B, N). An IQPFR checkpoint is served at
``--quality S`` (one S per server). SIGINT/SIGTERM finish in-flight requests and exit 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from daefr.checkpoint import CheckpointError
from daefr.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_logging_flags,
    float_range,
    setup_logging,
)
from daefr.quality.cli import add_quality_flag, plan_with_quality
from daefr.runtime.backends import BackendError, BackendUnavailable, Restorer
from daefr.runtime.cli_video import add_restorer_flags, build_restorer, check_restorer_flags
from daefr.runtime.face.detector import DetectorUnavailable, RetinaFaceDetector
from daefr.runtime.plan import PlanError
from daefr.runtime.serve.server import ServeConfig, ServeError, check_ports_free, require_pytriton, serve

PROG = "daefr-serve"


def build_serve_restorer(args: argparse.Namespace, workdir: Path) -> Restorer:
    """The one place daefr-serve builds its restorer from the flags (the other CLIs' helper).
    An IQPFR checkpoint is served at ``--quality`` (a per-model setting: every request runs at
    that S; run one server per S)."""
    plan, model = plan_with_quality(args, args.plan)
    restorer, _ = build_restorer(args, plan, workdir, model=model)
    return restorer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_restorer_flags(parser)
    add_quality_flag(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    parser.add_argument("--http-port", type=int, default=8000, help="KServe v2 HTTP port")
    parser.add_argument("--grpc-port", type=int, default=8001, help="KServe v2 gRPC port")
    parser.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port")
    parser.add_argument("--max-batch-size", type=int, default=8, help="most faces per restore call")
    parser.add_argument(
        "--queue-delay-us", type=int, default=2000, help="dynamic batcher: most microseconds a request waits"
    )
    parser.add_argument(
        "--exit-timeout", type=int, default=30, help="seconds to finish in-flight requests on SIGINT/SIGTERM"
    )
    parser.add_argument(
        "--frames",
        action="store_true",
        help="also serve daefr_frame: whole uint8 frames, faces restored in place",
    )
    parser.add_argument(
        "--det-threshold",
        type=float_range(0, 1, open_min=True, open_max=True),
        default=0.9,
        help="daefr_frame: face detection threshold",
    )
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    check_restorer_flags(parser, args)
    try:
        args.config = ServeConfig(
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            max_batch_size=args.max_batch_size,
            queue_delay_us=args.queue_delay_us,
            exit_timeout_s=args.exit_timeout,
        )
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args)
    stop = threading.Event()
    # Handlers before the (slow) model build, so an early SIGTERM also exits cleanly.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        require_pytriton()
        check_ports_free(args.config)  # before the (slow) model build; serve() checks again
        detector = RetinaFaceDetector(score_threshold=args.det_threshold) if args.frames else None
        with tempfile.TemporaryDirectory(prefix="daefr-serve-") as workdir:
            restorer = build_serve_restorer(args, Path(workdir))
        if stop.is_set():
            return EXIT_OK
        try:
            serve(restorer, args.config, stop, detector=detector)
        finally:
            restorer.close()
    except (BackendUnavailable, CheckpointError, DetectorUnavailable, UsageError, PlanError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (BackendError, ServeError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
