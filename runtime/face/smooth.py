"""Landmark smoothing across video frames (temporal stability).

Detector landmarks jitter by a pixel or two from frame to frame; after alignment that jitter
becomes a shaking crop and, for a codebook model, flickering code choices. A One-Euro filter
(Casiez et al., CHI 2012) per tracked face removes the jitter of a still face while following
fast motion with little lag: its cutoff frequency rises with the landmarks' speed.
Speeds are measured in face sizes per second so the defaults hold at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from daefr.runtime.face.detector import Face


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter over a (5, 2) landmark array; ``beta`` is per face size per second."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 2.0, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x: np.ndarray | None = None
        self.dx = 0.0

    def __call__(self, x: np.ndarray, dt: float, face_size: float) -> np.ndarray:
        if self.x is None or dt <= 0:
            self.x = x.astype(np.float64)
            return x
        # Speed of the landmarks' centroid: averaging the five points keeps jitter from
        # reading as motion (which would open the filter and let the jitter through).
        speed = float(np.linalg.norm((x - self.x).mean(0))) / dt / max(face_size, 1.0)  # face sizes / s
        self.dx += _alpha(self.d_cutoff, dt) * (speed - self.dx)
        cutoff = self.min_cutoff + self.beta * self.dx
        self.x = self.x + _alpha(cutoff, dt) * (x - self.x)
        return self.x.astype(np.float32)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class _Track:
    box: np.ndarray
    filter: OneEuroFilter


class LandmarkSmoother:
    """Tracks faces across frames by box overlap and smooths each track's landmarks.

    ``update(faces, t)`` with the frame's time ``t`` in seconds returns the faces with smoothed
    landmarks (boxes and scores unchanged). A face with no overlapping track (IoU below
    ``min_iou``) starts a new track; tracks not seen in a frame end.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 2.0, min_iou: float = 0.3) -> None:
        self.min_cutoff, self.beta, self.min_iou = min_cutoff, beta, min_iou
        self.tracks: list[_Track] = []
        self.t: float | None = None

    def update(self, faces: list[Face], t: float) -> list[Face]:
        dt = 0.0 if self.t is None else t - self.t
        self.t = t
        free = list(self.tracks)
        tracks, out = [], []
        for face in faces:  # best score first: the strongest detections pick their tracks first
            ious = [box_iou(face.box, tr.box) for tr in free]
            best = int(np.argmax(ious)) if ious else -1
            if best >= 0 and ious[best] >= self.min_iou:
                track = free.pop(best)
            else:
                track = _Track(face.box, OneEuroFilter(self.min_cutoff, self.beta))
            size = float(np.sqrt(np.prod(face.box[2:] - face.box[:2])))
            marks = track.filter(face.landmarks, dt, size)
            track.box = face.box
            tracks.append(track)
            out.append(replace(face, landmarks=np.asarray(marks, np.float32)))
        self.tracks = tracks
        return out
