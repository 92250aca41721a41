"""The input side of the video pipeline: which stream, how it is shown, how long it is.

- **Stream**: chosen as ffmpeg's CLI does by default (``map_auto_video`` in fftools): the
  largest picture wins, a ``default`` disposition adds 5,000,000 to its pixel area, and an
  attached picture (cover art, a one-frame thumbnail) scores 1, so a thumbnail stored
  before the clip is never taken for it.
- **Rotation**: the display matrix (phone videos) is honoured as ffmpeg's autorotate does:
  frames are turned upright before detection and written upright.
- **Length**: the container's exact frame count where it stores one (MP4/MOV); otherwise the
  video stream's duration (a VFR MKV stores a duration, not a count), compared with the
  decoded frames' end time, so a variable frame rate is not mistaken for truncation.
- **Bit depth**: recorded; the output keeps it when the encoder can, else a warning says so.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from daefr.image_io import is_regular_file

log = logging.getLogger(__name__)

# Containers daefr-video writes (the suffix picks the muxer); image suffixes are refused.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v", ".avi", ".webm", ".ts", ".mts", ".m2ts", ".nut", ".flv")


# Frames beyond this are refused (8K is 7680x4320): several such frames queue between the stages.
MAX_SIDE = 16384


class VideoError(RuntimeError):
    """An input that cannot be read or decoded, or an output that cannot be written."""


@dataclass(frozen=True)
class VideoInfo:
    """What the input says about itself. width/height: as displayed (after rotation);
    rotation_k: quarter turns counterclockwise that make a stored frame upright;
    frames: exact count stored in the container (None if it stores none); seconds: the
    video stream's own duration (None if unknown); rate: nominal frames/s (None if unknown)."""

    stream_index: int
    width: int
    height: int
    rotation_k: int
    pix_fmt: str
    bit_depth: int
    frames: int | None
    seconds: float | None
    rate: Fraction | None

    def to_dict(self) -> dict[str, object]:
        return {
            "input_pix_fmt": self.pix_fmt,
            "input_bit_depth": self.bit_depth,
            "rotation_degrees": 90 * self.rotation_k,
            "input_rate": str(self.rate) if self.rate else "unknown (variable)",
        }


def _score(stream: av.video.stream.VideoStream) -> int:
    disposition = int(stream.disposition)
    if disposition & int(av.stream.Disposition.attached_pic):
        return 1
    # A damaged file can leave a stream without a codec context (no width at all): it scores 0
    area = (getattr(stream, "width", 0) or 0) * (getattr(stream, "height", 0) or 0)
    return area + 5_000_000 * bool(disposition & int(av.stream.Disposition.default))


def main_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The video stream ffmpeg would pick (first of the best score)."""
    return max(container.streams.video, key=_score)


def open_input(src: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream, list]:
    """The input container, its main video stream and its audio streams; VideoError if unreadable."""
    src = Path(src)
    if not src.exists():
        raise VideoError(f"{src}: no such file")
    if not is_regular_file(src):
        raise VideoError(f"{src}: not a regular file (a folder, FIFO or device)")
    try:
        container = av.open(str(src))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, OSError) as err:
        raise VideoError(f"{src}: not a readable video ({err})") from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"{src}: has no video stream")
    video = main_video_stream(container)
    video.thread_type = "AUTO"
    return container, video, list(container.streams.audio)


def _bit_depth(pix_fmt: str) -> int:
    try:
        return max(c.bits for c in av.video.format.VideoFormat(pix_fmt).components)
    except (ValueError, av.error.FFmpegError):
        return 8


def _tag_seconds(stream: av.video.stream.VideoStream) -> float | None:
    """Matroska's per-stream DURATION tag ("00:00:02.500000000"), written by ffmpeg's muxer."""
    tag = next((v for k, v in stream.metadata.items() if k.upper() == "DURATION"), None)
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", tag or "")
    if not match:
        return None
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def _stream_seconds(stream: av.video.stream.VideoStream, container, has_audio: bool) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tagged = _tag_seconds(stream)
    if tagged is not None:
        return tagged
    if container.duration and not has_audio:  # with audio, the container's is the longest stream's
        return container.duration / av.time_base
    return None


def _rotation_k(container, stream) -> int:
    """Quarter turns from the first frame's display matrix (0 if it has none)."""
    try:
        frame = next(container.decode(stream), None)
    except (av.error.FFmpegError, StopIteration):
        return 0
    rotation = getattr(frame, "rotation", 0) or 0
    return round(rotation / 90) % 4


