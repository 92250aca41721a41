"""Video face restoration: decode, detect, align, restore in batches, paste back, encode.

The stages (runtime/video_stages.py) overlap, joined by bounded queues so memory stays flat
on long videos:

    reader (thread)        demux + decode (PyAV); audio packets ride along in file order
    detect (N threads)     RGB conversion + face detection, frames in any order
    align (thread)         back in file order: landmark smoothing, warp to aligned crops
    restore (caller)       batches faces across consecutive frames (``BatchPolicy``)
    paste (thread)         blends the restored faces back into their frames (YUV regions only)
    writer (thread)        encode, mux (audio remuxed unchanged)

Frames without faces are re-encoded from the decoded frame itself, never through RGB. The
output is written to a temporary file and renamed at the end, so a failure leaves nothing
under the output name. The segment path (runtime/segments.py) runs the same stages.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import av
import numpy as np

from daefr.atomic import atomic_path
from daefr.runtime.backends.base import Restorer
from daefr.runtime.face.detector import FaceDetector
from daefr.runtime.face.smooth import LandmarkSmoother
from daefr.runtime.video_input import (
    VideoError,  # also imported from here by runtime/bench.py
    VideoInfo,
    check_complete,
    check_output_container,
    open_input,
    probe,
)
from daefr.runtime.video_stages import (
    CRF_CODECS,
    STAGES,
    AlignedFrame,
    BatchPolicy,
    CodeStability,
    DecodedFrame,
    Decoder,
    DetectedFrame,
    PastedFrame,
    RestoreCounter,
    RestoredFrame,
    add_video_stream,
    align,
    close_output,
    detect,
    encode,
    open_output,
    output_rate,
    paste,
    restore_frames,
    smooth,
)

log = logging.getLogger(__name__)

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


# -- the threaded pipeline: the stages of video_stages joined by bounded queues ---------------
@dataclass
class _Item:
    """What travels through the queues: a stage's record (or an audio packet) with its place in
    the demuxed stream (for reordering after the detect threads) and its start time."""

    seq: int
    record: object  # DecodedFrame, DetectedFrame, AlignedFrame, RestoredFrame, PastedFrame, av.Packet
    t_start: float = 0.0


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
        rotation_k: int,
    ) -> None:
        self.src, self.restorer, self.detector, self.options = src, restorer, detector, options
        self.rotation_k = rotation_k  # quarter turns counterclockwise that make a stored frame upright
        self.progress = progress
        self.policy = BatchPolicy(options.batch_size, options.queue_frames)
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        depth = options.queue_frames
        self.decoded: queue.Queue = queue.Queue(depth)
        self.detected: queue.Queue = queue.Queue(depth)
        self.aligned: queue.Queue = queue.Queue(depth)
        self.restored: queue.Queue = queue.Queue(depth)
        self.pasted: queue.Queue = queue.Queue(depth)
        self.stage_s = dict.fromkeys(STAGES, 0.0)
        self._stage_lock = threading.Lock()
        self.latencies: list[float] = []
        self.stats = VideoStats()
        self.stability = CodeStability()
        self.counter = RestoreCounter()
        self.decoder: Decoder | None = None

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

    # -- stage threads ----------------------------------------------------------------------
    def read(self, decoder: Decoder) -> None:
        try:
            for seq, record in enumerate(decoder):
                self.put(self.decoded, _Item(seq, record))
        finally:
            self.add_time("decode", decoder.busy_s)
            for _ in range(self.options.detect_workers):
                self.put(self.decoded, _END)

    def detect(self) -> None:
        """One of ``detect_workers`` threads; frames leave in any order."""
        while (item := self.get(self.decoded)) is not _END:
            if isinstance(item.record, DecodedFrame):
                item.t_start = t0 = time.perf_counter()
                item.record = detect(item.record, self.detector, self.rotation_k, self.src)
                self.add_time("detect", time.perf_counter() - t0)
            self.put(self.detected, item)
        self.put(self.detected, _END)

    def align(self) -> None:
        """Restores file order (smoothing needs it), then smooths landmarks and warps crops."""
        resolution = self.restorer.resolution
        smoother = LandmarkSmoother() if self.options.smooth else None
        waiting: dict[int, _Item] = {}  # seq -> item that arrived early
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
                if isinstance(ready.record, DetectedFrame):
                    t0 = time.perf_counter()
                    det = ready.record
                    faces = smooth(smoother, det.faces, det.decoded)
                    ready.record = align(det.decoded, det.rgb, faces, resolution, self.rotation_k)
                    if faces:
                        self.add_time("align", time.perf_counter() - t0)
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
            while not self.policy.full(n_faces, len(pending)):
                try:
                    nxt = self.aligned.get_nowait()
                except queue.Empty:
                    break
                if nxt is _END:
                    done = True
                    break
                pending.append(nxt)
                n_faces += _n_faces(nxt)
            frames = [p for p in pending if isinstance(p.record, AlignedFrame)]
            restored = iter(
                restore_frames([p.record for p in frames], self.restorer, self.policy, self.counter)
            )
            for p in pending:
                if isinstance(p.record, AlignedFrame):
                    p.record = next(restored)
                    self.stability.update(p.record.codes)
                self.put(self.restored, p)
        self.put(self.restored, _END)

    def paste(self, encoder_pix_fmt: str) -> None:
        """In its own thread so that paste-back and encoding overlap instead of adding up (at
        720p on one CI core: paste 4.4 ms, x264 24 to 55 ms per frame, reports/cpu/stages_720p*.txt)."""
        while (item := self.get(self.restored)) is not _END:
            if isinstance(item.record, RestoredFrame):
                t0 = time.perf_counter()
                faces = item.record.aligned.n_faces
                item.record = paste(item.record, encoder_pix_fmt, self.rotation_k)
                if faces:
                    self.add_time("paste", time.perf_counter() - t0)
            self.put(self.pasted, item)
        self.put(self.pasted, _END)

    def write(
        self, out: av.container.OutputContainer, vstream: av.video.stream.VideoStream, audio_map: dict
    ) -> None:
        while (item := self.get(self.pasted)) is not _END:
            if isinstance(item.record, av.Packet):
                item.record.stream = audio_map[item.record.stream.index]
                out.mux(item.record)
                continue
            t0 = time.perf_counter()
            pasted: PastedFrame = item.record
            if pasted.faces:
                self.stats.frames_with_faces += 1
                self.stats.faces += pasted.faces
            encode(out, vstream, pasted)
            t1 = time.perf_counter()
            self.latencies.append(t1 - item.t_start)
            self.add_time("encode", t1 - t0)
            self.stats.frames += 1
            if self.progress is not None:
                self.progress(1)
        encode(out, vstream, None)


def _n_faces(item: _Item) -> int:
    return item.record.n_faces if isinstance(item.record, AlignedFrame) else 0


def _output_streams(src: Path, out, video, audio: list, info: VideoInfo, options: VideoOptions):
    """The output's video stream and audio streams (input index -> output stream)."""
    try:
        return add_video_stream(out, video, info, options), {
            a.index: out.add_stream_from_template(a) for a in audio
        }
    except (ValueError, TypeError, AttributeError) as err:  # a damaged stream header PyAV cannot copy
        raise VideoError(
            f"{src}: its streams cannot be written to the output ({type(err).__name__}: {err})"
        ) from err


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
    pipe = _Pipeline(src, restorer, detector, options, progress, info.rotation_k)
    decoder = Decoder(src, container, video, audio, options.max_frames)
    t_start = time.perf_counter()
    try:
        with atomic_path(dst) as tmp:
            out = open_output(tmp, dst)
            ok = False
            try:
                vstream, audio_map = _output_streams(src, out, video, audio, info, options)
                stages = [("read", lambda: pipe.read(decoder))]
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
                check_complete(src, info, decoder.count, decoder.end_s, options.max_frames)
                ok = True
            except av.error.FFmpegError as err:
                raise VideoError(f"{dst}: encoding or muxing failed ({err})") from err
            finally:
                pipe.stop.set()
                close_output(out, dst, raise_errors=ok)
    finally:
        container.close()
    stats = pipe.stats
    stats.batches = pipe.counter.batches
    stats.code_stability, stats.code_stability_pairs = pipe.stability.value, pipe.stability.pairs
    pipe.stage_s["restore"] += pipe.counter.busy_s
    stats.wall_s = time.perf_counter() - t_start
    stats.fps = stats.frames / stats.wall_s if stats.wall_s > 0 else 0.0
    stats.latency_ms = latency_summary(pipe.latencies)
    stats.stage_s = pipe.stage_s
    stats.video = video_report(
        src, dst, info, options, describe_restorer(restorer), vstream.pix_fmt, len(audio)
    )
    log.info(
        "%s: %d frames (%d with faces, %d faces) in %.1f s, %.1f frames/s",
        dst, stats.frames, stats.frames_with_faces, stats.faces, stats.wall_s, stats.fps,
    )  # fmt: skip
    return stats


def describe_restorer(restorer: Restorer) -> dict[str, object]:
    return {"backend": restorer.name, "device": str(restorer.device), "resolution": restorer.resolution}


def video_report(
    src: Path,
    dst: Path,
    info: VideoInfo,
    options: VideoOptions,
    restorer: dict[str, object],
    output_pix_fmt: str,
    audio_streams: int,
) -> dict[str, object]:
    """``VideoStats.video``: what was read and written, with what (``restorer``: describe_restorer)."""
    rate = output_rate(info)
    return {
        "input": str(src),
        "output": str(dst),
        "width": info.width,
        "height": info.height,
        "rate": str(rate),
        "fps_nominal": float(rate),
        **info.to_dict(),
        "output_pix_fmt": output_pix_fmt,
        "audio_streams": audio_streams,
        "codec": options.codec,
        **restorer,
        "batch_size": options.batch_size,
        "smooth": options.smooth,
        "detect_workers": options.detect_workers,
    }
