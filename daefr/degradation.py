"""The synthetic degradation of the paper (Eq. 8), seeded and reproducible:

    I_low = {[(I_high (x) k_sigma) downsample_r + n_delta] JPEG_q} upsample_r

Follows the original training data pipeline (basicsr ``FFHQDegradationDataset`` as configured
by the DAEFR release): an isotropic or anisotropic Gaussian kernel of size 39 or 41 applied
with reflect-101 borders, bilinear resize to ``floor(size / r)``, additive Gaussian noise on
the 0..255 scale, JPEG at an integer quality, bilinear resize back, 8-bit rounding.

Images are (H, W, 3) float32 RGB in [0, 1]. Every random choice comes from the
``numpy.random.Generator`` the caller passes, so a seed fixes the output; the sampled
parameters are returned with the image.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

KERNEL_TYPES: tuple[str, ...] = ("iso", "aniso")


def _require(condition: bool, name: str, value: object, allowed: str) -> None:
    if not condition:
        raise ValueError(f"invalid degradation config: {name}={value!r}; {allowed}")


def _is_range(value: tuple[float, float], low: float, high: float) -> bool:
    return len(value) == 2 and low <= value[0] <= value[1] <= high


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges that parameters are drawn from (uniformly, both ends included).

    Defaults are the codebook and association stages' (``configs/HQ_codebook.yaml``,
    ``Association_stage.yaml``); :data:`STAGE_DEGRADATIONS` holds the per-stage presets.
    """

    kernel_sizes: tuple[int, ...] = (39, 41)  # basicsr: randint(19, 20) * 2 + 1
    kernel_types: tuple[str, ...] = KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.5, 0.5)
    sigma: tuple[float, float] = (0.1, 10.0)  # blur sigma in pixels, both axes for "aniso"
    rotation: tuple[float, float] = (-math.pi, math.pi)  # anisotropic kernel angle
    scale: tuple[float, float] = (0.8, 8.0)  # downsampling factor r
    noise: tuple[float, float] = (0.0, 20.0)  # noise sigma on the 0..255 scale
    jpeg: tuple[int, int] = (60, 100)  # JPEG quality q

    def __post_init__(self) -> None:
        _require(
            len(self.kernel_sizes) >= 1 and all(k >= 1 and k % 2 == 1 for k in self.kernel_sizes),
            "kernel_sizes",
            self.kernel_sizes,
            "needs odd sizes >= 1",
        )
        _require(
            len(self.kernel_types) >= 1 and all(t in KERNEL_TYPES for t in self.kernel_types),
            "kernel_types",
            self.kernel_types,
            f"choose from {KERNEL_TYPES}",
        )
        _require(
            len(self.kernel_probs) == len(self.kernel_types)
            and all(p >= 0 for p in self.kernel_probs)
            and abs(sum(self.kernel_probs) - 1) < 1e-6,
            "kernel_probs",
            self.kernel_probs,
            "one probability per kernel type, summing to 1",
        )
        _require(_is_range(self.sigma, 1e-3, 1e3), "sigma", self.sigma, "needs 0.001 <= low <= high")
        _require(_is_range(self.rotation, -math.pi, math.pi), "rotation", self.rotation, "within [-pi, pi]")
        _require(_is_range(self.scale, 0.1, 1e3), "scale", self.scale, "needs 0.1 <= low <= high")
        _require(_is_range(self.noise, 0.0, 255.0), "noise", self.noise, "within [0, 255]")
        _require(_is_range(self.jpeg, 1, 100), "jpeg", self.jpeg, "within [1, 100]")


STAGE_DEGRADATIONS: dict[str, DegradationConfig] = {
    "codebook": DegradationConfig(),
    "association": DegradationConfig(),
    # configs/DAEFR.yaml and the paper's Sec. 4.1: the wider final-stage ranges.
    "fusion": DegradationConfig(sigma=(0.1, 15.0), scale=(0.8, 30.0), jpeg=(30, 100)),
}


@dataclass(frozen=True)
class DegradationParams:
    """One draw of the degradation parameters."""

    kernel_type: str
    kernel_size: int
    sigma_x: float
    sigma_y: float
    theta: float
    scale: float
    noise_sigma: float  # on the 0..255 scale
    jpeg_quality: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class Degraded:
    """image: (H, W, 3) float32 in [0, 1] on 8-bit levels; small_size: (h, w) after the
    downsampling; jpeg_bytes: the JPEG file that was decoded (its quantisation tables
    carry ``params.jpeg_quality``)."""

    image: np.ndarray
    params: DegradationParams
    small_size: tuple[int, int]
    jpeg_bytes: bytes