def probe(src: Path) -> VideoInfo:
    """Open ``src``, pick its main stream and read what it says about itself; VideoError if unreadable."""
    container, video, audio = open_input(src)
    try:
        return _describe(container, video, audio)
    except (AttributeError, TypeError, ValueError, ZeroDivisionError, av.error.FFmpegError) as err:
        # what a damaged header leaves: a stream without a codec context, a zero time base...
        raise VideoError(f"{src}: not a readable video ({type(err).__name__}: {err})") from err
    finally:
        container.close()


def _describe(container, video, audio) -> VideoInfo:
    width, height = getattr(video, "width", 0), getattr(video, "height", 0)
    if not (width and height):
        raise ValueError("the video stream has no picture size")
    if max(width, height) > MAX_SIDE:  # a damaged or hostile header: frames of gigabytes each
        raise ValueError(f"a {width}x{height} picture is beyond {MAX_SIDE} pixels a side")
    k = _rotation_k(container, video)
    width, height = (video.height, video.width) if k % 2 else (video.width, video.height)
    pix_fmt = video.format.name if video.format is not None else "unknown"
    rate = video.average_rate or video.guessed_rate or None
    return VideoInfo(
        stream_index=video.index,
        width=width,
        height=height,
        rotation_k=k,
        pix_fmt=pix_fmt,
        bit_depth=_bit_depth(pix_fmt),
        frames=int(video.frames) if video.frames else None,
        seconds=_stream_seconds(video, container, bool(audio)),
        rate=Fraction(rate) if rate else None,
    )


def expected_frames(info: VideoInfo) -> int | None:
    """For a progress bar: the stored count, else duration x rate (an estimate)."""
    if info.frames:
        return info.frames
    if info.seconds and info.rate:
        return round(info.seconds * float(info.rate))
    return None


def check_complete(
    src: Path, info: VideoInfo, decoded: int, decoded_end_s: float | None, max_frames: int | None
) -> None:
    """VideoError when fewer frames were decoded than the container says it holds."""
    if decoded == 0:
        raise VideoError(f"{src}: no video frame could be decoded (corrupt or empty file)")
    if max_frames is not None and decoded >= max_frames:
        return
    if info.frames:  # an exact count: a truncated file falls short of it
        if decoded < info.frames - max(2, 0.02 * info.frames):
            raise VideoError(
                f"{src}: truncated or corrupt: decoded {decoded} of the {info.frames} frames its header promises"
            )
        return
    if info.seconds and decoded_end_s is not None:  # only a duration: compare times, not counts
        interval = 1 / float(info.rate) if info.rate else 0.04
        if decoded_end_s < info.seconds - max(3 * interval, 0.02 * info.seconds):
            raise VideoError(
                f"{src}: truncated or corrupt: frames end at {decoded_end_s:.2f} s of the "
                f"{info.seconds:.2f} s its header promises"
            )


def check_output_container(path: Path) -> None:
    """VideoError unless ``path``'s suffix names a video container."""
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoError(
            f"{path}: {Path(path).suffix or 'no suffix'} is not a video container; "
            f"use one of {', '.join(VIDEO_SUFFIXES)}"
        )


def output_pix_fmt(info: VideoInfo, codec: str, default: str) -> str:
    """The input's pixel format when it has more than 8 bits and the encoder takes it (and
    the size fits its chroma subsampling); else ``default``, with a warning for deeper input."""
    if info.bit_depth <= 8:
        return default
    try:
        formats = {f.name for f in av.Codec(codec, "w").video_formats or ()}
    except (ValueError, av.error.FFmpegError):
        formats = set()
    subsampled = "420" in info.pix_fmt or "422" in info.pix_fmt or info.pix_fmt.startswith(("nv", "p0", "p2"))
    odd = info.width % 2 or info.height % 2
    if info.pix_fmt in formats and not (subsampled and odd):
        log.info("keeping the input's %d-bit %s (faces pass through 8-bit RGB)", info.bit_depth, info.pix_fmt)
        return info.pix_fmt
    log.warning(
        "input is %d-bit %s; %s writes %s: the output is 8-bit", info.bit_depth, info.pix_fmt, codec, default
    )
    return default
