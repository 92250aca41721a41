"""Batch runs of daefr-restore and daefr-video on Ray (``--ray``), or several videos here.

The driver (this process) settles every output first, skips the ones an earlier run completed
(``daefr.runtime.resume``), and hands the rest to actors (``daefr.runtime.ray_jobs``) through an
``ActorPool`` with bounded retries. A file that fails for good is reported by name while the
others finish; ``BatchResult.failures`` says which, and the CLIs exit 1 on any.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from daefr import __version__
from daefr.atomic import atomic_write_text
from daefr.runtime.ray_jobs import ProgressCounter, RestoreWorker, WorkerInfo, WorkerSpec
from daefr.runtime.ray_pool import (
    MAX_ACTORS,
    MAX_RETRIES,
    ActorPool,
    ActorShape,
    Failure,
    Job,
    PoolReport,
    RayUnavailable,
    RayUsageError,
    check_address,
    import_ray,
    ray_session,
)
from daefr.runtime.ray_segments import restore_segmented
from daefr.runtime.resume import (
    Ledgers,
    file_identity,
    image_is_valid,
    image_size,
    settings_key,
    video_frames,
    video_is_valid,
)

log = logging.getLogger(__name__)

# Actors load a model (and may export an ONNX) before they answer; a cluster that cannot place
# them at all would otherwise be waited on forever.
READY_TIMEOUT_S = 600.0


class WorkerFailed(RuntimeError):
    """The actors could not build their restorer for a reason that is not a usage error."""


@dataclass(frozen=True)
class RayOptions:
    """``--ray [ADDRESS]``, ``--ray-actors``, ``--retries``. address None: a local Ray here."""

    address: str | None = None
    actors: int | None = None
    retries: int = 2
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.address is not None:
            check_address(self.address)
        if self.actors is not None and not 1 <= self.actors <= MAX_ACTORS:
            raise RayUsageError(f"--ray-actors {self.actors}: must be within 1..{MAX_ACTORS}")
        if not 0 <= self.retries <= MAX_RETRIES:
            raise RayUsageError(f"--retries {self.retries}: must be within 0..{MAX_RETRIES}")


@dataclass
class BatchResult:
    """What a batch run did. failures: (file or job, reason), one each."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    deaths: int = 0
    retried: int = 0
    actors: int = 0
    plan: str = ""
    wall_s: float = 0.0
    startup_s: float = 0.0  # until every actor was ready (Ray start or join, restorers built)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def settings_for(spec: WorkerSpec, **options: object) -> dict[str, object]:
    """What decides an output's bytes, for resume: the plan, the weights, the options."""
    model = asdict(spec.model) if spec.model is not None else None
    if model is not None:
        model["ckpt"] = file_identity(spec.model.ckpt)
    return {
        "daefr": __version__,
        "plan": spec.plan.to_dict(),
        "model": model,
        "onnx": file_identity(spec.sources.onnx),
        "engine_dir": str(spec.sources.engine_dir) if spec.sources.engine_dir else None,
        **{k: (asdict(v) if hasattr(v, "__dataclass_fields__") else v) for k, v in options.items()},
    }


# --- the pools: actors on Ray, or the one worker of this process --------------------------------


@contextlib.contextmanager
def ray_pool(opts: RayOptions, spec: WorkerSpec) -> Iterator[tuple[ActorPool, list[WorkerInfo]]]:
    """A Ray session and its actors, ready; usage errors of their restorer as RayUsageError."""
    with ray_session(opts.address, verbose=opts.verbose) as cluster:
        cuda = spec.plan.device_type == "cuda"
        shape = ActorShape.plan(cluster, opts.actors, spec.plan.threads, cuda)
        if not cuda:  # each actor computes on the CPUs it reserved
            spec = replace(spec, plan=replace(spec.plan, threads=shape.threads))
        log.info("%d actor(s), %s", shape.actors, "1 GPU each" if cuda else f"{shape.threads} thread(s) each")
        pool = ActorPool(RestoreWorker, (spec,), shape, opts.retries)
        try:
            yield pool, _check_ready(pool)
        finally:
            pool.close()


