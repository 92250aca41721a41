"""What a Ray actor does: hold one restorer (and a face detector) and restore the files it is
given, with the very functions the single-process commands use, so outputs are the same.

``WorkerSpec`` is everything an actor needs to build its restorer (the ``PrecisionPlan``, where
the network comes from, the weights); it is small and picklable, and every actor of a run gets
the same one. ``RestoreWorker`` is a plain class: ``ActorPool`` makes it a Ray actor, and
``local_worker`` runs it in this process (``daefr-video`` with several videos, no ``--ray``).

Fault injection, for the tests of retries (inert unless set; forwarded to actors on a cluster):
``DAEFR_RAY_FAULT_ONCE=PATH``: the first job on any actor creates PATH and kills its worker;
``DAEFR_RAY_FAULT_NAME=TEXT``: every job whose name contains TEXT kills its worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from daefr.checkpoint import CheckpointError
from daefr.cli.common import UsageError, check_device, check_impl, random_model
from daefr.model import DAEFR
from daefr.runtime.auto import Sources
from daefr.runtime.backends import BackendError, BackendUnavailable, PlanError, Restorer
from daefr.runtime.plan import PrecisionPlan
from daefr.runtime.restorers import open_restorer

log = logging.getLogger(__name__)

# Errors of building a restorer that are the user's to fix (exit 2), as the CLIs treat them.
USAGE_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError, UsageError, PlanError, BackendUnavailable, FileNotFoundError,
)  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    """The weights flags: ``ckpt`` (plain DAEFR or IQPFR-conditioned), else seeded random weights."""

    ckpt: str | None
    seed: int
    preset: str
    impl: str
    device: str
    quality: float | None = None

    def build(self) -> DAEFR:
        """The model, as daefr-restore builds it (``--quality`` only for a conditioned checkpoint)."""
        from daefr.checkpoint import read_state_dict
        from daefr.quality.checkpoint import model_from_state

        device = check_device(self.device)
        check_impl(self.impl, device)
        if self.ckpt:
            state = read_state_dict(self.ckpt)
            model = model_from_state(state, self.preset, self.impl, device, source=self.ckpt)
        else:
            model = random_model(self.preset, self.seed, impl=self.impl).to(device)
        if self.quality is not None:
            if model.config.quality is None:
                raise UsageError(
                    f"--quality: {self.ckpt or '--random-weights'} is a plain DAEFR model, which has no "
                    "quality condition; drop --quality or pass an IQPFR checkpoint"
                )
            model.iqp.run_quality = self.quality
        return model

    def label(self) -> str:
        return f"RANDOM (seed {self.seed}): not a restoration" if not self.ckpt else str(self.ckpt)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one actor needs. model None: no weights (``--onnx`` / ``--engine-dir`` only)."""

    plan: PrecisionPlan
    sources: Sources
    model: ModelSpec | None
    det_threshold: float = 0.9
    det_max_side: int = 1280


@dataclass(frozen=True)
class WorkerInfo:
    """An actor's answer to ``ready()``: its resolved plan, or the error that stopped it."""

    plan: str = ""
    resolution: int = 0
    host: str = ""
    pid: int = 0
    error: str | None = None
    usage_error: bool = False


def open_worker_restorer(spec: WorkerSpec, workdir: Path) -> tuple[Restorer, PrecisionPlan]:
    """(restorer, resolved plan): an IQPFR-conditioned model runs on torch, as in daefr-restore."""
    model = spec.model.build() if spec.model is not None else None
    plan = spec.plan
    if model is not None and model.config.quality is not None:
        if plan.backend not in ("auto", "torch"):
            raise UsageError(
                f"--backend {plan.backend}: an IQPFR-conditioned checkpoint runs on the torch backend only"
            )
        plan = replace(plan, backend="torch")
    return open_restorer(plan, spec.sources, lambda: model, workdir)


def _inject_fault(keys: list[str]) -> None:
    name = os.environ.get("DAEFR_RAY_FAULT_NAME")
    if name and any(name in k for k in keys):
        os._exit(70)
    marker = os.environ.get("DAEFR_RAY_FAULT_ONCE")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
        os._exit(70)


class _Throttled:
    """A progress callback that forwards counts to ``send`` at most every ``every_s`` seconds."""

    def __init__(self, send: Callable[[int], None], every_s: float = 0.3) -> None:
        self.send, self.every_s, self.pending, self.last = send, every_s, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.pending += n
        if time.monotonic() - self.last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.send(self.pending)
        self.pending, self.last = 0, time.monotonic()


