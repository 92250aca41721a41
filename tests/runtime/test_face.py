"""Detection on a real public-domain face, alignment maths, paste-back, landmark smoothing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tolerances import ALIGN_ATOL_PX, LANDMARK_ATOL_PX

from daefr.runtime.face import (
    FFHQ_TEMPLATE_512,
    Face,
    LandmarkSmoother,
    align_matrix,
    invert_affine,
    paste_faces,
    soft_mask,
    template,
    umeyama,
    warp_faces,
)

# RetinaFace on skimage's astronaut (Eileen Collins, NASA, public domain), checked by eye on
# the image: eyes at y ~ 100, nose tip ~ 129, mouth corners ~ 139.
ASTRONAUT_LANDMARKS = np.array(
    [[204.8, 100.8], [247.4, 103.4], [223.6, 129.2], [202.5, 138.1], [244.2, 140.6]]
)


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.concatenate([rot, np.array(shift)[:, None]], 1)


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


# -- detection ------------------------------------------------------------------------------
def test_detects_the_astronaut_with_plausible_landmarks(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.95
    (x0, y0, x1, y1), marks = face.box, face.landmarks
    assert marks.shape == (5, 2)
    assert ((marks >= (x0, y0)) & (marks <= (x1, y1))).all(), "landmarks outside the face box"
    left_eye, right_eye, nose, mouth_l, mouth_r = marks
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    np.testing.assert_allclose(marks, ASTRONAUT_LANDMARKS, atol=LANDMARK_ATOL_PX)


def test_detection_on_a_downscaled_large_frame_maps_back_to_frame_pixels(detector, astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((1280, 1280), Image.BILINEAR))  # > max_side 640
    faces = detector.detect(big)
    assert len(faces) == 1
    np.testing.assert_allclose(faces[0].landmarks, ASTRONAUT_LANDMARKS * 2.5, atol=2.5 * LANDMARK_ATOL_PX)


def test_network_input_is_bgr_minus_the_training_mean_planar():
    from daefr.runtime.face.detector import BGR_MEAN, _network_input

    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    x = _network_input(rgb)
    assert x.shape == (1, 3, 7, 5) and x.dtype == np.float32 and x.flags.c_contiguous
    expected = (rgb[..., ::-1].astype(np.float32) - BGR_MEAN).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(x, expected)


def test_no_face_in_a_gradient(detector):
    gradient = np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None].repeat(240, 0).repeat(3, 2)
    assert detector.detect(gradient) == []


def test_detector_rejects_non_rgb_uint8(detector):
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(np.zeros((64, 64), np.uint8))


# -- alignment ------------------------------------------------------------------------------
def test_template_aligns_to_identity():
    m = align_matrix(FFHQ_TEMPLATE_512, 512)
    np.testing.assert_allclose(m, [[1, 0, 0], [0, 1, 0]], atol=1e-9)


@pytest.mark.parametrize("resolution", [64, 512])
def test_warped_landmarks_land_on_the_template(resolution):
    truth = similarity(17.0, 0.37, (40.0, -12.5))  # template (512) -> frame
    frame_points = apply(truth, FFHQ_TEMPLATE_512)
    m = align_matrix(frame_points, resolution)
    np.testing.assert_allclose(apply(m, frame_points), template(resolution), atol=ALIGN_ATOL_PX)
    # and it is the least-squares similarity: the inverse of the truth, scaled to R
    np.testing.assert_allclose(m[:, :2] * 512 / resolution, np.linalg.inv(truth[:, :2]), atol=1e-9)


def test_umeyama_is_least_squares_and_never_reflects():
    rng = np.random.default_rng(0)
    src = FFHQ_TEMPLATE_512 + rng.normal(0, 5, (5, 2))
    m = umeyama(src, FFHQ_TEMPLATE_512)
    assert np.linalg.det(m[:, :2]) > 0
    residual = ((apply(m, src) - FFHQ_TEMPLATE_512) ** 2).sum()
    for eps in (1e-3, -1e-3):  # a perturbed similarity fits worse
        worse = umeyama(src, FFHQ_TEMPLATE_512) + eps * np.array([[1, 0, 1], [0, 1, 1]])
        assert ((apply(worse, src) - FFHQ_TEMPLATE_512) ** 2).sum() > residual
    mirrored = FFHQ_TEMPLATE_512 * [-1, 1]  # a reflected face: the fit stays a rotation
    assert np.linalg.det(umeyama(mirrored, FFHQ_TEMPLATE_512)[:, :2]) > 0


def test_inverse_warp_round_trips_points():
    m = similarity(-23.0, 1.7, (5.0, 9.0))
    pts = np.random.default_rng(1).uniform(-100, 100, (10, 2))
    np.testing.assert_allclose(apply(invert_affine(m), apply(m, pts)), pts, atol=1e-9)


def test_warp_then_paste_of_an_unchanged_crop_restores_the_frame(detector, astronaut):
    face = detector.detect(astronaut)[0]
    m = align_matrix(face.landmarks, 512)  # about 1:1 scale keeps resampling loss small
    crops = warp_faces(astronaut, [m], 512)
    pasted = paste_faces(astronaut, crops, [m])
    diff = np.abs(pasted.astype(int) - astronaut.astype(int))
    x0, y0, x1, y1 = face.box.astype(int)
    assert diff[y0:y1, x0:x1].mean() < 4.0  # two bilinear resamplings only
    # pixels outside the pasted quad are bit-exact
    assert diff[:, :40].max() == 0 and diff[-40:, :].max() == 0


def test_paste_touches_only_the_face_and_blends_softly(astronaut):
    m = align_matrix(ASTRONAUT_LANDMARKS, 64)
    white = np.full((1, 64, 64, 3), 255, np.uint8)
    pasted = paste_faces(astronaut, white, [m])
    changed = np.any(pasted != astronaut, axis=2)
    ys, xs = np.nonzero(changed)
    quad = apply(invert_affine(m), np.array([[0, 0], [64, 0], [0, 64], [64, 64]]))
    assert xs.min() >= np.floor(quad[:, 0].min()) and xs.max() <= np.ceil(quad[:, 0].max())
    assert ys.min() >= np.floor(quad[:, 1].min()) and ys.max() <= np.ceil(quad[:, 1].max())
    centre = apply(invert_affine(m), np.array([[32.0, 32.0]]))[0].astype(int)
    assert (pasted[centre[1], centre[0]] == 255).all()  # the mask is 1 inside
    mask = soft_mask(64)
    assert mask[0].max() == 0 and mask[:, 0].max() == 0 and mask[32, 32] == 1.0
    assert 0 < mask[32, 5] < 1 and mask[32, 2] == 0  # a soft edge, not a step


# -- smoothing ------------------------------------------------------------------------------
def _face(marks: np.ndarray) -> Face:
    return Face(
        np.array([*marks.min(0) - 20, *marks.max(0) + 20], np.float32), 0.99, marks.astype(np.float32)
    )


@pytest.mark.parametrize("device", [None, "cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_crops_round_trip_through_the_batch_exactly(device):
    import torch

    from daefr.runtime.face import batch_to_crops, crops_to_batch

    crops = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    batch = crops_to_batch(crops, device)
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.float32
    assert batch.device.type == (device or "cpu")
    assert batch.is_contiguous()  # plain NCHW, as the network is timed and graphs captured
    assert batch.min() >= -1 and batch.max() <= 1
    np.testing.assert_array_equal(batch_to_crops(batch), crops)
    out_of_range = batch_to_crops(
        torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.5]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    )
    np.testing.assert_array_equal(out_of_range[0, 0, :, 0], [0, 0, 128, 255, 255])


def test_smoothing_removes_jitter_of_a_still_face():
    rng = np.random.default_rng(0)
    base = ASTRONAUT_LANDMARKS
    raw = [base + rng.normal(0, 1.5, base.shape) for _ in range(60)]
    smoother = LandmarkSmoother()
    smoothed = [smoother.update([_face(r)], i / 25)[0].landmarks for i, r in enumerate(raw)]
    raw_err = np.abs(np.array(raw[20:]) - base).mean()
    smooth_err = np.abs(np.array(smoothed[20:]) - base).mean()
    assert smooth_err < raw_err / 2


def test_smoothing_follows_motion_and_starts_new_tracks():
    smoother = LandmarkSmoother()
    for i in range(50):  # moving 4 px per frame at 25 fps
        out = smoother.update([_face(ASTRONAUT_LANDMARKS + [4.0 * i, 0])], i / 25)[0]
    assert np.abs(out.landmarks - (ASTRONAUT_LANDMARKS + [4.0 * 49, 0])).max() < 6.0
    far = ASTRONAUT_LANDMARKS + [1000.0, 1000.0]  # no overlap with the track: taken as is
    np.testing.assert_array_equal(smoother.update([_face(far)], 50 / 25)[0].landmarks, far.astype(np.float32))
