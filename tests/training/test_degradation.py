"""The degradation does what its parameters say: each parameter recovered from the output."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image
from training_tolerances import EDGE_SIGMA_RTOL, IMPULSE_SIGMA_RTOL, IMPULSE_THETA_ATOL, NOISE_SIGMA_ATOL

from daefr.degradation import (
    STAGE_DEGRADATIONS,
    DegradationConfig,
    DegradationParams,
    add_noise,
    blur,
    degrade,
    gaussian_kernel,
    random_degrade,
    sample_params,
)

# JPEG Annex K luminance table, natural (row-major) order.
STD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
)  # fmt: skip


def ijg_luma_table(quality: int) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table (baseline)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((STD_LUMA * scale + 50) // 100, 1, 255)


def jpeg_qualities(data: bytes) -> list[int]:
    """Every quality whose luminance table is the one in the file."""
    with Image.open(io.BytesIO(data)) as img:
        table = np.array(img.quantization[0])
    return [q for q in range(1, 101) if np.array_equal(ijg_luma_table(q), table)]


def params(**overrides: object) -> DegradationParams:
    base = dict(
        kernel_type="iso",
        kernel_size=41,
        sigma_x=1.0,
        sigma_y=1.0,
        theta=0.0,
        scale=1.0,
        noise_sigma=0.0,
        jpeg_quality=100,
    )
    base.update(overrides)
    return DegradationParams(**base)  # type: ignore[arg-type]


def moments(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and covariance of a 2-D weight map; coordinates (x = column, y = row)."""
    ys, xs = np.mgrid[: weights.shape[0], : weights.shape[1]]
    w = weights / weights.sum()
    mx, my = (w * xs).sum(), (w * ys).sum()
    dx, dy = xs - mx, ys - my
    cov = np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()], [(w * dx * dy).sum(), (w * dy * dy).sum()]])
    return np.array([mx, my]), cov