@contextlib.contextmanager
def _ticker(progress: Any, key: str) -> Iterator[Callable[[int], None] | None]:
    """A progress callback for the stages: to a ``ProgressCounter`` actor under ``key`` (the job
    and its attempt, so a dead worker's frames are not counted twice), or ``progress`` itself."""
    if progress is None:
        yield None
        return
    send = (lambda n: progress.add.remote(key, n)) if hasattr(progress, "add") else progress
    tick = _Throttled(send)
    try:
        yield tick
    finally:
        tick.flush()


class RestoreWorker:
    """One restorer and its jobs. The constructor never raises: a restorer that cannot be built
    is reported by ``ready()`` (so the driver exits 2 with the reason, not a dead actor)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.detector = None
        self._workdir = tempfile.TemporaryDirectory(prefix="daefr-ray-")
        self.restorer: Restorer | None = None
        try:
            self.restorer, plan = open_worker_restorer(spec, Path(self._workdir.name))
            self.info = WorkerInfo(plan.label(), self.restorer.resolution, os.uname().nodename, os.getpid())
        except USAGE_ERRORS as err:
            self.info = WorkerInfo(error=str(err), usage_error=True)
        except (BackendError, OSError, RuntimeError) as err:
            self.info = WorkerInfo(error=f"{type(err).__name__}: {err}")

    def ready(self) -> WorkerInfo:
        return self.info

    def _face_detector(self):  # noqa: ANN202 (a FaceDetector)
        if self.detector is None:
            from daefr.runtime.face.detector import RetinaFaceDetector

            self.detector = RetinaFaceDetector(
                score_threshold=self.spec.det_threshold, max_side=self.spec.det_max_side
            )
        return self.detector

    def images(self, pairs: list[tuple[Path, Path]], batch_size: int, skip: list[Path] = ()) -> list[str]:
        """Aligned faces (input -> output) in one batch as daefr-restore makes it; the inputs in
        ``skip`` (complete already) are restored only as batch-mates, into scratch files. One
        message per file that could not be read."""
        from daefr.runtime.image_files import restore_face_files  # daefr-restore's code: the same bytes

        _inject_fault([str(p) for p, _ in pairs if p not in skip])
        with tempfile.TemporaryDirectory(prefix="daefr-ray-skip-") as scratch:
            outputs = {
                src: Path(scratch) / f"{i}.png" if src in skip else dst for i, (src, dst) in enumerate(pairs)
            }
            return restore_face_files(self.restorer, outputs, batch_size)

    def photos(self, pairs: list[tuple[Path, Path]], batch_size: int, skip: list[Path] = ()) -> list[str]:
        """Whole photos: every face detected, restored and pasted back (daefr-restore --unaligned)."""
        from daefr.runtime.image_files import restore_photo_files

        _inject_fault([str(p) for p, _ in pairs])
        return restore_photo_files(self.restorer, dict(pairs), batch_size, self.spec.det_max_side)

    def video(
        self, src: Path, dst: Path, options: Any, progress: Any = None, key: str = "", attempt: int = 0
    ) -> dict:
        """One video (``daefr.runtime.video.restore_video``); returns its stats as a dict."""
        from daefr.runtime.video import restore_video

        _inject_fault([str(src)])
        with _ticker(progress, f"{key}#{attempt}") as tick:
            stats = restore_video(src, dst, self.restorer, self._face_detector(), options, progress=tick)
        return stats.to_dict()

    def detect_segment(self, src: Path, segment: Any, options: Any) -> Any:
        """The raw faces of one segment (``daefr.runtime.segments.detect_segment``)."""
        from daefr.runtime.segments import detect_segment

        _inject_fault([f"{src}#{segment.index}"])
        return detect_segment(src, segment, self._face_detector(), options)

    def restore_segment(
        self, src: Path, segment: Any, faces: Any, part: Path, options: Any, progress: Any = None,
        key: str = "", attempt: int = 0,
    ) -> Any:  # fmt: skip
        """One segment restored into its part file (``daefr.runtime.segments.restore_segment``)."""
        from daefr.runtime.segments import restore_segment

        _inject_fault([f"{src}#{segment.index}"])
        with _ticker(progress, f"{key}#{attempt}") as tick:
            return restore_segment(src, segment, faces, self.restorer, part, options, progress=tick)

    def close(self) -> None:
        if self.restorer is not None:
            self.restorer.close()
        self._workdir.cleanup()


class ProgressCounter:
    """A tiny actor the workers tell their progress (``add``); the driver reads ``snapshot``."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)
