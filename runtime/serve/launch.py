"""``daefr-serve`` as a child process: free loopback ports, readiness, SIGTERM, always stopped.

The server needs PyTriton (numpy<2), so it runs from ``.venv-serve`` while the caller (tests,
``daefr-bench serve``) may run anywhere tritonclient is installed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from daefr.runtime.serve.client import wait_ready

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]  # runtime/serve/launch.py in the source tree
SERVE_PYTHON_ENV = "DAEFR_SERVE_PYTHON"


def serve_python() -> Path | None:
    """An interpreter that has PyTriton: $DAEFR_SERVE_PYTHON, .venv-serve, or this one; else None."""
    if os.environ.get(SERVE_PYTHON_ENV):
        return Path(os.environ[SERVE_PYTHON_ENV])
    venv = REPO_ROOT / ".venv-serve" / "bin" / "python"
    if venv.exists():
        return venv
    if importlib.util.find_spec("pytriton") is not None:
        return Path(sys.executable)
    return None


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports free on ``host`` right now (the OS picks them)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    """``with ServerProcess(["--preset", "tiny", "--random-weights"]) as srv:`` -> srv.http_url ...

    Starts ``daefr-serve`` on 127.0.0.1 with free ports, waits for the health endpoints, and on
    exit (also on errors) sends SIGTERM, waits, and kills the process group if it hangs.
    """

    def __init__(self, args: list[str], python: Path | None = None, ready_timeout_s: float = 120.0) -> None:
        self.python = python or serve_python()
        if self.python is None:
            raise RuntimeError(
                "no interpreter with PyTriton: run bash scripts/setup.sh (it makes .venv-serve)"
            )
        self.host = "127.0.0.1"
        self.http_port, self.grpc_port, self.metrics_port = free_ports(3, self.host)
        self.args = args
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="daefr-serve-", suffix=".log", delete=False)

    http_url = property(lambda self: f"{self.host}:{self.http_port}")
    grpc_url = property(lambda self: f"{self.host}:{self.grpc_port}")
    metrics_url = property(lambda self: f"{self.host}:{self.metrics_port}")

    def start(self) -> ServerProcess:
        cmd = [str(self.python), "-m", "daefr.runtime.serve.cli", *self.args, "--host", self.host,
               "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
               "--metrics-port", str(self.metrics_port)]  # fmt: skip
        log.info("starting %s", " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_ready(self.http_url, self.ready_timeout_s, alive=lambda: self.proc.poll() is None)
        except (TimeoutError, RuntimeError) as err:
            self.stop()
            raise RuntimeError(f"{err}; server log:\n{self.log_tail()}") from err
        return self

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the exit code (a hung server is killed with its group, code -9)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._kill_group()
            return self.proc.wait(timeout=10)

    def _kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: tritonserver goes too
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        if self.proc is None:
            return
        rc = self.proc.poll()
        if rc is None:
            rc = self.terminate()
        if rc != 0:  # tritonserver is a grandchild: after an abrupt end it may linger in the group
            self._kill_group()
        self._log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        if exc_type is None:  # keep the log of a failed run
            Path(self._log.name).unlink(missing_ok=True)
