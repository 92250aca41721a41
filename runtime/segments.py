"""One video restored in segments split at keyframes, joined into one output by remuxing.

    plan_segments      demux the video packets (no decoding) and split at clean keyframes
    detect_segment     decode one segment, detect faces in every frame        (parallel)
    smooth_landmarks   one LandmarkSmoother over all segments, in order        (driver, cheap)
    restore_segment    decode, align with the given faces, restore, paste, encode a part file
    join_segments      remux the parts' packets and the input's audio packets into one output

**Smoothing across boundaries is exact, not approximated by overlap.** The smoother is a causal
tracker with a One-Euro filter: its state at a boundary depends on every earlier frame, so a few
frames of context would only approximate it. Detection (the costly part) runs per segment; the
smoother then runs over all segments' raw landmarks in order, exactly the sequence of
``update`` calls the single-process pipeline makes; the segments are restored with those
landmarks. **The stability metric is continued** from each segment's first and last frame codes
(``CodeStability.extend``). Both need no context frames.

**Split points** are keyframes where no frame before the keyframe in decode order is shown after
it and none after it is shown before it (closed GOP): a segment decoded from there gives the same
frames as a decode from the start, and no context frame is needed (``decode_from == start``).
A split point is kept only where a backward seek provably lands on it (the first packet
demuxed after the seek is that keyframe; MPEG-TS can land past it), else fewer segments, with a
log line. A stream whose packets lack timestamps, or repeat one, or whose first packet is no
keyframe (its packets are not its frames), is not split (one segment).

**The join** (runtime/segment_join.py) copies packets: each part is encoded separately, starting
at pts 0, into MOV where the codec fits (exact time base and dts; else Matroska,
``part_suffix``, after a real header write); the join stamps every frame with its input pts
and duration (the input's pts spacing), gives dts from the input's frame times
(``_dts_schedule``) and interleaves the input's audio packets by time, copied untouched.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import av

from daefr.atomic import atomic_path, terminable
from daefr.runtime.backends.base import Restorer
from daefr.runtime.face.detector import Face, FaceDetector
from daefr.runtime.face.smooth import LandmarkSmoother
from daefr.runtime.segment_join import (
    check_audio_fits,
    check_contiguous,
    check_segmented_output,
    join_segments,
    part_suffix,
)
from daefr.runtime.video import (
    VideoOptions,
    VideoStats,
    describe_restorer,
)
from daefr.runtime.video_input import VideoError, check_complete, check_output_container, open_input, probe
from daefr.runtime.video_stages import (
    STAGES,
    BatchPolicy,
    CodeStability,
    DecodedFrame,
    Decoder,
    RestoreCounter,
    add_video_stream,
    align,
    detect,
    encode,
    frame_time,
    groups,
    paste,
    restore_frames,
    to_rgb,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Segment:
    """Output frames ``start``..``stop``-1 (presentation order, 0-based); decoding starts at frame
    ``decode_from`` (a keyframe, <= start; frames before ``start`` are context, decoded but not
    written), found by seeking to ``seek_pts`` (video stream time base). ``pts``: the timestamps
    of frames start..stop-1; None for a stream that cannot be split (one segment: every frame,
    counted as decoded)."""

    index: int
    start: int
    stop: int
    decode_from: int
    seek_pts: int | None
    pts: tuple[int, ...] | None

    def __post_init__(self) -> None:
        if not 0 <= self.decode_from <= self.start < self.stop:
            raise ValueError(
                f"invalid Segment: decode_from={self.decode_from}, start={self.start}, stop={self.stop}; "
                "need 0 <= decode_from <= start < stop"
            )
        if self.pts is not None and len(self.pts) != self.stop - self.start:
            raise ValueError(f"invalid Segment: {len(self.pts)} pts for frames {self.start}..{self.stop - 1}")

    @property
    def frames(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class SegmentFaces:
    """The faces of each output frame of ``segment`` (raw, or smoothed by smooth_landmarks) and
    each frame's time (seconds, what the smoother sees); detect_s: detection busy time."""

    segment: Segment
    times: tuple[float, ...]
    faces: tuple[tuple[Face, ...], ...]
    detect_s: float = 0.0


@dataclass(frozen=True)
class SegmentResult:
    """What restore_segment wrote (``part``: a video-only file) and measured. stability: the
    segment's code-stability counts with its first and last frame's codes, so the metric
    continues across boundaries; restorer: describe_restorer()."""

    segment: Segment
    part: Path
    frames: int
    frames_with_faces: int
    faces: int
    batches: int
    stage_s: dict[str, float]
    latencies_s: tuple[float, ...]
    stability: CodeStability
    restorer: dict[str, object] = field(default_factory=dict)
    wall_s: float = 0.0


