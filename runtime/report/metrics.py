"""Accuracy of a backend's output against eager fp32: codes, PSNR, SSIM, absolute error.

Images are (B, 3, H, W) floats in about [-1, 1]; PSNR and SSIM are computed on the clamped
images mapped to [0, 1] (data range 1), per face, SSIM with the usual 11x11 Gaussian window
(sigma 1.5, Wang et al. 2004), averaged over the three channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # an 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


@dataclass(frozen=True)
class Accuracy:
    """One backend's agreement with eager fp32 over a set of faces."""

    code_agreement: float  # share of code indices equal to eager's, over all faces, in [0, 1]
    min_face_code_agreement: float  # the worst single face
    psnr_db: float  # mean over faces; inf when identical
    ssim: float  # mean over faces
    max_abs_error: float  # on the unclamped restored images
    p99_abs_error: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def to_unit_range(image: torch.Tensor) -> torch.Tensor:
    return (image.double().clamp(-1, 1) + 1) / 2


def psnr(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """(B,) PSNR in dB between [-1, 1] images, computed in [0, 1]."""
    mse = (to_unit_range(reference) - to_unit_range(test)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse)


def _gaussian_window(channels: int) -> torch.Tensor:
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * SSIM_SIGMA**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, -1, -1).contiguous()


def ssim(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """(B,) mean SSIM between [-1, 1] images (valid-window map, channels averaged)."""
    x, y = to_unit_range(reference), to_unit_range(test)
    c = x.shape[1]
    window = _gaussian_window(c).to(x.device)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def accuracy(
    reference_restored: torch.Tensor,
    reference_codes: torch.Tensor,
    restored: torch.Tensor,
    codes: torch.Tensor,
) -> Accuracy:
    """Compare one backend's (restored, code_idx) with eager fp32's for the same faces."""
    reference_restored, restored = reference_restored.cpu().double(), restored.cpu().double()
    same = (reference_codes.cpu() == codes.cpu().long()).double()  # (B, N)
    error = (reference_restored - restored).abs().flatten()
    return Accuracy(
        code_agreement=same.mean().item(),
        min_face_code_agreement=same.mean(1).min().item(),
        psnr_db=psnr(reference_restored, restored).mean().item(),
        ssim=ssim(reference_restored, restored).mean().item(),
        max_abs_error=error.max().item(),
        p99_abs_error=torch.quantile(error[:: max(1, error.numel() // 2**24)], 0.99).item(),
    )


def relative_error(reference: torch.Tensor, test: torch.Tensor) -> float:
    """max |a - b| / max |a|: how a graph's output differs, independent of its scale."""
    reference, test = reference.double().cpu(), test.double().cpu()
    return ((reference - test).abs().max() / reference.abs().max().clamp_min(1e-12)).item()
