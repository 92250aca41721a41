"""The stages of the video pipeline, each a plain function (or a small class) with its own
input and output record:

    decode          Decoder: demux + decode                       -> DecodedFrame (+ audio packets)
    detect + align  to_rgb, detect, align                        -> DetectedFrame -> AlignedFrame
    restore         BatchPolicy (the one batching policy), restore_frames -> RestoredFrame
    paste           paste                                         -> PastedFrame
    encode          add_video_stream, encode

``restore_video`` (runtime/video.py) joins them with threads and queues; the segment path
(runtime/segments.py) runs the same functions in one loop per segment. No record changes
meaning on the way: an aligned crop and a restored crop live in different records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import torch

from daefr.runtime.backends.base import Restorer
from daefr.runtime.clips import LOSSLESS_PIX_FMT
from daefr.runtime.face.align import (
    align_matrix,
    batch_to_crops,
    crops_to_batch,
    face_region,
    paste_faces,
    warp_faces,
)
from daefr.runtime.face.detector import Face, FaceDetector
from daefr.runtime.face.smooth import LandmarkSmoother
from daefr.runtime.video_input import VideoError, VideoInfo, output_pix_fmt
from daefr.runtime.yuv_patch import can_patch, patch_yuv420p

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from daefr.runtime.video import VideoOptions

CRF_CODECS = ("libx264", "libx264rgb", "libx265")
STAGES = ("decode", "detect", "align", "restore", "paste", "encode")


# -- records ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecodedFrame:
    """index: the frame's number in presentation order (0-based, over the whole input)."""

    index: int
    frame: av.VideoFrame


@dataclass(frozen=True)
class DetectedFrame:
    """rgb: (H, W, 3) uint8, upright; faces as the detector found them, best first."""

    decoded: DecodedFrame
    rgb: np.ndarray
    faces: list[Face]


@dataclass(frozen=True)
class AlignedFrame:
    """faces: the ones used (smoothed where asked); matrices: (2, 3) frame -> crop, one per face;
    crops: (F, R, R, 3) uint8 aligned faces (F = 0 without faces); rgb: the upright frame, None
    where the frame is written from the decoded frame itself (no face, no rotation)."""

    decoded: DecodedFrame
    rgb: np.ndarray | None
    faces: list[Face]
    matrices: list[np.ndarray]
    crops: np.ndarray

    @property
    def n_faces(self) -> int:
        return len(self.crops)


@dataclass(frozen=True)
class RestoredFrame:
    """crops: (F, R, R, 3) uint8 restored faces; codes: (F, N) int64 code indices (None: no face)."""

    aligned: AlignedFrame
    crops: np.ndarray
    codes: np.ndarray | None


@dataclass(frozen=True)
class PastedFrame:
    """frame: what the encoder gets (the input's timestamps); faces: how many were pasted."""

    decoded: DecodedFrame
    frame: av.VideoFrame
    faces: int


# -- decode -----------------------------------------------------------------------------------
class Decoder:
    """Demux + decode ``video``; iterating yields DecodedFrame and, in file order, the packets of
    ``audio``. Afterwards: ``count`` frames decoded, ``end_s`` where the last one ends (seconds),
    ``busy_s`` time spent. A decoding error is a VideoError naming ``src``."""

    def __init__(self, src: Path, container, video, audio: Iterable = (), max_frames: int | None = None):
        self.src, self.container, self.video, self.audio = src, container, video, list(audio)
        self.max_frames = max_frames
        self.count = 0
        self.end_s: float | None = None
        self.busy_s = 0.0

    def __iter__(self) -> Iterator[DecodedFrame | av.Packet]:
        t0 = time.perf_counter()
        try:
            for packet in self.container.demux(self.video, *self.audio):
                if packet.stream.index != self.video.index:
                    if packet.dts is not None:  # the empty flush packets carry no data
                        yield packet
                    continue
                for frame in packet.decode():
                    self.busy_s += time.perf_counter() - t0
                    if frame.time is not None:
                        span = (
                            float(frame.duration * frame.time_base)
                            if frame.duration and frame.time_base
                            else 0.0
                        )
                        self.end_s = frame.time + span
                    self.count += 1
                    yield DecodedFrame(self.count - 1, frame)
                    t0 = time.perf_counter()
                    if self.max_frames is not None and self.count >= self.max_frames:
                        return
        except av.error.FFmpegError as err:
            raise VideoError(f"{self.src}: decoding failed after {self.count} frames ({err})") from err


