"""Client side of ``daefr-serve`` with ``tritonclient`` (HTTP and gRPC; numpy 2 is fine here).

One ``tritonclient.http`` client must not be shared between threads (it is gevent-based):
make one ``Client`` per thread.
"""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from daefr.runtime.serve.model import (
    FRAME_INPUT,
    FRAME_MODEL_NAME,
    FRAME_OUTPUT,
    INPUT_NAME,
    MODEL_NAME,
    OUTPUT_NAMES,
)

PROTOCOLS = ("http", "grpc")


class ClientError(RuntimeError):
    """tritonclient is missing, or the server answered an error (its message is kept)."""


def _modules(protocol: str) -> Any:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r}: choose one of {PROTOCOLS}")
    try:
        if protocol == "http":
            import tritonclient.http as module
        else:
            import tritonclient.grpc as module
        from tritonclient.utils import InferenceServerException
    except ImportError as err:
        raise ClientError(f"tritonclient is not installed ({err}); pip install 'daefr[client]'") from err
    return module, InferenceServerException


class Client:
    """``restore(lq) -> (restored, code_idx)`` against model ``daefr`` at ``url`` (host:port)."""

    def __init__(self, url: str, protocol: str = "http", timeout_s: float = 60.0) -> None:
        self._module, self._error = _modules(protocol)
        self.protocol = protocol
        if protocol == "http":
            self._client = self._module.InferenceServerClient(
                url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            self._client = self._module.InferenceServerClient(url)
        self._timeout_s = timeout_s

    def restore(self, lq: np.ndarray, model: str = MODEL_NAME) -> tuple[np.ndarray, np.ndarray]:
        """lq (B, 3, R, R) float32 in [-1, 1] -> restored (B, 3, R, R) float32, code_idx (B, N) int64."""
        lq = np.ascontiguousarray(lq)
        inp = self._module.InferInput(INPUT_NAME, list(lq.shape), _triton_dtype(lq.dtype))
        inp.set_data_from_numpy(lq)
        outputs = [self._module.InferRequestedOutput(name) for name in OUTPUT_NAMES]
        kwargs = {} if self.protocol == "http" else {"client_timeout": self._timeout_s}
        try:
            result = self._client.infer(model, [inp], outputs=outputs, **kwargs)
        except self._error as err:
            raise ClientError(f"{model}: {err.message()}") from err
        restored, code_idx = (result.as_numpy(name) for name in OUTPUT_NAMES)
        if restored is None or code_idx is None:
            raise ClientError(f"{model}: the response has no {OUTPUT_NAMES} outputs")
        return restored, code_idx

    def restore_frame(self, frame: np.ndarray) -> np.ndarray:
        """frame (H, W, 3) uint8 RGB -> the same frame with every face restored (``daefr-serve --frames``)."""
        frame = np.ascontiguousarray(frame)
        inp = self._module.InferInput(FRAME_INPUT, list(frame.shape), _triton_dtype(frame.dtype))
        inp.set_data_from_numpy(frame)
        kwargs = {} if self.protocol == "http" else {"client_timeout": self._timeout_s}
        try:
            result = self._client.infer(FRAME_MODEL_NAME, [inp], **kwargs)
        except self._error as err:
            raise ClientError(f"{FRAME_MODEL_NAME}: {err.message()}") from err
        out = result.as_numpy(FRAME_OUTPUT)
        if out is None:
            raise ClientError(f"{FRAME_MODEL_NAME}: the response has no {FRAME_OUTPUT} output")
        return out

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _triton_dtype(dtype: np.dtype) -> str:
    from tritonclient.utils import np_to_triton_dtype

    return np_to_triton_dtype(dtype)


def is_ready(http_url: str, model: str = MODEL_NAME, timeout_s: float = 2.0) -> bool:
    """The server's own health endpoints: ``/v2/health/ready`` and ``/v2/models/<model>/ready``."""
    for path in ("/v2/health/ready", f"/v2/models/{model}/ready"):
        try:
            with urllib.request.urlopen(f"http://{http_url}{path}", timeout=timeout_s) as resp:
                if resp.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
    return True


def wait_ready(http_url: str, timeout_s: float, alive: Any = None, model: str = MODEL_NAME) -> None:
    """Poll the health endpoints until ready; TimeoutError after ``timeout_s``, RuntimeError
    as soon as ``alive()`` (optional) says the server process is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_ready(http_url, model):
            return
        if alive is not None and not alive():
            raise RuntimeError(f"the server at {http_url} exited before it was ready")
        time.sleep(0.25)
    raise TimeoutError(f"the server at {http_url} was not ready after {timeout_s:.0f} s")


_METRIC = re.compile(r'^(nv_inference_\w+)\{[^}]*model="([^"]+)"[^}]*\}\s+([0-9.eE+-]+)$')


def inference_counts(metrics_url: str, model: str = MODEL_NAME, timeout_s: float = 5.0) -> dict[str, float]:
    """Triton's Prometheus counters of ``model`` (``nv_inference_count``: faces,
    ``nv_inference_exec_count``: batches run, ``nv_inference_request_success`` ...), summed
    over versions. Faces / batches > 1 means the dynamic batcher formed batches."""
    with urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if m and m.group(2) == model:
            counts[m.group(1)] = counts.get(m.group(1), 0.0) + float(m.group(3))
    return counts
