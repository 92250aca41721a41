"""restore_photo on a whole, unaligned photo."""

from __future__ import annotations

import numpy as np
import pytest

from daefr.runtime.backends import PrecisionPlan, create_restorer
from daefr.runtime.photo import restore_photo


@pytest.fixture(scope="module")
def ort_restorer(tiny_onnx):
    with create_restorer(PrecisionPlan("ort"), onnx=tiny_onnx) as restorer:
        yield restorer


def test_restore_photo_changes_the_face_and_nothing_far_from_it(astronaut, ort_restorer, detector):
    out = restore_photo(astronaut, ort_restorer, detector)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    x0, y0, x1, y1 = detector.detect(astronaut)[0].box.astype(int)
    diff = np.abs(out.astype(int) - astronaut.astype(int))
    assert diff[y0:y1, x0:x1].mean() > 10  # random weights: the face is replaced by something else
    assert diff[:, 350:].max() == 0 and diff[300:, :].max() == 0  # the rocket and the suit: untouched


def test_restore_photo_without_faces_returns_the_image(ort_restorer, detector):
    gradient = np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None].repeat(150, 0).repeat(3, 2)
    out = restore_photo(gradient, ort_restorer, detector)
    assert out is not gradient
    np.testing.assert_array_equal(out, gradient)


def test_restore_photo_rejects_other_arrays(ort_restorer, detector):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        restore_photo(np.zeros((10, 10, 3), np.float32), ort_restorer, detector)