@pytest.mark.parametrize("seed", range(6))
def test_jpeg_quality_from_quantisation_tables(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.random((40, 48, 3), dtype=np.float32)
    result = random_degrade(image, STAGE_DEGRADATIONS["fusion"], rng)
    assert 30 <= result.params.jpeg_quality < 100
    assert jpeg_qualities(result.jpeg_bytes) == [result.params.jpeg_quality]


@pytest.mark.parametrize(
    ("sigma_x", "sigma_y", "theta"), [(3.0, 3.0, 0.0), (4.0, 1.5, math.pi / 6), (2.5, 5.0, -1.0)]
)
def test_blur_sigma_from_blurred_impulse(sigma_x: float, sigma_y: float, theta: float) -> None:
    impulse = np.zeros((81, 81, 3), np.float32)
    impulse[40, 40] = 1.0
    out = blur(impulse, gaussian_kernel(41, sigma_x, sigma_y, theta))[..., 1]
    centre, cov = moments(out)
    np.testing.assert_allclose(centre, [40, 40], atol=1e-3)  # not shifted
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
    expected = sorted([sigma_x, sigma_y])
    np.testing.assert_allclose(np.sqrt(eigvals), expected, rtol=IMPULSE_SIGMA_RTOL)
    if sigma_x != sigma_y:
        axis = eigvecs[:, 1] if sigma_x > sigma_y else eigvecs[:, 0]  # direction of sigma_x
        angle = math.atan2(axis[1], axis[0])
        diff = (angle - theta + math.pi / 2) % math.pi - math.pi / 2  # an axis has no sign
        assert abs(diff) < IMPULSE_THETA_ATOL


def test_blur_sigma_from_an_edge_through_the_whole_pipeline() -> None:
    image = np.full((64, 96, 3), 0.2, np.float32)
    image[:, 48:] = 0.8
    out = degrade(image, params(sigma_x=3.0, sigma_y=3.0), np.random.default_rng(0)).image
    profile = out[16:48, :, 1].mean(axis=0)  # edge spread function across columns
    lsf = np.clip(np.diff(profile)[32:64], 0, None)  # line spread function around the edge
    x = np.arange(lsf.size)
    mean = (lsf * x).sum() / lsf.sum()
    sigma = math.sqrt((lsf * (x - mean) ** 2).sum() / lsf.sum())
    assert sigma == pytest.approx(3.0, rel=EDGE_SIGMA_RTOL)


@pytest.mark.parametrize("scale", [0.8, 1.0, 3.3, 7.9, 29.0])
def test_downsample_factor_from_the_size_before_upsampling(scale: float) -> None:
    image = np.random.default_rng(1).random((64, 50, 3), dtype=np.float32)
    result = degrade(image, params(scale=scale, jpeg_quality=90), np.random.default_rng(0))
    expected = (int(64 // scale), int(50 // scale))
    assert result.small_size == expected
    with Image.open(io.BytesIO(result.jpeg_bytes)) as small:
        assert small.size == (expected[1], expected[0])  # the JPEG is made at the small size
    assert result.image.shape == image.shape  # and upsampled back


@pytest.mark.parametrize("sigma", [2.0, 12.0, 20.0])
def test_noise_sigma_from_a_flat_image(sigma: float) -> None:
    flat = np.full((256, 256, 3), 0.5, np.float32)
    noisy = add_noise(flat, sigma, np.random.default_rng(3))
    assert noisy.std() * 255 == pytest.approx(sigma, abs=NOISE_SIGMA_ATOL)
    assert abs(noisy.mean() - 0.5) * 255 < NOISE_SIGMA_ATOL


def test_output_is_8_bit_rgb_in_range() -> None:
    image = np.random.default_rng(2).random((48, 48, 3), dtype=np.float32)
    out = random_degrade(image, STAGE_DEGRADATIONS["fusion"], np.random.default_rng(5)).image
    assert out.dtype == np.float32 and out.shape == image.shape
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_array_equal(np.rint(out * 255) / 255, out)


def test_seeded_and_reproducible() -> None:
    image = np.random.default_rng(4).random((48, 48, 3), dtype=np.float32)
    cfg = STAGE_DEGRADATIONS["codebook"]
    a = random_degrade(image, cfg, np.random.default_rng(11))
    b = random_degrade(image, cfg, np.random.default_rng(11))
    c = random_degrade(image, cfg, np.random.default_rng(12))
    assert a.params == b.params
    np.testing.assert_array_equal(a.image, b.image)
    assert a.params != c.params


@pytest.mark.parametrize("stage", ["codebook", "association", "fusion"])
def test_sampled_parameters_stay_in_the_stage_ranges(stage: str) -> None:
    cfg = STAGE_DEGRADATIONS[stage]
    rng = np.random.default_rng(0)
    draws = [sample_params(cfg, rng) for _ in range(400)]
    assert {d.kernel_size for d in draws} == {39, 41}
    assert {d.kernel_type for d in draws} == {"iso", "aniso"}
    assert all(d.sigma_x == d.sigma_y and d.theta == 0 for d in draws if d.kernel_type == "iso")
    for name, values in (
        ("sigma", [d.sigma_x for d in draws] + [d.sigma_y for d in draws]),
        ("scale", [d.scale for d in draws]),
        ("noise", [d.noise_sigma for d in draws]),
        ("jpeg", [d.jpeg_quality for d in draws]),
    ):
        low, high = getattr(cfg, name)
        assert low <= min(values) and max(values) <= high, name
        assert max(values) - min(values) > 0.8 * (high - low) - 1, name  # the whole range is used


def test_stage_ranges_are_the_papers() -> None:
    early, final = STAGE_DEGRADATIONS["codebook"], STAGE_DEGRADATIONS["fusion"]
    assert STAGE_DEGRADATIONS["association"] == early
    assert (early.sigma, early.scale, early.noise, early.jpeg) == ((0.1, 10), (0.8, 8), (0, 20), (60, 100))
    assert (final.sigma, final.scale, final.noise, final.jpeg) == ((0.1, 15), (0.8, 30), (0, 20), (30, 100))


@pytest.mark.parametrize(
    ("field", "value"),
    [("sigma", (5.0, 1.0)), ("jpeg", (0, 50)), ("kernel_sizes", (40,)), ("kernel_probs", (0.7, 0.7))],
)
def test_config_validation_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        DegradationConfig(**{field: value})
