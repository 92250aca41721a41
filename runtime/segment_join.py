"""The join of a segmented run: the parts' video packets, re-stamped with the input's
timestamps, interleaved by time with the input's audio packets (copied untouched) into one
output, written atomically. See runtime/segments.py for the whole path."""

from __future__ import annotations

import contextlib
import functools
import heapq
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av

from daefr.atomic import atomic_path
from daefr.runtime.clips import LOSSLESS_PIX_FMT
from daefr.runtime.video import VideoOptions, VideoStats, latency_summary, video_report
from daefr.runtime.video_input import VideoError, check_output_container, open_input, probe
from daefr.runtime.video_stages import STAGES, CodeStability, close_output, open_output, output_rate

if TYPE_CHECKING:
    from daefr.runtime.segments import Segment, SegmentResult

UNJOINABLE_SUFFIXES = (".avi",)


def check_joinable(dst: Path) -> None:
    """VideoError unless ``dst``'s container can take a join (after check_output_container)."""
    if Path(dst).suffix.lower() in UNJOINABLE_SUFFIXES:
        raise VideoError(
            f"{dst}: segments cannot be joined into {Path(dst).suffix} (no presentation timestamps); "
            "write .mp4 or .mkv, or run without --segments"
        )


@functools.lru_cache(maxsize=64)
def muxer_accepts(suffix: str, codec: str) -> bool:
    """Whether the muxer of ``suffix`` writes a header for a ``codec`` stream (a real try, in a
    scratch folder: MOV lists VP9 as supported yet refuses it without experimental flags)."""
    with tempfile.TemporaryDirectory(prefix="daefr-mux-") as scratch:
        out = None
        try:
            out = av.open(os.path.join(scratch, f"probe{suffix}"), "w")
            stream = out.add_stream(codec, rate=25)
            stream.width, stream.height = 64, 64
            stream.pix_fmt = LOSSLESS_PIX_FMT.get(codec, stream.pix_fmt or "yuv420p")
            out.start_encoding()  # opens the encoder, writes the header
            return True
        except (av.error.FFmpegError, ValueError, TypeError, OSError):
            return False
        finally:
            if out is not None:
                with contextlib.suppress(av.error.FFmpegError, ValueError):
                    out.close()


def part_suffix(codec: str) -> str:
    """The container of a part file for ``codec``: MOV where it takes the codec (it keeps the
    encoder's time base and dts exactly), else Matroska (ffv1, VP9; millisecond timestamps, as a
    Matroska output has anyway), else NUT."""
    return next((s for s in (".mov", ".mkv") if muxer_accepts(s, codec)), ".nut")


def check_segmented_output(dst: Path, codec: str) -> None:
    """VideoError (one line) unless a segmented run can write ``dst`` with ``codec``: checked
    before any work, as the single path's output checks are."""
    check_output_container(dst)
    check_joinable(dst)
    suffix = Path(dst).suffix.lower()
    if not muxer_accepts(suffix, codec):
        raise VideoError(
            f"{dst}: the {suffix} container does not take {codec} video; choose another --codec "
            "(e.g. libvpx-vp9 for .webm) or another suffix (.mkv takes most)"
        )


def check_audio_fits(src: Path, dst: Path) -> None:
    """VideoError (one line) unless ``dst``'s container takes ``src``'s audio streams as they
    are (the join copies them): checked before any work, not after every part is restored."""
    container, _, audio = open_input(src)
    try:
        with tempfile.TemporaryDirectory(prefix="daefr-mux-") as scratch:
            with av.open(os.path.join(scratch, f"probe{Path(dst).suffix.lower()}"), "w") as out:
                for a in audio:
                    try:
                        out.add_stream_from_template(a)
                    except (ValueError, TypeError, AttributeError) as err:
                        raise VideoError(
                            f"{dst}: cannot copy {src}'s {a.codec_context.name} audio into it ({err}); "
                            "choose another suffix (.mkv takes most)"
                        ) from err
    finally:
        container.close()


def check_contiguous(segments: list[Segment]) -> None:
    if not segments or segments[0].start != 0:
        raise ValueError("segments must start at frame 0")
    for a, b in zip(segments, segments[1:], strict=False):
        if b.start != a.stop or b.index != a.index + 1:
            raise ValueError(
                f"segments {a.index} ({a.start}..{a.stop - 1}) and {b.index} ({b.start}..{b.stop - 1}) "
                "do not follow each other"
            )


# -- join -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _PartIndex:
    """What the join needs from a part before copying it: its stream's time base and extradata
    (equal across parts), and its frames' pts -> the input's pts (None: copied as they are)."""

    time_base: object
    extradata: bytes
    start: int
    shown: dict[int, int] | None
    decode_pts: tuple[int, ...] = ()  # the input pts of its packets, in decode order (with shown)
    delay: int = 0  # its encoder's reorder delay: packets decoded before its first frame's time


