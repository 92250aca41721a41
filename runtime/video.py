"""Video face restoration: decode, detect, align, restore in batches, paste back, encode.

The stages overlap, joined by bounded queues so memory stays flat on long videos:

    reader (thread)        demux + decode (PyAV); audio packets ride along in file order
    detect (N threads)     RGB conversion + face detection, frames in any order
    align (thread)         back in file order: landmark smoothing, warp to aligned crops
    restore (caller)       batches faces across consecutive frames, one ``restorer.restore`` each
    paste (thread)         blends the restored faces back into their frames (YUV regions only)
    writer (thread)        encode, mux (audio remuxed unchanged)

Frames without faces are re-encoded from the decoded frame itself, never through RGB. The
output is written to a temporary file and renamed at the end, so a failure leaves nothing
under the output name.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from daefr.atomic import atomic_path
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
from daefr.runtime.video_input import (
    VideoError,  # also imported from here by runtime/bench.py
    VideoInfo,
    check_complete,
    check_output_container,
    open_input,
    output_pix_fmt,
    probe,
)
from daefr.runtime.yuv_patch import can_patch, patch_yuv420p

log = logging.getLogger(__name__)

CRF_CODECS = ("libx264", "libx264rgb", "libx265")
# x264/x265 speed presets, fastest first. "medium" is their default: at 720p x264 cost 54.9 ms
# per frame on one CI core, "veryfast" 24.3 ms (reports/cpu/stages_720p*.txt).
ENCODER_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)  # fmt: skip


@dataclass(frozen=True)
class VideoOptions:
    """batch_size: faces per restore call (collected across frames); queue_frames: depth of
    each queue between stages (bounds memory and latency); codec/crf/encoder_preset: the video
    encoder (encoder_preset: an x264/x265 speed preset, None for the encoder's default)."""

    batch_size: int = 4
    smooth: bool = False
    max_frames: int | None = None
    codec: str = "libx264"
    crf: int = 18
    encoder_preset: str | None = None
    queue_frames: int = 8
    detect_workers: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"invalid VideoOptions: batch_size={self.batch_size}; must be >= 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"invalid VideoOptions: max_frames={self.max_frames}; must be >= 1 or None")
        if self.detect_workers < 1:
            raise ValueError(f"invalid VideoOptions: detect_workers={self.detect_workers}; must be >= 1")
        if self.queue_frames < 1:
            raise ValueError(f"invalid VideoOptions: queue_frames={self.queue_frames}; must be >= 1")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"invalid VideoOptions: crf={self.crf}; must be in [0, 51]")
        if self.codec not in av.codecs_available or not _is_video_encoder(self.codec):
            raise ValueError(
                f"invalid VideoOptions: codec={self.codec!r}; not a video encoder in this PyAV build "
                "(e.g. libx264, libx265, ffv1, libx264rgb)"
            )
        if self.encoder_preset is not None and (
            self.codec not in CRF_CODECS or self.encoder_preset not in ENCODER_PRESETS
        ):
            raise ValueError(
                f"invalid VideoOptions: encoder_preset={self.encoder_preset!r} with codec={self.codec!r}; "
                f"presets are for {list(CRF_CODECS)}: {', '.join(ENCODER_PRESETS)}"
            )


def _is_video_encoder(name: str) -> bool:
    try:
        return av.Codec(name, "w").type == "video"
    except (ValueError, av.error.FFmpegError):
        return False


@dataclass
class VideoStats:
    """What a run did and how fast. Latency: per frame, from the start of its detection to its
    hand-over to the encoder (queueing between stages included). stage_s: busy seconds per
    stage, summed over that stage's threads."""

    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    batches: int = 0
    wall_s: float = 0.0
    fps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=dict)
    video: dict[str, object] = field(default_factory=dict)
    # Temporal stability: the share of code indices that stay the same between adjacent frames
    # that both show exactly one face (None when no such pair exists). A still face should
    # keep its codes; flicker shows up here first.
    code_stability: float | None = None
    code_stability_pairs: int = 0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def latency_summary(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {}
    ms = np.asarray(latencies_s) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(ms.mean()),
        "max": float(ms.max()),
    }


