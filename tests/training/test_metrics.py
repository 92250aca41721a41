"""Loss logging: JSONL always, TensorBoard events when the package is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from daefr.training.metrics import MetricsLogger, read_log


def test_jsonl_log_appends_and_the_last_record_per_step_wins(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path, "codebook", tensorboard=False) as metrics:
        metrics.log(1, {"loss": 2.0})
        metrics.log(2, {"loss": 1.5})
    with MetricsLogger(tmp_path, "codebook", tensorboard=False) as metrics:  # a resumed run
        metrics.log(2, {"loss": 1.25})
        metrics.log(3, {"loss": 1.0})
    records = read_log(tmp_path / "log.jsonl")
    assert [(r["step"], r["loss"]) for r in records] == [(1, 2.0), (2, 1.25), (3, 1.0)]
    assert all(r["stage"] == "codebook" and r["time"] >= 0 for r in records)


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    with MetricsLogger(tmp_path / "rank1", "fusion", enabled=False) as metrics:
        metrics.log(1, {"loss": 1.0})
    assert not (tmp_path / "rank1").exists()


def test_tensorboard_events_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="TensorBoard logging needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path, "fusion") as metrics:
        assert metrics.uses_tensorboard
        metrics.log(1, {"loss": 3.0, "ce": 2.0})
        metrics.log(2, {"loss": 2.5, "ce": 1.5})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("fusion/loss")] == [(1, 3.0), (2, 2.5)]
