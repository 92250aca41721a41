"""The join of a segmented run: the parts' video packets, re-stamped with the input's
timestamps, interleaved by time with the input's audio packets (copied untouched) into one
output, written atomically. See runtime/segments.py for the whole path."""

from __future__ import annotations

import contextlib
import heapq
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av

from daefr.atomic import atomic_path
from daefr.runtime.video import VideoOptions, VideoStats, latency_summary, video_report
from daefr.runtime.video_input import VideoError, check_output_container, open_input, probe
from daefr.runtime.video_stages import STAGES, CodeStability, output_rate

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


def part_suffix(codec: str) -> str:
    """The container of a part file for ``codec``: MOV where it takes the codec (it keeps the
    encoder's time base and dts exactly), else Matroska (ffv1 and the like; millisecond
    timestamps, as a Matroska output has anyway)."""
    with av.open(os.devnull, "w", format="mov") as probe_out:
        return ".mov" if codec in probe_out.supported_codecs else ".mkv"


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


def _index_part(part: SegmentResult) -> _PartIndex:
    with _open_part(part.part) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.size]
        extradata = bytes(stream.codec_context.extradata or b"")
        time_base = stream.time_base
    if len(pts) != part.frames or any(p is None for p in pts):
        raise VideoError(f"{part.part}: {len(pts)} video packets with timestamps for {part.frames} frames")
    order = sorted(pts)
    shown = None if part.segment.pts is None else dict(zip(order, part.segment.pts, strict=True))
    return _PartIndex(time_base, extradata, order[0], shown)


def _part_packets(parts: list[SegmentResult], index: list[_PartIndex], input_tb, stats: dict) -> Iterator:
    """The parts' video packets one part after another, each frame at its input pts (a part
    starts at 0, see restore_segment), dts kept increasing across the seams (each part's
    encoder starts its dts below its first pts; raised by the least step that keeps them
    ordered, never above a packet's pts)."""
    last_dts = None
    for part, idx in zip(parts, index, strict=True):
        with _open_part(part.part) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if idx.shown is not None:
                    pts = idx.shown[packet.pts]
                    dts = pts
                    if packet.dts is not None:
                        dts = part.segment.pts[0] + round((packet.dts - idx.start) * idx.time_base / input_tb)
                    packet.time_base, packet.pts, packet.dts = input_tb, pts, min(dts, pts)
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
        input_tb = _input_time_base(src)
        end_s = None  # cut at --max-frames: the audio stops with the last frame, as in restore_video
        last = parts[-1].segment
        if options.max_frames is not None and last.stop >= options.max_frames and last.pts:
            end_s = float(last.pts[-1] * input_tb)
        with atomic_path(dst) as tmp:
            try:
                out = av.open(str(tmp), "w")
            except (av.error.FFmpegError, ValueError) as err:
                raise VideoError(f"{dst}: cannot write this container ({err})") from err
            ok = False
            try:
                vstream = out.add_stream_from_template(first)
                vstream.codec_context.framerate = output_rate(info)  # as restore_video declares it
                audio_map = {a.index: out.add_stream_from_template(a) for a in audio}
                video_packets = _part_packets(parts, index, input_tb, counts)
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
                _close(out, dst, ok)
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


def _input_time_base(src: Path):
    container, video, _ = open_input(src)
    try:
        return video.time_base
    finally:
        container.close()


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


def _close(out, dst: Path, raise_errors: bool) -> None:
    try:
        out.close()
    except av.error.FFmpegError as err:
        if raise_errors:
            raise VideoError(f"{dst}: finishing the output failed ({err})") from err


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