def _check_ready(pool: ActorPool) -> list[WorkerInfo]:
    ray = import_ray()
    try:
        infos = ray.get([a.ready.remote() for a in pool.actors], timeout=READY_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise RayUnavailable(
            f"--ray: the actors did not start within {READY_TIMEOUT_S:.0f} s; no node may have the "
            "CPUs/GPUs one actor asks for (try fewer --threads or --ray-actors)"
        ) from None
    except ray.exceptions.RayError as err:
        raise WorkerFailed(f"--ray: an actor failed to start ({type(err).__name__})") from None
    for info in infos:
        if info.error is not None:
            raise (RayUsageError if info.usage_error else WorkerFailed)(info.error)
    plans = sorted({i.plan for i in infos})
    if len(plans) > 1:
        log.warning(
            "actors resolved different plans (%s): outputs may differ in the last bits", "; ".join(plans)
        )
    return infos


class LocalPool:
    """``ActorPool.run`` on one ``RestoreWorker`` in this process (no Ray): a job's exception is
    its failure, and there are no worker deaths to retry."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.worker = RestoreWorker(spec)
        info = self.worker.ready()
        if info.error is not None:
            raise (RayUsageError if info.usage_error else WorkerFailed)(info.error)
        self.info = info

    def run(self, jobs: list[Job], on_done: Callable[[Job, Any], None], on_poll=None) -> PoolReport:  # noqa: ANN001
        from daefr.runtime.backends import BackendError
        from daefr.runtime.video_input import VideoError

        report = PoolReport()
        for job in jobs:
            try:
                result = getattr(self.worker, job.method)(*job.call_args())
            except (VideoError, BackendError, OSError, ValueError) as err:
                report.failures.append(Failure(job.key, str(err), 1))
            else:
                on_done(job, result)
        return report

    def close(self) -> None:
        self.worker.close()


def remove_stray_temps(targets: list[Path], since_ns: int) -> None:
    """Temporary files of ``daefr.atomic`` beside ``targets`` that a killed worker left (made
    since ``since_ns``): a stopped run leaves nothing under or beside the output names."""
    for target in targets:
        for tmp in target.parent.glob(f".{target.stem}.*.tmp{target.suffix}"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime_ns >= since_ns:
                    tmp.unlink()
                    log.debug("removed %s, left by a stopped worker", tmp)


def _result(report: PoolReport, result: BatchResult, t0: float) -> BatchResult:
    result.failures += [(f.key, f.reason) for f in report.failures]
    result.deaths, result.retried = report.deaths, report.retried
    result.wall_s = time.perf_counter() - t0
    return result


# --- photos -------------------------------------------------------------------------------------


def restore_images(
    opts: RayOptions,
    spec: WorkerSpec,
    outputs: dict[Path, Path],
    batch_size: int,
    unaligned: bool,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> BatchResult:
    """daefr-restore ``--ray``: every input -> its output; aligned faces in the single-process
    run's batches, whole photos one per job. ``on_total(n)``: how many need restoring. With
    nothing left to restore, Ray is not started."""
    t0, t0_ns = time.perf_counter(), time.time_ns()
    key = settings_key(settings_for(spec, unaligned=unaligned))
    ledgers, result = Ledgers(), BatchResult(total=len(outputs))
    todo = {src: dst for src, dst in outputs.items() if not ledgers.complete(src, dst, key, image_is_valid)}
    result.skipped = len(outputs) - len(todo)
    if result.skipped:
        log.info("resume: %d of %d outputs are complete from an earlier run", result.skipped, len(outputs))
    if on_total is not None:
        on_total(len(todo))
    if not todo:
        return _result(PoolReport(), result, t0)

    def done(job: Job, failed: list[str]) -> None:
        pairs = [(src, dst) for src, dst in job.args[0] if src in todo]
        for src, dst in pairs:
            if dst.exists() and dst.stat().st_mtime_ns >= t0_ns:
                ledgers.record(src, dst, key, image_size(dst))
                result.done += 1
        result.failures.extend((msg.split(": ", 1)[0], msg) for msg in failed)
        if progress is not None:
            progress(len(pairs))

    jobs = _image_jobs(list(outputs.items()), set(todo), batch_size, "photos" if unaligned else "images")
    try:
        with ray_pool(opts, spec) as (pool, infos):
            result.actors, result.plan = len(infos), infos[0].plan
            result.startup_s = time.perf_counter() - t0
            report = pool.run(jobs, done)
    finally:
        remove_stray_temps(list(todo.values()), t0_ns)
        ledgers.save()
    return _result(report, result, t0)


def _image_jobs(pairs: list[tuple[Path, Path]], todo: set[Path], batch_size: int, method: str) -> list[Job]:
    """Aligned faces: the single-process run's batches over *all* inputs, for the same bytes (a
    face restored in a batch of other faces may differ in the last bit); a batch with complete
    outputs from an earlier run restores them again only as batch-mates, into scratch files.
    Photos: one per job. A batch whose workers died on every attempt is tried once more file by
    file, so a file that kills workers fails alone (its batch-mates are then restored one at a
    time, which may change their last bits; the log says so)."""
    size = batch_size if method == "images" else 1

    def one_each(job: Job) -> list[Job]:
        return [Job(str(s), job.method, ([(s, d)], batch_size, [])) for s, d in job.args[0] if s in todo]

    jobs = []
    for start in range(0, len(pairs), size):
        chunk = pairs[start : start + size]
        if not any(src in todo for src, _ in chunk):
            continue
        name = ", ".join(str(s) for s, _ in chunk if s in todo)
        skip = [src for src, _ in chunk if src not in todo]
        jobs.append(Job(name, method, (chunk, batch_size, skip), split=one_each if len(chunk) > 1 else None))
    return jobs


# --- videos -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoItem:
    src: Path
    dst: Path
    stats: Path
    frames: int | None  # expected (the input's count, capped at --max-frames); None: unknown


def stats_report(stats: dict[str, object], plan: str, weights: str, attempts: int = 1) -> dict[str, object]:
    return {**stats, "plan": plan, "weights": weights, "attempts": attempts}


def restore_videos(
    opts: RayOptions | None,
    spec: WorkerSpec,
    items: list[VideoItem],
    options: Any,
    progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    segments: int | None = None,
) -> BatchResult:
    """Several videos (``opts`` None: one after the other here; else spread over actors), each
    whole or, with ``segments``, in up to that many segments (``daefr.runtime.ray_segments``).
    Each output gets its stats JSON; ``progress`` counts frames of all of them together."""
    t0, t0_ns = time.perf_counter(), time.time_ns()
    key = settings_key(settings_for(spec, video=options))  # segmenting changes no frame
    ledgers, result = Ledgers(), BatchResult(total=len(items))
    todo = [
        it for it in items if not (it.stats.is_file() and ledgers.complete(it.src, it.dst, key, video_is_valid))
    ]  # fmt: skip
    result.skipped = len(items) - len(todo)
    if result.skipped:
        log.info("resume: %d of %d videos are complete from an earlier run", result.skipped, len(items))
    if on_total is not None:
        on_total(sum(it.frames or 0 for it in todo))
    if not todo:
        return _result(PoolReport(), result, t0)
    weights = (
        spec.model.label() if spec.model is not None else str(spec.sources.onnx or spec.sources.engine_dir)
    )

    def finish(item: VideoItem, stats: dict[str, object], attempts: int = 1) -> None:
        report = stats_report(stats, result.plan, weights, attempts)
        atomic_write_text(item.stats, json.dumps(report, indent=2) + "\n")
        # checked against the input's frame count on resume (the output's own where unknown)
        ledgers.record(
            item.src, item.dst, key, item.frames if item.frames is not None else video_frames(item.dst)
        )
        result.done += 1

    by_src = {str(it.src): it for it in todo}
    try:
        with _video_pool(opts, spec, progress, result, t0) as (pool, sink, track, poll):
            if segments:
                report = restore_segmented(pool, todo, options, segments, sink, track, poll, finish)
            else:
                jobs = [Job(str(it.src), "video", (it.src, it.dst, options, sink, str(it.src)), pass_attempt=True)
                        for it in todo]  # fmt: skip
                track(jobs)
                report = pool.run(
                    jobs, lambda job, stats: finish(by_src[job.key], stats, job.attempts + 1), poll
                )
            if poll is not None:
                poll()
    finally:
        remove_stray_temps([p for it in todo for p in (it.dst, it.stats)], t0_ns)
        ledgers.save()
    return _result(report, result, t0)


@contextlib.contextmanager
def _video_pool(opts: RayOptions | None, spec: WorkerSpec, progress, result: BatchResult, t0: float):  # noqa: ANN001, ANN202
    """(pool, sink, track, poll): the workers, what they report frames to, ``track(jobs)`` to count
    those jobs' frames, and ``poll()`` to move the progress bar (None: the workers call it)."""
    if opts is None:
        pool = LocalPool(spec)
        result.actors, result.plan = 1, pool.info.plan
        result.startup_s = time.perf_counter() - t0
        try:
            yield pool, progress, (lambda jobs: None), None
        finally:
            pool.close()
        return
    ray = import_ray()
    with ray_pool(opts, spec) as (pool, infos):
        result.actors, result.plan = len(infos), infos[0].plan
        result.startup_s = time.perf_counter() - t0
        # Frames are counted under "job#attempt" keys, so a dead worker's frames do not count twice.
        counter = ray.remote(ProgressCounter).options(num_cpus=0).remote()
        tracked: list[Job] = []
        shown = [0]

        def poll() -> None:
            if progress is None or not tracked:
                return
            counts = ray.get(counter.snapshot.remote())
            now = sum(counts.get(f"{job.key}#{job.attempts}", 0) for job in tracked)
            if now > shown[0]:
                progress(now - shown[0])
                shown[0] = now

        yield pool, counter, tracked.extend, poll