def _index_part(part: SegmentResult) -> _PartIndex:
    with _open_part(part.part) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.dts) for p in container.demux(stream) if p.size]
        pts = [p for p, _ in packets]
        extradata = bytes(stream.codec_context.extradata or b"")
        time_base = stream.time_base
    if len(pts) != part.frames or any(p is None for p in pts):
        raise VideoError(f"{part.part}: {len(pts)} video packets with timestamps for {part.frames} frames")
    order = sorted(pts)
    shown = None if part.segment.pts is None else dict(zip(order, part.segment.pts, strict=True))
    decode_pts = () if shown is None else tuple(shown[p] for p in pts)
    delay = sum(d is not None and d < order[0] for _, d in packets)
    return _PartIndex(time_base, extradata, order[0], shown, decode_pts, delay)


def _dts_schedule(decode_pts: list[int], timing: _InputTiming, delay: int = 0) -> list[int]:
    """The joined packets' dts (decode order): the n-th is the (n - D)-th presentation time,
    D the least reorder delay that keeps every dts <= its pts, at least ``delay`` (the first
    part's encoder's: the single path's output starts there, and a muxer that shifts to dts 0,
    MPEG-TS, then gives the same pts); before the first frame: its duration per step. So dts rise by the input's frame spans across every seam, and a
    muxer that derives durations from dts (MP4) gets the input's (not a part's track end)."""
    shown = sorted(decode_pts)
    rank = {p: k for k, p in enumerate(shown)}
    delay = max(delay, *(n - rank[p] for n, p in enumerate(decode_pts))) if decode_pts else 0
    step = timing.duration.get(shown[0], 1) if shown else 1
    return [shown[n - delay] if n >= delay else shown[0] - (delay - n) * step for n in range(len(shown))]


@dataclass(frozen=True)
class _InputTiming:
    """The input's video frame timing (its time base): ``duration[pts]``, each frame's span
    to the next frame in presentation order (the last one's own packet duration, else the
    span before it); ``ends``: the end of frame k, k in presentation order."""

    time_base: object
    duration: dict[int, int]
    ends: tuple[int, ...]


def _input_timing(src: Path) -> _InputTiming:
    container, video, _ = open_input(src)
    try:
        packets = [(p.pts, p.duration or 0) for p in container.demux(video) if p.size and p.pts is not None]
        time_base = video.time_base
    except av.error.FFmpegError as err:
        raise VideoError(f"{src}: demuxing failed ({err})") from err
    finally:
        container.close()
    shown = sorted(packets)
    spans = [b[0] - a[0] for a, b in zip(shown, shown[1:], strict=False)]
    if shown:
        spans.append(shown[-1][1] if shown[-1][1] > 0 else (spans[-1] if spans else 1))
    duration = {p: d for (p, _), d in zip(shown, spans, strict=True)}
    return _InputTiming(time_base, duration, tuple(p + d for (p, _), d in zip(shown, spans, strict=True)))


def _part_packets(
    parts: list[SegmentResult], index: list[_PartIndex], timing: _InputTiming, stats: dict
) -> Iterator:
    """The parts' video packets one part after another, each frame at its input pts (a part
    starts at 0, see restore_segment) with its input duration (not the part muxer's: MOV
    stretches a last B-frame to the track end), dts from ``_dts_schedule``. Every time
    field is in the input's time base. Parts without input timestamps (one segment) are copied
    in their own time base, dts only raised where not increasing."""
    input_tb = timing.time_base
    last_dts = None
    schedule = iter(_dts_schedule([p for idx in index for p in idx.decode_pts], timing, index[0].delay))
    for part, idx in zip(parts, index, strict=True):
        with _open_part(part.part) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if idx.shown is not None:
                    pts = idx.shown[packet.pts]
                    packet.time_base, packet.pts, packet.dts = input_tb, pts, next(schedule)
                    packet.duration = timing.duration.get(pts, 0)
                if last_dts is not None and packet.dts is not None and packet.dts <= last_dts:
                    if packet.pts is not None and last_dts + 1 > packet.pts:
                        raise VideoError(
                            f"{part.part}: its timestamps overlap the previous segment's; cannot join"
                        )
                    packet.dts = last_dts + 1
                last_dts = packet.dts if packet.dts is not None else last_dts
                stats["video_packets"] += 1
                yield packet


def _audio_packets(container, audio: list, end_s: float | None) -> Iterator:
    if not audio:
        return
    for packet in container.demux(*audio):
        if packet.dts is None:  # the empty flush packets carry no data
            continue
        if end_s is not None and packet.time_base and float(packet.dts * packet.time_base) >= end_s:
            return
        yield packet