# AVI stores no presentation timestamps (B-frames reach it only by dts): parts cannot be joined.
# -- plan -------------------------------------------------------------------------------------
def _video_packets(src: Path) -> tuple[list[int | None], list[bool], object, float | None]:
    """Decode-order pts and keyframe flags of the main video stream, its time base, and where
    its last frame ends (seconds)."""
    container, video, _ = open_input(src)
    pts, keys, end = [], [], None
    try:
        for packet in container.demux(video):
            if packet.size == 0:  # the empty flush packet
                continue
            pts.append(packet.pts)
            keys.append(bool(packet.is_keyframe))
            if packet.pts is not None and video.time_base:
                span = packet.duration or 0
                end = max(end or 0.0, float((packet.pts + span) * video.time_base))
    except av.error.FFmpegError as err:
        raise VideoError(f"{src}: demuxing failed after {len(pts)} video packets ({err})") from err
    finally:
        tb = video.time_base
        container.close()
    return pts, keys, tb, end


def _clean_keyframes(pts: list[int], keys: list[bool]) -> list[int]:
    """Decode positions of the keyframes that split the stream cleanly (closed GOP)."""
    n = len(pts)
    suffix_min = [0] * n
    low = None
    for i in range(n - 1, -1, -1):
        low = pts[i] if low is None else min(low, pts[i])
        suffix_min[i] = low
    clean, high = [], None
    for i in range(n):
        if keys[i] and i > 0 and high < pts[i] <= suffix_min[i]:
            clean.append(i)
        high = pts[i] if high is None else max(high, pts[i])
    return clean


def _seek_lands(src: Path, pts: int) -> bool:
    """Whether a backward seek to ``pts`` lands on the keyframe shown at ``pts``: the first
    video packet demuxed after it is that keyframe (MPEG-TS, for one, can land past it)."""
    container, video, _ = open_input(src)
    try:
        container.seek(pts, stream=video, backward=True)
        packet = next((p for p in container.demux(video) if p.size), None)
        return packet is not None and bool(packet.is_keyframe) and packet.pts == pts
    except av.error.FFmpegError:
        return False
    finally:
        container.close()


def _choose(candidates: list[int], total: int, count: int, min_frames: int) -> list[int]:
    """Up to count - 1 boundaries among ``candidates`` (frame indices), each near an even split."""
    bounds = [0]
    for i in range(1, count):
        target = i * total / count
        usable = [k for k in candidates if k - bounds[-1] >= min_frames and total - k >= min_frames]
        if not usable:
            break
        bounds.append(min(usable, key=lambda k: (abs(k - target), k)))
    return bounds[1:]


def plan_segments(
    src: str | Path, max_segments: int, min_frames: int = 1, max_frames: int | None = None
) -> list[Segment]:
    """At most ``max_segments`` segments covering every frame once (of the first ``max_frames``
    if given), split at clean keyframes (demuxed packets, no decoding), each of at least
    ``min_frames`` frames; fewer where the clip has fewer such keyframes. VideoError for an
    unreadable or truncated input (fewer packets than its header promises)."""
    src = Path(src)
    for name, value in (("max_segments", max_segments), ("min_frames", min_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"plan_segments: {name}={value!r}; must be an integer >= 1")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"plan_segments: max_frames={max_frames!r}; must be >= 1 or None")
    info = probe(src)
    pts, keys, _, end_s = _video_packets(src)
    if not pts:
        raise VideoError(f"{src}: no video packet could be read (corrupt or empty file)")
    check_complete(src, info, len(pts), end_s, max_frames)  # a truncated input fails before any work
    if any(p is None for p in pts) or len(set(pts)) != len(pts):
        log.info("%s: video packets without distinct timestamps; not split", src)
        total = min(len(pts), max_frames) if max_frames else len(pts)
        return [Segment(0, 0, total, 0, None, None)]
    if not keys[0]:
        log.info("%s: the first video packet is not a keyframe; not split", src)
        total = min(len(pts), max_frames) if max_frames else len(pts)
        return [Segment(0, 0, total, 0, None, None)]
    shown = sorted(pts)  # presentation order
    total = min(len(shown), max_frames) if max_frames else len(shown)
    candidates = [bisect.bisect_left(shown, pts[i]) for i in _clean_keyframes(pts, keys)]
    candidates = sorted(k for k in candidates if 0 < k < total)
    count = min(max_segments, len(candidates) + 1)
    chosen = _choose(candidates, total, count, min_frames)
    landed = [k for k in chosen if _seek_lands(src, shown[k])]
    if len(landed) < len(chosen):
        log.info(
            "%s: a seek does not land on %d of the %d planned split points (%s); %d segments",
            src, len(chosen) - len(landed), len(chosen), "frames " + ", ".join(
                str(k) for k in chosen if k not in landed), len(landed) + 1,
        )  # fmt: skip
    bounds = [0, *landed, total]
    return [
        Segment(i, a, b, a, shown[a], tuple(shown[a:b]))
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]


