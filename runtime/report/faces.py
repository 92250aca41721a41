"""The report's faces: public-domain portraits that ship in registry packages, aligned to the
FFHQ template with the runtime's detector, then degraded with the paper's pipeline (Eq. 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from daefr.degradation import STAGE_DEGRADATIONS, random_degrade


@dataclass(frozen=True)
class ReportFace:
    name: str
    clean: np.ndarray  # (R, R, 3) uint8, aligned
    degraded: np.ndarray  # (R, R, 3) uint8, what the model is given
    params: dict[str, object]  # the degradation that was drawn


def source_portraits() -> dict[str, np.ndarray]:
    """Public-domain faces bundled with scikit-image and matplotlib (whichever is installed)."""
    portraits: dict[str, np.ndarray] = {}
    try:
        from skimage import data

        portraits["astronaut"] = data.astronaut()
    except ImportError:
        pass
    try:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            portraits["grace_hopper"] = np.asarray(Image.open(f).convert("RGB"))
    except ImportError:
        pass
    if not portraits:
        raise RuntimeError("no bundled portraits: install scikit-image or matplotlib")
    return portraits


def align(rgb: np.ndarray, resolution: int) -> np.ndarray:
    """The most confident face warped to the FFHQ template at R x R."""
    from daefr.runtime.face.align import align_matrix, warp_faces
    from daefr.runtime.face.detector import RetinaFaceDetector

    faces = RetinaFaceDetector().detect(rgb)
    if not faces:
        raise RuntimeError("no face found in a bundled portrait")
    return warp_faces(rgb, [align_matrix(faces[0].landmarks, resolution)], resolution)[0]


def report_faces(resolution: int, count: int, seed: int = 0) -> list[ReportFace]:
    """``count`` degraded faces, cycling over the portraits with a fresh degradation each."""
    aligned = {name: align(rgb, resolution) for name, rgb in source_portraits().items()}
    rng = np.random.default_rng(seed)
    cfg = STAGE_DEGRADATIONS["codebook"]
    faces = []
    names = list(aligned)
    for i in range(count):
        name = names[i % len(names)]
        clean = aligned[name]
        result = random_degrade(clean.astype(np.float32) / 255.0, cfg, rng)
        degraded = np.clip(np.round(result.image * 255.0), 0, 255).astype(np.uint8)
        faces.append(ReportFace(f"{name}-{i}", clean, degraded, result.params.to_dict()))
    return faces


def to_batch(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (R, R, 3) list -> (F, 3, R, R) float32 in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