def _time_key(packet: av.Packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None and packet.time_base else 0.0


def join_segments(
    src: str | Path, parts: list[SegmentResult], dst: str | Path, options: VideoOptions | None = None
) -> VideoStats:
    """One output ``dst`` from the parts (in segment order) and ``src``'s audio packets, copied
    untouched: the input's frame count, timestamps and frame rate. Atomic: ``dst`` appears
    complete or not at all. The stats add up the parts' (stability continued across boundaries)."""
    src, dst = Path(src), Path(dst)
    options = options or VideoOptions()
    check_output_container(dst)
    check_joinable(dst)
    if not parts:
        raise ValueError("join_segments: no parts")
    parts = sorted(parts, key=lambda p: p.segment.index)
    check_contiguous([p.segment for p in parts])
    for p in parts:
        if p.frames != p.segment.frames:
            raise VideoError(
                f"{p.part}: holds {p.frames} frames, segment {p.segment.index} has {p.segment.frames}"
            )
    if dst.resolve() == src.resolve() or any(dst.resolve() == p.part.resolve() for p in parts):
        raise VideoError(f"{dst}: the output would overwrite an input; choose another path")
    info = probe(src)
    t0 = time.perf_counter()
    counts = {"video_packets": 0}
    container, _, audio = open_input(src)
    with contextlib.ExitStack() as stack:
        stack.callback(container.close)
        index = [_index_part(p) for p in parts]
        for p, idx in zip(parts[1:], index[1:], strict=True):
            if idx.time_base != index[0].time_base or idx.extradata != index[0].extradata:
                raise VideoError(f"{p.part}: encoded differently from the first part; cannot join")
        first = stack.enter_context(_open_part(parts[0].part)).streams.video[0]
        timing = _input_timing(src)
        end_s = None  # cut at --max-frames: the audio stops where the last frame ends, as in restore_video
        last = parts[-1].segment
        if options.max_frames is not None and last.stop >= options.max_frames and last.pts:
            if last.stop - 1 < len(timing.ends):
                end_s = float(timing.ends[last.stop - 1] * timing.time_base)
        with atomic_path(dst) as tmp:
            out = open_output(tmp, dst)
            ok = False
            try:
                vstream = out.add_stream_from_template(first)
                vstream.codec_context.framerate = output_rate(info)  # as restore_video declares it
                try:
                    audio_map = {a.index: out.add_stream_from_template(a) for a in audio}
                except (ValueError, TypeError, AttributeError) as err:
                    raise VideoError(f"{dst}: cannot copy {src}'s audio into it ({err})") from err
                video_packets = _part_packets(parts, index, timing, counts)
                audio_packets = _audio_packets(container, audio, end_s)
                for packet in heapq.merge(video_packets, audio_packets, key=_time_key):
                    packet.stream = (
                        vstream if packet.stream.type == "video" else audio_map[packet.stream.index]
                    )
                    out.mux(packet)
                ok = True
            except av.error.FFmpegError as err:
                raise VideoError(f"{dst}: joining the segments failed ({err})") from err
            finally:
                close_output(out, dst, ok)
            total = parts[-1].segment.stop
            if counts["video_packets"] != total:
                raise VideoError(f"{dst}: joined {counts['video_packets']} video packets for {total} frames")
        output_pix_fmt = first.format.name if first.format is not None else "unknown"
    stats = _sum_stats(parts)
    stats.stage_s["join"] = time.perf_counter() - t0
    stats.video = {
        **video_report(src, dst, info, options, parts[0].restorer, output_pix_fmt, len(audio)),
        "segments": len(parts),
    }
    return stats


@contextlib.contextmanager
def _open_part(path: Path):
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(f"{path}: cannot read this segment part ({err})") from err
    try:
        if not container.streams.video:
            raise VideoError(f"{path}: segment part without a video stream")
        yield container
    finally:
        container.close()


def _sum_stats(parts: list[SegmentResult]) -> VideoStats:
    stats = VideoStats()
    stability = CodeStability()
    stage_s = dict.fromkeys(STAGES, 0.0)
    for p in parts:
        stats.frames += p.frames
        stats.frames_with_faces += p.frames_with_faces
        stats.faces += p.faces
        stats.batches += p.batches
        stability.extend(p.stability)
        for k, v in p.stage_s.items():
            stage_s[k] = stage_s.get(k, 0.0) + v
    stats.stage_s = stage_s
    stats.latency_ms = latency_summary([t for p in parts for t in p.latencies_s])
    stats.code_stability, stats.code_stability_pairs = stability.value, stability.pairs
    return stats