def sample_params(cfg: DegradationConfig, rng: np.random.Generator) -> DegradationParams:
    """Draw kernel, blur, scale, noise and quality in the order of the original pipeline."""
    kernel_size = int(rng.choice(cfg.kernel_sizes))
    kernel_type = str(rng.choice(cfg.kernel_types, p=cfg.kernel_probs))
    sigma_x = float(rng.uniform(*cfg.sigma))
    if kernel_type == "iso":
        sigma_y, theta = sigma_x, 0.0
    else:
        sigma_y = float(rng.uniform(*cfg.sigma))
        theta = float(rng.uniform(*cfg.rotation))
    scale = float(rng.uniform(*cfg.scale))
    noise_sigma = float(rng.uniform(*cfg.noise))
    # basicsr: quality = int(uniform(low, high)), so the top of the range is reached only
    # when low == high.
    jpeg_quality = int(rng.uniform(*cfg.jpeg))
    return DegradationParams(
        kernel_type, kernel_size, sigma_x, sigma_y, theta, scale, noise_sigma, jpeg_quality
    )


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> np.ndarray:
    """(size, size) float64 bivariate Gaussian summing to 1; axis x (columns) has ``sigma_x``
    before a counter-clockwise rotation by ``theta`` (basicsr ``bivariate_Gaussian``)."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cov = rot @ np.diag([sigma_x**2, sigma_y**2]) @ rot.T
    inv = np.linalg.inv(cov)
    ax = np.arange(size, dtype=np.float64) - size // 2
    xx, yy = np.meshgrid(ax, ax)  # xx varies along columns
    grid = np.stack([xx, yy], axis=-1)  # (size, size, 2)
    kernel = np.exp(-0.5 * np.einsum("...i,ij,...j->...", grid, inv, grid))
    return kernel / kernel.sum()


def _fast_len(n: int) -> int:
    """Smallest 5-smooth integer >= n: FFT sizes with large prime factors are several x slower."""
    best = 2 * n
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p235 = p35
            while p235 < n:
                p235 *= 2
            best = min(best, p235)
            p35 *= 3
        p5 *= 5
    return best


def blur(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each channel with ``kernel`` (odd square), reflect-101 borders as
    ``cv2.filter2D``. FFT in float32 on 5-smooth sizes: 40 ms for a 41x41 kernel on 512x512
    (a direct convolution takes seconds; float64 on the plain padded size took 190 ms)."""
    k = kernel.shape[0]
    p = k // 2
    h, w = image.shape[:2]
    chw = np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))  # (3, H, W)
    padded = np.pad(chw, ((0, 0), (p, p), (p, p)), mode="reflect")
    full = (_fast_len(padded.shape[1] + k - 1), _fast_len(padded.shape[2] + k - 1))
    spectrum = np.fft.rfft2(padded, s=full)
    kernel_spectrum = np.fft.rfft2(kernel[::-1, ::-1].astype(np.float32), s=full)  # flipped: correlation
    out = np.fft.irfft2(spectrum * kernel_spectrum, s=full)
    return np.ascontiguousarray(
        out[:, k - 1 : k - 1 + h, k - 1 : k - 1 + w].transpose(1, 2, 0), dtype=np.float32
    )


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, half-pixel centres, no antialiasing (``cv2.INTER_LINEAR``). size: (h, w)."""
    if image.shape[:2] == tuple(size):
        return image.astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=False)
    return out[0].permute(1, 2, 0).numpy()


def add_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, ``sigma`` on the 0..255 scale, clipped to [0, 1]."""
    noise = rng.standard_normal(image.shape).astype(np.float32) * np.float32(sigma / 255.0)
    return np.clip(image + noise, 0.0, 1.0)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """(H, W, 3) float in [0, 1] -> JPEG bytes (libjpeg's standard tables scaled by quality,
    4:2:0 chroma, as OpenCV's ``imencode``)."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def degrade(image: np.ndarray, params: DegradationParams, rng: np.random.Generator) -> Degraded:
    """Apply Eq. 8 with fixed ``params``; ``rng`` draws the noise. image: (H, W, 3) in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    h, w = image.shape[:2]
    kernel = gaussian_kernel(params.kernel_size, params.sigma_x, params.sigma_y, params.theta)
    out = blur(image, kernel)
    small = (max(1, int(h // params.scale)), max(1, int(w // params.scale)))
    out = resize(out, small)
    out = add_noise(out, params.noise_sigma, rng)
    jpeg = encode_jpeg(out, params.jpeg_quality)
    out = resize(decode_jpeg(jpeg), (h, w))
    out = to_uint8(out).astype(np.float32) / 255.0
    return Degraded(out, params, small, jpeg)


def random_degrade(image: np.ndarray, cfg: DegradationConfig, rng: np.random.Generator) -> Degraded:
    """Draw parameters from ``cfg`` with ``rng``, then :func:`degrade`."""
    return degrade(image, sample_params(cfg, rng), rng)
