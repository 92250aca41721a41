"""Faces written back into the decoded yuv420p frame region by region: pixels outside the
regions keep their decoded values bit for bit, pixels inside match a whole-frame conversion."""

from __future__ import annotations

import numpy as np
import pytest

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")

from daefr.runtime.yuv_patch import _planes, can_patch, even_region, patch_yuv420p  # noqa: E402

W, H = 320, 240


@pytest.fixture()
def decoded():
    """A smooth picture as a decoder hands it over: yuv420p."""
    noise = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb = cv2.GaussianBlur(noise, (21, 21), 0)
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def test_outside_the_regions_every_plane_is_untouched(decoded):
    rgb = decoded.to_ndarray(format="rgb24")
    rgb[51:121, 33:157] = (200, 30, 30)
    rgb[150:200, 201:260] = (20, 220, 90)
    regions = [(33, 51, 157, 121), (201, 150, 260, 200)]
    out = patch_yuv420p(decoded, rgb, regions)
    assert (out.width, out.height, out.format.name) == (W, H, "yuv420p")
    before, after = _planes(decoded.to_ndarray(), W, H), _planes(out.to_ndarray(), W, H)
    outside = np.ones((H, W), bool)
    for region in regions:
        x0, y0, x1, y1 = even_region(region, W, H)
        outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(after[0][outside], before[0][outside])
    for plane in (1, 2):  # chroma: one sample per 2x2 pixels, regions are even-aligned
        np.testing.assert_array_equal(after[plane][outside[::2, ::2]], before[plane][outside[::2, ::2]])
    assert not np.array_equal(after[0], before[0])  # the regions did change


def test_inside_the_regions_it_matches_a_whole_frame_conversion(decoded):
    rgb = decoded.to_ndarray(format="rgb24")
    rgb[60:110, 40:150] = np.random.default_rng(1).integers(0, 256, (50, 110, 3), dtype=np.uint8)
    out = patch_yuv420p(decoded, rgb, [(40, 60, 150, 110)]).to_ndarray(format="rgb24")
    whole = (
        av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p").to_ndarray(format="rgb24")
    )
    # away from the region's border, where 4:2:0 chroma mixes inside and outside pixels
    inner = (slice(62, 108), slice(42, 148))
    assert np.abs(out[inner].astype(int) - whole[inner]).max() <= 1


def test_even_region_covers_whole_chroma_samples():
    assert even_region((33, 51, 157, 121), W, H) == (32, 50, 158, 122)
    assert even_region((0, 0, W, H), W, H) == (0, 0, W, H)
    assert even_region((10, 10, W - 1, H - 1), W, H) == (10, 10, W, H)


def test_only_even_yuv420p_frames_for_a_yuv420p_encoder_are_patched(decoded):
    assert can_patch(decoded, "yuv420p")
    assert not can_patch(decoded, "yuv444p")  # the encoder would convert it anyway
    rgb_frame = av.VideoFrame.from_ndarray(np.zeros((H, W, 3), np.uint8), format="rgb24")
    assert not can_patch(rgb_frame, "yuv420p")
    odd = av.VideoFrame(W + 1, H, "yuv420p")
    assert not can_patch(odd, "yuv420p")


def test_wrong_rgb_size_is_an_error(decoded):
    with pytest.raises(ValueError, match="the frame is 320x240"):
        patch_yuv420p(decoded, np.zeros((H, W - 2, 3), np.uint8), [])