# -- detect + align ---------------------------------------------------------------------------
def to_rgb(decoded: DecodedFrame, rotation_k: int, src: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, turned upright as a player shows it (ffmpeg's autorotate)."""
    try:
        rgb = decoded.frame.to_ndarray(format="rgb24")
    except (ValueError, av.error.FFmpegError) as err:  # a frame of a damaged stream
        raise VideoError(f"{src}: frame {decoded.index} cannot be converted to RGB ({err})") from err
    return np.ascontiguousarray(np.rot90(rgb, rotation_k)) if rotation_k else rgb


def detect(decoded: DecodedFrame, detector: FaceDetector, rotation_k: int, src: Path) -> DetectedFrame:
    rgb = to_rgb(decoded, rotation_k, src)
    return DetectedFrame(decoded, rgb, detector.detect(rgb))


def frame_time(decoded: DecodedFrame) -> float:
    """The time the landmark smoother sees, seconds."""
    return float(decoded.frame.time or 0.0)


def smooth(smoother: LandmarkSmoother | None, faces: list[Face], decoded: DecodedFrame) -> list[Face]:
    """Frames must come in presentation order; a frame without faces ends the tracks."""
    return faces if smoother is None else smoother.update(faces, frame_time(decoded))


def align(
    decoded: DecodedFrame, rgb: np.ndarray | None, faces: list[Face], resolution: int, rotation_k: int
) -> AlignedFrame:
    """The aligned R x R crops of ``faces`` (landmarks final: smoothing comes before)."""
    if not faces:
        empty = np.empty((0, resolution, resolution, 3), np.uint8)
        return AlignedFrame(decoded, rgb if rotation_k else None, [], [], empty)
    matrices = [align_matrix(f.landmarks, resolution) for f in faces]
    return AlignedFrame(decoded, rgb, list(faces), matrices, warp_faces(rgb, matrices, resolution))


# -- restore ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchPolicy:
    """The one batching decision. Faces are collected across consecutive frames until
    ``batch_size`` faces or ``max_items`` held-back items (frames and audio packets), then
    restored in calls of at most ``batch_size`` faces."""

    batch_size: int
    max_items: int

    def full(self, faces: int, items: int) -> bool:
        return faces >= self.batch_size or items >= self.max_items

    def calls(self, faces: int) -> list[slice]:
        return [slice(s, s + self.batch_size) for s in range(0, faces, self.batch_size)]


def groups(frames: Iterable[AlignedFrame], policy: BatchPolicy) -> Iterator[list[AlignedFrame]]:
    """Consecutive frames in groups that ``policy`` calls full (the last one may not be)."""
    pending: list[AlignedFrame] = []
    faces = 0
    for frame in frames:
        pending.append(frame)
        faces += frame.n_faces
        if policy.full(faces, len(pending)):
            yield pending
            pending, faces = [], 0
    if pending:
        yield pending


@dataclass
class RestoreCounter:
    batches: int = 0
    busy_s: float = 0.0


def restore_frames(
    frames: list[AlignedFrame], restorer: Restorer, policy: BatchPolicy, counter: RestoreCounter | None = None
) -> list[RestoredFrame]:
    """Every face of ``frames`` restored, in ``policy.calls`` restorer calls; frames without
    faces pass through."""
    t0 = time.perf_counter()
    with_faces = [f for f in frames if f.n_faces]
    if not with_faces:
        return [RestoredFrame(f, f.crops, None) for f in frames]
    crops = np.concatenate([f.crops for f in with_faces])  # (sum F, R, R, 3)
    out = np.empty_like(crops)
    codes = []
    with torch.inference_mode():
        for part in policy.calls(len(crops)):
            restored, code_idx = restorer.restore(crops_to_batch(crops[part], restorer.device))
            out[part] = batch_to_crops(restored)
            codes.append(code_idx.cpu().numpy())
    all_codes = np.concatenate(codes)
    result, offset = [], 0
    for f in frames:
        n = f.n_faces
        if n:
            result.append(RestoredFrame(f, out[offset : offset + n], all_codes[offset : offset + n]))
            offset += n
        else:
            result.append(RestoredFrame(f, f.crops, None))
    if counter is not None:
        counter.batches += len(policy.calls(len(crops)))
        counter.busy_s += time.perf_counter() - t0
    return result


@dataclass
class CodeStability:
    """The share of code indices that stay the same between adjacent frames that both show
    exactly one face. ``update`` takes frames in presentation order; ``extend`` appends the
    tracker of the frames that follow (a later segment), counting the pair across the boundary."""

    equal: int = 0
    compared: int = 0
    pairs: int = 0
    first: np.ndarray | None = None  # (N,) the first frame's codes if it shows one face
    last: np.ndarray | None = None  # (N,) the last frame's, likewise
    frames: int = 0

    def update(self, codes: np.ndarray | None) -> None:
        """codes: (F, N) of one frame, None without faces."""
        one = codes[0] if codes is not None and len(codes) == 1 else None
        if self.frames == 0:
            self.first = one
        self._pair(self.last, one)
        self.last = one
        self.frames += 1

    def _pair(self, a: np.ndarray | None, b: np.ndarray | None) -> None:
        if a is not None and b is not None:
            self.equal += int((a == b).sum())
            self.compared += b.size
            self.pairs += 1

    def extend(self, later: CodeStability) -> None:
        if later.frames == 0:
            return
        if self.frames == 0:
            self.first = later.first
        else:
            self._pair(self.last, later.first)
        self.equal += later.equal
        self.compared += later.compared
        self.pairs += later.pairs
        self.last, self.frames = later.last, self.frames + later.frames

    @property
    def value(self) -> float | None:
        return self.equal / self.compared if self.compared else None


# -- paste ------------------------------------------------------------------------------------
def paste(restored: RestoredFrame, encoder_pix_fmt: str, rotation_k: int) -> PastedFrame:
    """The frame the encoder gets. A yuv420p frame gets only its face regions converted back from
    RGB (``yuv_patch``); other formats, and rotated frames, the whole frame; a frame without faces
    and without rotation is the decoded frame itself, never through RGB."""
    aligned = restored.aligned
    decoded = aligned.decoded
    if not aligned.n_faces:
        if aligned.rgb is None:
            frame = decoded.frame
            frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose frame types
            return PastedFrame(decoded, frame, 0)
        frame = av.VideoFrame.from_ndarray(aligned.rgb, format="rgb24")  # rotated upright
    else:
        rgb = paste_faces(aligned.rgb, restored.crops, aligned.matrices)
        if can_patch(decoded.frame, encoder_pix_fmt) and not rotation_k:
            h, w, r = rgb.shape[0], rgb.shape[1], restored.crops.shape[1]
            regions = [box for m in aligned.matrices if (box := face_region(m, r, w, h)) is not None]
            frame = patch_yuv420p(decoded.frame, rgb, regions)
        else:
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    frame.pts, frame.time_base = decoded.frame.pts, decoded.frame.time_base
    return PastedFrame(decoded, frame, aligned.n_faces)


# -- encode -----------------------------------------------------------------------------------
def output_rate(info: VideoInfo) -> Fraction:
    """The encoder's nominal rate: the input's, else frames over duration, else 25 (timestamps
    are copied from the input either way, so a VFR input stays VFR)."""
    if info.rate:
        return info.rate
    if info.frames and info.seconds:
        return Fraction(info.frames / info.seconds).limit_denominator(1001)
    return Fraction(25)


def add_video_stream(out: av.container.OutputContainer, video, info: VideoInfo, options: VideoOptions):
    """The encoder's stream: upright size, the input's time base, the options' codec."""
    stream = out.add_stream(options.codec, rate=output_rate(info))
    stream.width, stream.height = info.width, info.height  # upright: rotated inputs are turned
    odd = info.width % 2 or info.height % 2
    default = LOSSLESS_PIX_FMT.get(options.codec, "yuv444p" if odd else "yuv420p")
    stream.pix_fmt = (
        default if options.codec in LOSSLESS_PIX_FMT else output_pix_fmt(info, options.codec, default)
    )
    if video.time_base is not None:
        stream.codec_context.time_base = video.time_base  # keep the input's timestamps
    if options.codec in CRF_CODECS:
        stream.options = {"crf": str(options.crf)}
        if options.encoder_preset is not None:
            stream.options = {**stream.options, "preset": options.encoder_preset}
    return stream


def encode(out: av.container.OutputContainer, stream, pasted: PastedFrame | None) -> None:
    """Encode and mux one frame; None flushes the encoder."""
    out.mux(stream.encode(None if pasted is None else pasted.frame))


def open_output(tmp: Path, dst: Path) -> av.container.OutputContainer:
    """The output container at ``tmp`` (the atomic temporary of ``dst``, whose name errors carry)."""
    try:
        return av.open(str(tmp), "w")
    except (av.error.FFmpegError, ValueError) as err:
        raise VideoError(f"{dst}: cannot write this container ({err})") from err


def close_output(out: av.container.OutputContainer, dst: Path, raise_errors: bool) -> None:
    """Write the trailer; after a failure, closing only releases the file (its error is moot)."""
    try:
        out.close()
    except av.error.FFmpegError as err:
        if raise_errors:
            raise VideoError(f"{dst}: finishing the output failed ({err})") from err
        log.debug("closing the failed output %s: %s", dst, err)
