"""Loss logging: always a JSONL file (``log.jsonl``, one line per step: step, wall time,
losses), plus TensorBoard event files under ``tensorboard/`` when the ``tensorboard``
package is installed. Only rank 0 logs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


def _summary_writer(folder: Path) -> object | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's TensorBoard support needs the tensorboard package
        return None
    return SummaryWriter(log_dir=str(folder))


class MetricsLogger:
    """``log(step, values)`` appends a JSON line (a resumed run appends after the old lines;
    a step logged twice after a crash: the later line wins) and a TensorBoard scalar each."""

    def __init__(
        self, out_dir: str | Path, stage: str, enabled: bool = True, tensorboard: bool = True
    ) -> None:
        self.stage = stage
        self.enabled = enabled
        self.path = Path(out_dir) / "log.jsonl"
        self._file = None
        self._writer = None
        self._start = time.perf_counter()
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
            self._writer = _summary_writer(Path(out_dir) / "tensorboard") if tensorboard else None
            log.info("logging to %s%s", self.path, " and TensorBoard" if self._writer else "")

    @property
    def uses_tensorboard(self) -> bool:
        return self._writer is not None

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {
            "stage": self.stage,
            "step": step,
            "time": round(time.perf_counter() - self._start, 3),
            **values,
        }
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"{self.stage}/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def read_log(path: str | Path) -> list[dict[str, float]]:
    """The records of a ``log.jsonl``, the last one per step kept."""
    by_step: dict[int, dict[str, float]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]