# -- decode one segment -----------------------------------------------------------------------
def _segment_frames(
    src: Path, container, video, decoder: Decoder, segment: Segment
) -> Iterator[DecodedFrame]:
    """The output frames of ``segment`` with their global index; context frames dropped."""
    if segment.pts is None:  # unsplittable: every frame, counted as decoded
        yield from decoder
        return
    if segment.decode_from > 0:
        try:
            container.seek(segment.seek_pts, stream=video, backward=True)
        except av.error.FFmpegError as err:
            raise VideoError(f"{src}: cannot seek to segment {segment.index} ({err})") from err
    produced = 0
    for decoded in decoder:
        pts = decoded.frame.pts
        if pts is not None and pts < segment.pts[0]:
            continue  # context before the segment's first frame
        if pts != segment.pts[produced]:
            raise VideoError(
                f"{src}: segment {segment.index}: frame {segment.start + produced} decoded with pts {pts}, "
                f"planned {segment.pts[produced]}; this stream cannot be split, run without --segments"
            )
        yield replace(decoded, index=segment.start + produced)
        produced += 1
        if produced == segment.frames:
            return
    raise VideoError(
        f"{src}: segment {segment.index}: decoded {produced} of its {segment.frames} frames "
        "(truncated or corrupt)"
    )


@contextlib.contextmanager
def _frames(src: Path, segment: Segment):
    """(the video stream, the segment's frames, their decoder: ``busy_s``)."""
    container, video, _ = open_input(src)
    decoder = Decoder(src, container, video, (), segment.stop if segment.pts is None else None)
    frames = _segment_frames(src, container, video, decoder, segment)
    try:
        yield video, frames, decoder
    finally:
        frames.close()
        container.close()


# -- detect, smooth ---------------------------------------------------------------------------
def detect_segment(
    src: str | Path, segment: Segment, detector: FaceDetector, options: VideoOptions | None = None
) -> SegmentFaces:
    """Raw faces of every output frame of ``segment``."""
    src = Path(src)
    rotation_k = probe(src).rotation_k
    times, faces = [], []
    t0 = time.perf_counter()
    with _frames(src, segment) as (_, frames, _decoder):
        for decoded in frames:
            times.append(frame_time(decoded))
            faces.append(tuple(detect(decoded, detector, rotation_k, src).faces))
    if segment.pts is None:
        segment = replace(segment, stop=segment.start + max(1, len(faces)))
    return SegmentFaces(segment, tuple(times), tuple(faces), time.perf_counter() - t0)


def smooth_landmarks(parts: list[SegmentFaces], options: VideoOptions) -> list[SegmentFaces]:
    """With ``options.smooth``, the landmarks the single-process pipeline would use: one smoother
    over every frame of every segment, in order (``parts`` in segment order, contiguous)."""
    if not options.smooth:
        return list(parts)
    check_contiguous([p.segment for p in parts])
    smoother = LandmarkSmoother()
    out = []
    for part in parts:
        faces = [
            tuple(smoother.update(list(f), t)) for f, t in zip(part.faces, part.times, strict=True)
        ]  # the same update sequence as runtime/video.py's align stage (a gap ends the tracks)
        out.append(replace(part, faces=tuple(faces)))
    return out


