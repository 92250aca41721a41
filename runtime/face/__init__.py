"""Faces in real frames: detection, alignment to the FFHQ template, paste-back, smoothing."""

from daefr.runtime.face.align import (
    FFHQ_TEMPLATE_512,
    align_matrix,
    batch_to_crops,
    crops_to_batch,
    face_region,
    invert_affine,
    paste_faces,
    soft_mask,
    template,
    umeyama,
    warp_faces,
)
from daefr.runtime.face.detector import DetectorUnavailable, Face, FaceDetector, RetinaFaceDetector
from daefr.runtime.face.smooth import LandmarkSmoother, OneEuroFilter

__all__ = [
    "FFHQ_TEMPLATE_512",
    "DetectorUnavailable",
    "Face",
    "FaceDetector",
    "LandmarkSmoother",
    "OneEuroFilter",
    "RetinaFaceDetector",
    "align_matrix",
    "batch_to_crops",
    "crops_to_batch",
    "face_region",
    "invert_affine",
    "paste_faces",
    "soft_mask",
    "template",
    "umeyama",
    "warp_faces",
]
