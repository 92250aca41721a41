"""Long videos in segments over a pool of workers (``daefr-video --segments N`` with ``--ray``, or
several videos here), with the library of ``daefr.runtime.segments``:

    driver   plan_segments        split each video at clean keyframes (demux only)
    actors   detect_segment       faces of every frame of a segment      (retried on a dead worker)
    driver   smooth_landmarks     one smoother over all segments in order (exact --smooth)
    actors   restore_segment      restore + encode a part file            (retried on a dead worker)
    driver   join_segments        remux the parts and the input's audio into the output, atomically

A video whose segment fails for good is reported (by its segment) and not joined; the others
finish. Part files live in a hidden folder beside the output (every node must see it, as it must
see the output) and are removed whatever happens.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daefr.runtime.ray_pool import Failure, Job, PoolReport

log = logging.getLogger(__name__)


def _merge(into: PoolReport, other: PoolReport) -> None:
    into.failures += other.failures
    into.deaths += other.deaths
    into.retried += other.retried


def restore_segmented(
    pool: Any,
    items: list[Any],
    options: Any,
    max_segments: int,
    sink: Any,
    track: Callable[[list[Job]], None],
    poll: Callable[[], None] | None,
    finish: Callable[[Any, dict[str, object]], None],
) -> PoolReport:
    """Every video of ``items`` (``VideoItem``) in up to ``max_segments`` segments on ``pool``
    (``ActorPool`` or ``LocalPool``). ``sink``: what workers report frames to; ``track(jobs)``:
    the jobs whose frames the progress bar counts; ``finish(item, stats)``: a joined output."""
    from daefr.runtime.segments import join_segments, part_suffix, plan_segments, smooth_landmarks
    from daefr.runtime.video_input import VideoError

    report = PoolReport()
    plans: dict[Path, list[Any]] = {}
    for item in items:
        try:
            plans[item.src] = plan_segments(item.src, max_segments, 1, options.max_frames)
        except (VideoError, OSError) as err:
            report.failures.append(Failure(str(item.src), str(err), 1))
    log.info("%d video(s) in %d segment(s)", len(plans), sum(len(p) for p in plans.values()))

    def name(src: Path, segment: Any, what: str = "") -> str:
        return f"{src} segment {segment.index + 1} of {len(plans[src])}{what}"

    found: dict[tuple[Path, int], Any] = {}
    jobs = [
        Job(name(src, s, " (detect)"), "detect_segment", (src, s, options))
        for src, p in plans.items()
        for s in p
    ]
    t0 = time.perf_counter()
    _merge(
        report,
        pool.run(jobs, lambda job, faces: found.__setitem__((job.args[0], job.args[1].index), faces), poll),
    )
    detect_wall = time.perf_counter() - t0
    ready = [it for it in items if it.src in plans and all((it.src, s.index) in found for s in plans[it.src])]
    with contextlib.ExitStack() as stack:
        jobs, parts = [], {}
        for item in ready:
            faces = smooth_landmarks([found[(item.src, s.index)] for s in plans[item.src]], options)
            item.dst.parent.mkdir(parents=True, exist_ok=True)
            workdir = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f".{item.dst.stem}.segments-", dir=item.dst.parent)
            ))  # fmt: skip
            for f in faces:
                part = workdir / f"part{f.segment.index:05d}{part_suffix(options.codec)}"
                key = name(item.src, f.segment)
                jobs.append(Job(key, "restore_segment", (item.src, f.segment, f, part, options, sink, key),
                                pass_attempt=True))  # fmt: skip
            parts[item.src] = faces
        track(jobs)
        results: dict[tuple[Path, int], Any] = {}
        t1 = time.perf_counter()
        _merge(
            report,
            pool.run(jobs, lambda job, r: results.__setitem__((job.args[0], r.segment.index), r), poll),
        )
        restore_wall = time.perf_counter() - t1
        for item in ready:
            plan = plans[item.src]
            if not all((item.src, s.index) in results for s in plan):
                continue  # its failed segment is reported already
            ordered = [results[(item.src, s.index)] for s in plan]
            t2 = time.perf_counter()
            try:
                stats = join_segments(item.src, ordered, item.dst, options)
            except (VideoError, OSError) as err:
                report.failures.append(Failure(str(item.src), f"joining the segments failed: {err}", 1))
                continue
            join_s = time.perf_counter() - t2
            stats.stage_s["detect"] = sum(f.detect_s for f in parts[item.src])
            stats.wall_s = time.perf_counter() - t0
            stats.fps = stats.frames / stats.wall_s if stats.wall_s > 0 else 0.0
            payload = stats.to_dict()
            payload["segments"] = [
                {"index": r.segment.index, "frames": r.frames, "restore_s": round(r.wall_s, 4),
                 "detect_s": round(f.detect_s, 4)}
                for r, f in zip(ordered, parts[item.src], strict=True)
            ]  # fmt: skip
            payload["join_s"] = round(join_s, 4)
            payload["phases_s"] = {"detect": round(detect_wall, 3), "restore": round(restore_wall, 3)}
            finish(item, payload)
    return report
