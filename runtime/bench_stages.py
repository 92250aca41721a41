"""``daefr-bench stages``: what each CPU stage of the video pipeline costs per frame, on one core.

The network is left out (the crops are pasted back unrestored): these are the stages that
run on the CPU beside the GPU, and the one with the highest cost per frame, divided by the
threads it gets, bounds the frames/s any backend can reach. Each stage is timed alone,
single-threaded, on a synthetic clip with one face per frame. The pipeline itself gives
detection up to 4 threads and lets x264 use every core; here the encoder gets one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from daefr.runtime.clips import synthetic_frames, write_clip
from daefr.runtime.face.align import align_matrix, face_region, paste_faces, warp_faces
from daefr.runtime.face.detector import FaceDetector
from daefr.runtime.yuv_patch import can_patch, patch_yuv420p

STAGES = ("decode", "to_rgb", "detect", "warp", "paste", "to_yuv", "encode")


@dataclass(frozen=True)
class StageCost:
    """ms_mean: total time over frames (for the encoder, its final flush included); p50/p95:
    of the per-frame calls."""

    stage: str
    ms_mean: float
    ms_p50: float
    ms_p95: float

    @property
    def max_fps(self) -> float:
        """Frames/s this stage allows on one core. From the mean: an encoder with lookahead
        works in bursts and does much of its work in the final flush."""
        return 1e3 / self.ms_mean if self.ms_mean > 0 else float("inf")

    def to_dict(self) -> dict[str, float | str]:
        return {**asdict(self), "max_fps_one_core": self.max_fps}


def _timed(fn: Callable[..., object], *args: object, **kwargs: object) -> tuple[object, float]:
    """(fn(*args, **kwargs), seconds it took)."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


@contextmanager
def _opencv_on_one_thread() -> Iterator[None]:
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def measure_stages(
    detector: FaceDetector,
    width: int,
    height: int,
    frames: int,
    resolution: int,
    workdir: Path,
    encoder_preset: str = "medium",
) -> list[StageCost]:
    """Per-frame cost of each stage over ``frames`` frames of a ``width`` x ``height`` clip with
    one face per frame, crops of ``resolution``; libx264 at crf 18 with ``encoder_preset``.
    Runs with OpenCV, the decoder and the encoder on one thread each."""
    clip = write_clip(workdir / "stages.mp4", synthetic_frames(frames, width, height), audio_codec=None)
    times: dict[str, list[float]] = {stage: [] for stage in STAGES}
    with (
        _opencv_on_one_thread(),
        av.open(str(clip)) as src,
        av.open(str(workdir / "stages_out.mp4"), "w") as dst,
    ):
        stream = src.streams.video[0]
        stream.thread_type, stream.thread_count = "SLICE", 1
        out = dst.add_stream("libx264", rate=Fraction(25))
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        out.options = {"crf": "18", "threads": "1", "preset": encoder_preset}
        decoded_iter = src.decode(stream)
        while True:
            frame, dt = _timed(next, decoded_iter, None)
            if frame is None:
                break
            times["decode"].append(dt)
            rgb, dt = _timed(frame.to_ndarray, format="rgb24")
            times["to_rgb"].append(dt)
            faces, dt = _timed(detector.detect, rgb)
            times["detect"].append(dt)
            if not faces:
                continue
            matrices = [align_matrix(faces[0].landmarks, resolution)]
            crops, dt = _timed(warp_faces, rgb, matrices, resolution)
            times["warp"].append(dt)
            pasted, dt = _timed(paste_faces, rgb, crops, matrices)
            times["paste"].append(dt)
            regions = [face_region(matrices[0], resolution, width, height)]
            if can_patch(frame, out.pix_fmt):
                restored, dt = _timed(patch_yuv420p, frame, pasted, regions)
            else:
                restored, dt = _timed(av.VideoFrame.from_ndarray, pasted, format="rgb24")
            times["to_yuv"].append(dt)
            restored.pts, restored.time_base = frame.pts, frame.time_base
            packets, dt = _timed(out.encode, restored)
            times["encode"].append(dt)
            dst.mux(packets)
        packets, flush_s = _timed(out.encode, None)  # lookahead: much of the work happens here
        dst.mux(packets)
    if not times["warp"]:
        raise RuntimeError("no face was detected in the synthetic clip")
    extra_s = {"encode": flush_s}
    return [
        StageCost(
            stage,
            float((ms.sum() + 1e3 * extra_s.get(stage, 0.0)) / ms.size),
            float(np.percentile(ms, 50)),
            float(np.percentile(ms, 95)),
        )
        for stage in STAGES
        if (ms := np.asarray(times[stage]) * 1e3).size
    ]


def format_stages(costs: list[StageCost]) -> str:
    lines = [f"{'stage':8} {'ms mean':>8} {'ms p50':>8} {'ms p95':>8} {'max frames/s, one core':>24}"]
    lines += [
        f"{c.stage:8} {c.ms_mean:8.2f} {c.ms_p50:8.2f} {c.ms_p95:8.2f} {c.max_fps:24.0f}" for c in costs
    ]
    return "\n".join(lines)
