"""Atomic file writes: write to a temporary file beside the target, then rename.

A crash or an exception never leaves a half-written output under the final name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path


class Terminated(SystemExit):
    """SIGTERM/SIGHUP arrived while an atomic write was open: unwinds like Ctrl-C does (every
    ``finally`` runs, temporary files are removed) and exits with 128 + the signal number."""


_TERMINATING_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))
_open_writes = 0
_saved_handlers: dict[int, object] = {}


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(128 + signum)


_lock = threading.Lock()


def _enter_write() -> None:
    """The first open write turns SIGTERM/SIGHUP into ``Terminated`` (only where the default
    would kill the process without cleanup: handlers can be set from the main thread only)."""
    global _open_writes
    with _lock:
        _open_writes += 1
        if threading.current_thread() is not threading.main_thread() or _saved_handlers:
            return
        for sig in _TERMINATING_SIGNALS:
            if signal.getsignal(sig) is signal.SIG_DFL:
                _saved_handlers[sig] = signal.signal(sig, _raise_terminated)


def _leave_write() -> None:
    global _open_writes
    with _lock:
        _open_writes -= 1
        if _open_writes == 0 and threading.current_thread() is threading.main_thread():
            while _saved_handlers:
                sig, handler = _saved_handlers.popitem()
                signal.signal(sig, handler)


@contextlib.contextmanager
def terminable() -> Iterator[None]:
    """Within: SIGTERM/SIGHUP unwind as ``Terminated`` (every ``finally`` runs), as inside
    ``atomic_path``; for a run that leaves temporary files before its atomic write opens."""
    _enter_write()
    try:
        yield
    finally:
        _leave_write()


def _current_umask() -> int:
    # /proc first: os.umask can only be read by setting it, a race with threads creating files
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a newly created file gets here (0o666 under the umask)."""
    return 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``path`` on success.

    The temporary name keeps the target's suffix so libraries that pick a format from the
    extension (PIL, PyAV, ONNX) still do. On failure, Ctrl-C, SIGTERM or SIGHUP the
    temporary file is removed. The result has the mode the umask gives new files (whatever
    mode the writing library chose for the temporary file).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _enter_write()
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent
        )
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            if tmp.exists():  # a library may have replaced the file (and its mode) by its own
                tmp.chmod(file_mode())
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        _leave_write()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_report(path: str | os.PathLike[str], text: str, payload: dict) -> None:
    """An ``--out PATH`` report, atomically: ``payload`` as JSON when PATH ends in .json,
    else ``text`` (the table that was printed)."""
    if str(path).endswith(".json"):
        atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    else:
        atomic_write_text(path, text)