# -- items that travel through the queues ---------------------------------------------------
@dataclass
class _Frame:
    seq: int  # position in the demuxed stream (frames and audio packets), for reordering
    frame: av.VideoFrame
    t_start: float = 0.0
    rgb: np.ndarray | None = None
    faces: list[Face] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)
    crops: np.ndarray | None = None  # (F, R, R, 3) uint8, aligned, then restored
    codes: np.ndarray | None = None  # (F, N) int64 code indices of the restored faces
    restored_frame: av.VideoFrame | None = None  # what the encoder gets, faces pasted back


@dataclass
class _Packet:
    seq: int
    packet: av.Packet


_END = object()


class _Stopped(Exception):
    """Raised inside a stage when another stage failed."""


class _Pipeline:
    def __init__(
        self,
        src: Path,
        restorer: Restorer,
        detector: FaceDetector,
        options: VideoOptions,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.src, self.restorer, self.detector, self.options = src, restorer, detector, options
        self.rotation_k = 0  # quarter turns counterclockwise that make a stored frame upright
        self.decoded_end_s: float | None = None  # where the last decoded frame ends, seconds
        self.output_pix_fmt = ""
        self.progress = progress
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        depth = options.queue_frames
        self.decoded: queue.Queue = queue.Queue(depth)
        self.detected: queue.Queue = queue.Queue(depth)
        self.aligned: queue.Queue = queue.Queue(depth)
        self.restored: queue.Queue = queue.Queue(depth)
        self.pasted: queue.Queue = queue.Queue(depth)
        self.stage_s = dict.fromkeys(("decode", "detect", "align", "restore", "paste", "encode"), 0.0)
        self._stage_lock = threading.Lock()
        self.latencies: list[float] = []
        self.stats = VideoStats()
        self.decoded_count = 0
        self._last_codes: np.ndarray | None = None
        self._equal_codes = self._compared_codes = 0

    def add_time(self, stage: str, seconds: float) -> None:
        with self._stage_lock:  # several detect workers add to the same key
            self.stage_s[stage] += seconds

    # -- plumbing ---------------------------------------------------------------------------
    def put(self, q: queue.Queue, item: object) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self, q: queue.Queue) -> object:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue

    def guarded(self, stage: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                stage()
            except _Stopped:
                pass
            except BaseException as err:  # handed to the caller's thread, re-raised there
                self.errors.append(err)
                self.stop.set()

        return run

    # -- stages -----------------------------------------------------------------------------
    def read(self, container: av.container.InputContainer, video, audio: list) -> None:
        limit = self.options.max_frames
        seq = 0
        t0 = time.perf_counter()
        try:
            for packet in container.demux(video, *audio):
                if packet.stream.index != video.index:
                    if packet.dts is not None:  # the empty flush packets carry no data
                        self.put(self.decoded, _Packet(seq, packet))
                        seq += 1
                    continue
                for frame in packet.decode():
                    self.add_time("decode", time.perf_counter() - t0)
                    if frame.time is not None:
                        span = (
                            float(frame.duration * frame.time_base)
                            if frame.duration and frame.time_base
                            else 0.0
                        )
                        self.decoded_end_s = frame.time + span
                    self.put(self.decoded, _Frame(seq, frame))
                    seq += 1
                    self.decoded_count += 1
                    t0 = time.perf_counter()
                    if limit is not None and self.decoded_count >= limit:
                        return
        except av.error.FFmpegError as err:
            raise VideoError(
                f"{self.src}: decoding failed after {self.decoded_count} frames ({err})"
            ) from err
        finally:
            for _ in range(self.options.detect_workers):
                self.put(self.decoded, _END)

    def detect(self) -> None:
        """One of ``detect_workers`` threads; frames leave in any order."""
        while (item := self.get(self.decoded)) is not _END:
            if isinstance(item, _Frame):
                item.t_start = t0 = time.perf_counter()
                try:
                    item.rgb = item.frame.to_ndarray(format="rgb24")
                except (ValueError, av.error.FFmpegError) as err:  # a frame of a damaged stream
                    raise VideoError(
                        f"{self.src}: frame {item.seq} cannot be converted to RGB ({err})"
                    ) from err
                if self.rotation_k:  # upright, as a player shows it (ffmpeg's autorotate)
                    item.rgb = np.ascontiguousarray(np.rot90(item.rgb, self.rotation_k))
                item.faces = self.detector.detect(item.rgb)
                self.add_time("detect", time.perf_counter() - t0)
            self.put(self.detected, item)
        self.put(self.detected, _END)

    def align(self) -> None:
        """Restores file order (smoothing needs it), then smooths landmarks and warps crops."""
        resolution = self.restorer.resolution
        smoother = LandmarkSmoother() if self.options.smooth else None
        waiting: dict[int, object] = {}  # seq -> item that arrived early
        next_seq, ended = 0, 0
        while ended < self.options.detect_workers:
            item = self.get(self.detected)
            if item is _END:
                ended += 1
                continue
            waiting[item.seq] = item
            while next_seq in waiting:
                ready = waiting.pop(next_seq)
                next_seq += 1
                if isinstance(ready, _Frame) and ready.faces:
                    t0 = time.perf_counter()
                    faces = ready.faces
                    if smoother is not None:
                        faces = smoother.update(faces, float(ready.frame.time or 0.0))
                    ready.matrices = [align_matrix(f.landmarks, resolution) for f in faces]
                    ready.crops = warp_faces(ready.rgb, ready.matrices, resolution)
                    self.add_time("align", time.perf_counter() - t0)
                elif isinstance(ready, _Frame):
                    if not self.rotation_k:
                        ready.rgb = None  # written from the decoded frame itself
                    if smoother is not None:
                        smoother.update([], float(ready.frame.time or 0.0))  # a gap ends the tracks
                self.put(self.aligned, ready)
        self.put(self.aligned, _END)

    def restore(self) -> None:
        """Runs in the caller's thread: the restorer (and its CUDA context) stays there."""
        done = False
        while not done:
            item = self.get(self.aligned)
            if item is _END:
                break
            pending, n_faces = [item], _n_faces(item)
            # Take whatever is ready without waiting: a full batch when the restorer is the
            # bottleneck, a small one (low latency) when it is not.
            while n_faces < self.options.batch_size and len(pending) < self.options.queue_frames:
                try:
                    nxt = self.aligned.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    done = True
                    break
                pending.append(nxt)
                n_faces += _n_faces(nxt)
            if n_faces:
                self._restore_batch([p for p in pending if _n_faces(p)])
            for p in pending:
                self._track_code_stability(p)
                self.put(self.restored, p)
        self.put(self.restored, _END)

    def _track_code_stability(self, item: object) -> None:
        """Frames arrive here in stream order; compare each single-face frame with the last."""
        if not isinstance(item, _Frame):
            return  # audio packets do not break a run of frames
        codes = item.codes[0] if item.codes is not None and len(item.codes) == 1 else None
        if codes is not None and self._last_codes is not None:
            self._equal_codes += int((codes == self._last_codes).sum())
            self._compared_codes += codes.size
            self.stats.code_stability_pairs += 1
            self.stats.code_stability = self._equal_codes / self._compared_codes
        self._last_codes = codes

    def _restore_batch(self, frames: list[_Frame]) -> None:
        t0 = time.perf_counter()
        crops = np.concatenate([f.crops for f in frames])
        out = np.empty_like(crops)
        codes = []
        bs = self.options.batch_size
        with torch.inference_mode():
            for start in range(0, len(crops), bs):
                batch = crops_to_batch(crops[start : start + bs], self.restorer.device)
                restored, code_idx = self.restorer.restore(batch)
                out[start : start + bs] = batch_to_crops(restored)
                codes.append(code_idx.cpu().numpy())
                self.stats.batches += 1
        all_codes = np.concatenate(codes)
        offset = 0
        for f in frames:
            f.codes = all_codes[offset : offset + len(f.crops)]
            f.crops = out[offset : offset + len(f.crops)]
            offset += len(f.crops)
        self.add_time("restore", time.perf_counter() - t0)

    def paste(self, encoder_pix_fmt: str) -> None:
        """Blends restored faces into their frames in stream order, in its own thread so that
        paste-back and encoding overlap instead of adding up (at 720p on one CI core: paste
        4.4 ms, x264 24 to 55 ms per frame, reports/cpu/stages_720p*.txt). A yuv420p frame gets
        only its face regions converted back from RGB (``yuv_patch``); other formats the whole
        frame."""
        while (item := self.get(self.restored)) is not _END:
            if isinstance(item, _Frame) and item.crops is None and item.rgb is not None:
                item.restored_frame = av.VideoFrame.from_ndarray(item.rgb, format="rgb24")  # rotated upright
                item.rgb = None
            elif isinstance(item, _Frame) and item.crops is not None:
                t0 = time.perf_counter()
                rgb = paste_faces(item.rgb, item.crops, item.matrices)
                if can_patch(item.frame, encoder_pix_fmt) and not self.rotation_k:
                    h, w, r = rgb.shape[0], rgb.shape[1], item.crops.shape[1]
                    regions = [box for m in item.matrices if (box := face_region(m, r, w, h)) is not None]
                    item.restored_frame = patch_yuv420p(item.frame, rgb, regions)
                else:
                    item.restored_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                item.rgb = None
                self.add_time("paste", time.perf_counter() - t0)
            self.put(self.pasted, item)
        self.put(self.pasted, _END)

    def write(
        self, out: av.container.OutputContainer, vstream: av.video.stream.VideoStream, audio_map: dict
    ) -> None:
        while (item := self.get(self.pasted)) is not _END:
            if isinstance(item, _Packet):
                item.packet.stream = audio_map[item.packet.stream.index]
                out.mux(item.packet)
                continue
            t0 = time.perf_counter()
            if item.restored_frame is not None:
                frame = item.restored_frame
                frame.pts, frame.time_base = item.frame.pts, item.frame.time_base
                if item.crops is not None:
                    self.stats.frames_with_faces += 1
                    self.stats.faces += len(item.crops)
            else:
                frame = item.frame
                frame.pict_type = av.video.frame.PictureType.NONE  # let the encoder choose frame types
            out.mux(vstream.encode(frame))
            t1 = time.perf_counter()
            self.latencies.append(t1 - item.t_start)
            self.add_time("encode", t1 - t0)
            self.stats.frames += 1
            if self.progress is not None:
                self.progress(1)
        out.mux(vstream.encode(None))


def _n_faces(item: object) -> int:
    return len(item.crops) if isinstance(item, _Frame) and item.crops is not None else 0


def _add_video_stream(out: av.container.OutputContainer, video, info: VideoInfo, options: VideoOptions):
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


def _output_streams(src: Path, out, video, audio: list, info: VideoInfo, options: VideoOptions):
    """The output's video stream and audio streams (input index -> output stream)."""
    try:
        return _add_video_stream(out, video, info, options), {
            a.index: out.add_stream_from_template(a) for a in audio
        }
    except (ValueError, TypeError, AttributeError) as err:  # a damaged stream header PyAV cannot copy
        raise VideoError(
            f"{src}: its streams cannot be written to the output ({type(err).__name__}: {err})"
        ) from err


def output_rate(info: VideoInfo) -> Fraction:
    """The encoder's nominal rate: the input's, else frames over duration, else 25 (timestamps
    are copied from the input either way, so a VFR input stays VFR)."""
    if info.rate:
        return info.rate
    if info.frames and info.seconds:
        return Fraction(info.frames / info.seconds).limit_denominator(1001)
    return Fraction(25)


def restore_video(
    src: str | Path,
    dst: str | Path,
    restorer: Restorer,
    detector: FaceDetector,
    options: VideoOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> VideoStats:
    """Restore every face of every frame of ``src`` into ``dst`` (container from its suffix).

    Keeps the frame count, timestamps and frame rate, and remuxes the audio streams. Raises
    ``VideoError`` for an unreadable, corrupt or truncated input; ``dst`` is then not created.
    """
    src, dst = Path(src), Path(dst)
    options = options or VideoOptions()
    check_output_container(dst)
    info = probe(src)
    container, video, audio = open_input(src)
    pipe = _Pipeline(src, restorer, detector, options, progress)
    pipe.rotation_k = info.rotation_k
    t_start = time.perf_counter()
    try:
        with atomic_path(dst) as tmp:
            try:
                out = av.open(str(tmp), "w")
            except (av.error.FFmpegError, ValueError) as err:
                raise VideoError(f"{dst}: cannot write this container ({err})") from err
            ok = False
            try:
                vstream, audio_map = _output_streams(src, out, video, audio, info, options)
                pipe.output_pix_fmt = vstream.pix_fmt
                stages = [("read", lambda: pipe.read(container, video, audio))]
                stages += [(f"detect{i}", pipe.detect) for i in range(options.detect_workers)]
                stages += [("align", pipe.align), ("paste", lambda: pipe.paste(vstream.pix_fmt))]
                stages += [("write", lambda: pipe.write(out, vstream, audio_map))]
                threads = [threading.Thread(target=pipe.guarded(fn), name=f"daefr-{n}") for n, fn in stages]
                for t in threads:
                    t.start()
                pipe.guarded(pipe.restore)()
                for t in threads:
                    t.join()
                if pipe.errors:
                    raise pipe.errors[0]
                check_complete(src, info, pipe.decoded_count, pipe.decoded_end_s, options.max_frames)
                ok = True
            except av.error.FFmpegError as err:
                raise VideoError(f"{dst}: encoding or muxing failed ({err})") from err
            finally:
                pipe.stop.set()
                _close_output(out, dst, raise_errors=ok)
    finally:
        container.close()
    stats = pipe.stats
    stats.wall_s = time.perf_counter() - t_start
    stats.fps = stats.frames / stats.wall_s if stats.wall_s > 0 else 0.0
    stats.latency_ms = latency_summary(pipe.latencies)
    stats.stage_s = pipe.stage_s
    stats.video = {
        "input": str(src),
        "output": str(dst),
        "width": info.width,
        "height": info.height,
        "rate": str(vstream_rate := output_rate(info)),
        "fps_nominal": float(vstream_rate),
        **info.to_dict(),
        "output_pix_fmt": pipe.output_pix_fmt,
        "audio_streams": len(audio),
        "codec": options.codec,
        "backend": restorer.name,
        "device": str(restorer.device),
        "resolution": restorer.resolution,
        "batch_size": options.batch_size,
        "smooth": options.smooth,
        "detect_workers": options.detect_workers,
    }
    log.info(
        "%s: %d frames (%d with faces, %d faces) in %.1f s, %.1f frames/s",
        dst, stats.frames, stats.frames_with_faces, stats.faces, stats.wall_s, stats.fps,
    )  # fmt: skip
    return stats


def _close_output(out: av.container.OutputContainer, dst: Path, raise_errors: bool) -> None:
    """Write the trailer; after a failure, closing only releases the file (its error is moot)."""
    try:
        out.close()
    except av.error.FFmpegError as err:
        if raise_errors:
            raise VideoError(f"{dst}: finishing the output failed ({err})") from err
        log.debug("closing the failed output %s: %s", dst, err)
