"""A Triton Inference Server (PyTriton's bundled ``tritonserver``) serving one restorer.

``serve(restorer, config, stop)`` blocks until ``stop`` is set (the CLI sets it on SIGINT or
SIGTERM) or the server dies; stopping sends the server SIGINT, and Triton finishes in-flight
requests (up to ``exit_timeout_s``) before it exits.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import socket
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daefr.runtime.backends.base import Restorer
from daefr.runtime.serve.model import (
    FRAME_INPUT,
    FRAME_MODEL_NAME,
    FRAME_OUTPUT,
    INPUT_NAME,
    MODEL_NAME,
    make_frame_infer_func,
    make_infer_func,
    probe_spec,
)

log = logging.getLogger(__name__)


class ServeError(RuntimeError):
    """The server could not start or died; the message says why."""


@dataclass(frozen=True)
class ServeConfig:
    """Where the server listens and how it batches.

    max_batch_size: the most faces in one restore call (and in one request).
    queue_delay_us: how long the dynamic batcher may hold a request to grow a batch.
    """

    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int = 8
    queue_delay_us: int = 2000
    exit_timeout_s: int = 30

    def __post_init__(self) -> None:
        ports = {"http_port": self.http_port, "grpc_port": self.grpc_port, "metrics_port": self.metrics_port}
        for field, port in ports.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"ServeConfig.{field}={port}: a port is 1..65535")
        if len(set(ports.values())) != 3:
            raise ValueError(f"ServeConfig: the HTTP, gRPC and metrics ports must differ, got {ports}")
        if not 1 <= self.max_batch_size <= 1024:
            raise ValueError(f"ServeConfig.max_batch_size={self.max_batch_size}: allowed 1..1024")
        if not 0 <= self.queue_delay_us <= 10_000_000:
            raise ValueError(f"ServeConfig.queue_delay_us={self.queue_delay_us}: allowed 0..10000000 (10 s)")
        if self.exit_timeout_s < 1:
            raise ValueError(f"ServeConfig.exit_timeout_s={self.exit_timeout_s}: must be >= 1")


def libpython_first(env: dict[str, str]) -> None:
    """Put this interpreter's libpython first on ``LD_LIBRARY_PATH`` in ``env``.

    Triton's Python-backend stub links ``libpython3.X.so``; under a pyenv (or any non-system)
    build it picks the system's copy and the model fails to load with "'_thread.RLock' object
    has no attribute '_recursion_count'". The stub is a child of this process, hence ``env``.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not libdir or not (Path(libdir) / f"libpython{ver}.so").exists():
        return
    parts = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    env["LD_LIBRARY_PATH"] = ":".join([libdir, *parts])


def check_ports_free(config: ServeConfig) -> None:
    """ServeError naming the flag when a port is taken: tritonserver would only time out."""
    ports = {
        "--http-port": config.http_port,
        "--grpc-port": config.grpc_port,
        "--metrics-port": config.metrics_port,
    }
    for flag, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver does
            try:
                s.bind((config.host, port))
            except OSError as err:
                if isinstance(err, socket.gaierror) or err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    raise ServeError(f"--host {config.host}: {err.strerror}; use an address of this machine "
                                     "(127.0.0.1; 0.0.0.0 for all)") from None  # fmt: skip
                raise ServeError(
                    f"{flag} {port} on {config.host}: {err.strerror}; pick another port"
                ) from None


def require_pytriton() -> None:
    """ServeError unless PyTriton can be imported here (checked before the model is built)."""
    if importlib.util.find_spec("pytriton") is None:
        raise ServeError(
            f"PyTriton is not installed in {sys.prefix}; run daefr-serve from .venv-serve "
            "(bash scripts/setup.sh makes it) or pip install 'daefr[serve]'"
        )


def _triton_objects(config: ServeConfig):  # noqa: ANN202 (PyTriton types are imported lazily)
    require_pytriton()
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    triton_config = TritonConfig(
        http_address=config.host,
        http_port=config.http_port,
        grpc_address=config.host,
        grpc_port=config.grpc_port,
        metrics_address=config.host,
        metrics_port=config.metrics_port,
        exit_timeout_secs=config.exit_timeout_s,
        allow_gpu_metrics=False,
    )
    model_config = ModelConfig(
        max_batch_size=config.max_batch_size,
        batcher=DynamicBatcher(max_queue_delay_microseconds=config.queue_delay_us),
    )
    frame_config = ModelConfig(batching=False)  # frames differ in size: one per request
    return Triton(config=triton_config), model_config, frame_config, Tensor


def serve(
    restorer: Restorer,
    config: ServeConfig,
    stop: threading.Event,
    detector: Any = None,
) -> None:
    """Serve ``restorer`` as model ``daefr`` until ``stop`` is set; ServeError if the server dies.

    With a face ``detector``, also model ``daefr_frame``: whole uint8 frames in and out.
    """
    check_ports_free(config)
    spec = probe_spec(restorer)
    r = spec.resolution
    libpython_first(os.environ)  # read by PyTriton when it starts tritonserver (our child)
    triton, model_config, frame_config, Tensor = _triton_objects(config)
    try:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=make_infer_func(restorer, spec),
            inputs=[Tensor(name=INPUT_NAME, dtype=np.float32, shape=(3, r, r))],
            outputs=[
                Tensor(name="restored", dtype=np.float32, shape=(3, r, r)),
                Tensor(name="code_idx", dtype=np.int64, shape=(spec.tokens,)),
            ],
            config=model_config,
            strict=True,
        )
        if detector is not None:
            triton.bind(
                model_name=FRAME_MODEL_NAME,
                infer_func=make_frame_infer_func(restorer, detector),
                inputs=[Tensor(name=FRAME_INPUT, dtype=np.uint8, shape=(-1, -1, 3))],
                outputs=[Tensor(name=FRAME_OUTPUT, dtype=np.uint8, shape=(-1, -1, 3))],
                config=frame_config,
                strict=True,
            )
        try:
            triton.run()
        except Exception as err:  # PyTriton raises several types for a server that will not start
            if stop.is_set():  # SIGINT to the whole group (Ctrl-C) stopped tritonserver while starting
                log.info("stopped while starting")
                return
            raise ServeError(f"tritonserver did not start on {config.host} "
                             f"(ports {config.http_port}/{config.grpc_port}/{config.metrics_port}): {err}") from err  # fmt: skip
        log.info("serving %s (%s backend, R=%d, N=%d) on http://%s:%d grpc %s:%d metrics :%d",
                 MODEL_NAME, restorer.name, r, spec.tokens, config.host, config.http_port,
                 config.host, config.grpc_port, config.metrics_port)  # fmt: skip
        while not stop.wait(1.0):
            if not triton.is_alive():
                raise ServeError("tritonserver or its model stopped unexpectedly (see the log above)")
        log.info("stopping: finishing in-flight requests")
    finally:
        triton.stop()