# -- restore ----------------------------------------------------------------------------------
def restore_segment(
    src: str | Path,
    segment: Segment,
    faces: SegmentFaces,
    restorer: Restorer,
    part_path: str | Path,
    options: VideoOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> SegmentResult:
    """Restore ``segment`` with the given ``faces`` into ``part_path`` (video only, atomic,
    container from its suffix: ``part_suffix(options.codec)``; timestamps start at 0)."""
    src, part_path = Path(src), Path(part_path)
    options = options or VideoOptions()
    check_output_container(part_path)
    if faces.segment.index != segment.index or (
        segment.pts is not None and len(faces.faces) != segment.frames
    ):
        raise ValueError(
            f"restore_segment: faces of segment {faces.segment.index} given for segment {segment.index}"
        )
    segment = faces.segment if segment.pts is None else segment
    info = probe(src)
    policy = BatchPolicy(options.batch_size, options.queue_frames)
    counter, stability = RestoreCounter(), CodeStability()
    stage_s = dict.fromkeys(STAGES, 0.0)
    latencies: list[float] = []
    counts = {"frames": 0, "with_faces": 0, "faces": 0}
    t_start = time.perf_counter()
    with _frames(src, segment) as (video, frames, decoder), atomic_path(part_path) as tmp:
        try:
            out = av.open(str(tmp), "w")
        except (av.error.FFmpegError, ValueError) as err:
            raise VideoError(f"{part_path}: cannot write this container ({err})") from err
        try:
            stream = add_video_stream(out, video, info, options)
            starts: dict[int, float] = {}
            first_pts = segment.pts[0] if segment.pts is not None else 0

            def aligned():
                for decoded in frames:
                    t0 = starts[decoded.index] = time.perf_counter()
                    found = list(faces.faces[decoded.index - segment.start])
                    rgb = to_rgb(decoded, info.rotation_k, src) if found or info.rotation_k else None
                    item = align(decoded, rgb, found, restorer.resolution, info.rotation_k)
                    stage_s["align"] += time.perf_counter() - t0
                    yield item

            for group in groups(aligned(), policy):
                for restored in restore_frames(group, restorer, policy, counter):
                    stability.update(restored.codes)
                    t0 = time.perf_counter()
                    pasted = paste(restored, stream.pix_fmt, info.rotation_k)
                    # a part starts at 0 (a container's start offset may be rounded, MOV's edit
                    # list to milliseconds); join_segments puts the input's timestamps back
                    pasted.frame.pts -= first_pts
                    t1 = time.perf_counter()
                    encode(out, stream, pasted)
                    t2 = time.perf_counter()
                    stage_s["paste"] += t1 - t0
                    stage_s["encode"] += t2 - t1
                    latencies.append(t2 - starts.pop(pasted.decoded.index))
                    counts["frames"] += 1
                    counts["with_faces"] += bool(pasted.faces)
                    counts["faces"] += pasted.faces
                    if progress is not None:
                        progress(1)
            encode(out, stream, None)
            out.close()
        except av.error.FFmpegError as err:
            with contextlib.suppress(av.error.FFmpegError):
                out.close()
            raise VideoError(f"{part_path}: encoding segment {segment.index} failed ({err})") from err
        except BaseException:
            with contextlib.suppress(av.error.FFmpegError):
                out.close()
            raise
    stage_s["restore"], stage_s["decode"] = counter.busy_s, decoder.busy_s
    return SegmentResult(
        segment=segment,
        part=part_path,
        frames=counts["frames"],
        frames_with_faces=counts["with_faces"],
        faces=counts["faces"],
        batches=counter.batches,
        stage_s=stage_s,
        latencies_s=tuple(latencies),
        stability=stability,
        restorer=describe_restorer(restorer),
        wall_s=time.perf_counter() - t_start,
    )


# -- all in one process -----------------------------------------------------------------------
def restore_video_segmented(
    src: str | Path,
    dst: str | Path,
    restorer: Restorer,
    detector: FaceDetector,
    options: VideoOptions | None = None,
    max_segments: int = 2,
    progress: Callable[[int], None] | None = None,
    min_frames: int = 1,
) -> VideoStats:
    """restore_video through the segment path, in this process: plan, detect each segment,
    smooth, restore each into a part file (next to ``dst``, removed after), join. The stages
    run one after another per segment (``options.detect_workers`` is not used; parallelism is
    the segments', see runtime/ray_*.py)."""
    src, dst = Path(src), Path(dst)
    options = options or VideoOptions()
    check_segmented_output(dst, options.codec)
    if dst.resolve() == src.resolve():
        raise VideoError(f"{dst}: the output would overwrite the input; choose another path")
    check_audio_fits(src, dst)
    with terminable():  # SIGTERM/SIGHUP at any stage unwinds: the parts' folder is removed
        return _restore_segmented(src, dst, restorer, detector, options, max_segments, progress, min_frames)


def _restore_segmented(
    src, dst, restorer, detector, options, max_segments, progress, min_frames
) -> VideoStats:
    t_start = time.perf_counter()
    plan = plan_segments(src, max_segments, min_frames, options.max_frames)
    faces = smooth_landmarks([detect_segment(src, s, detector, options) for s in plan], options)
    suffix = part_suffix(options.codec)
    dst.parent.mkdir(parents=True, exist_ok=True)  # as atomic_path does for the single path
    with tempfile.TemporaryDirectory(prefix=f".{dst.stem}.segments-", dir=dst.parent) as workdir:
        results = [
            restore_segment(
                src,
                f.segment,
                f,
                restorer,
                Path(workdir) / f"part{f.segment.index:05d}{suffix}",
                options,
                progress,
            )
            for f in faces
        ]
        stats = join_segments(src, results, dst, options)
    stats.stage_s["detect"] = sum(f.detect_s for f in faces)
    stats.wall_s = time.perf_counter() - t_start
    stats.fps = stats.frames / stats.wall_s if stats.wall_s > 0 else 0.0
    log.info(
        "%s: %d frames in %d segments (%d with faces, %d faces) in %.1f s, %.1f frames/s",
        dst, stats.frames, len(plan), stats.frames_with_faces, stats.faces, stats.wall_s, stats.fps,
    )  # fmt: skip
    return stats
