"""Face alignment: a least-squares similarity (Umeyama) from the 5 detected landmarks to the
FFHQ template, the warp into an R x R crop, and the paste-back with the inverse warp and a
soft mask.

Conventions: a matrix ``M`` is (2, 3) float64 mapping frame pixels to crop pixels
(``crop = M @ [x, y, 1]``), as ``cv2.warpAffine`` takes it. Crops and frames are uint8 RGB.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch

# Five points of a 512 x 512 FFHQ-aligned face: left eye, right eye, nose, mouth corners.
FFHQ_TEMPLATE_512 = np.array(
    [[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]]
)
# facexlib's border colour for the parts of a crop that fall outside the frame.
BORDER_RGB = (135, 133, 132)


def template(resolution: int) -> np.ndarray:
    """(5, 2) template points for an R x R crop."""
    return FFHQ_TEMPLATE_512 * (resolution / 512.0)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    ``src`` (P, 2) onto ``dst`` (P, 2) -> (2, 3). Umeyama, PAMI 1991, eqs. 34-43."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)  # (2, 2)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1  # the closest rotation, never a reflection
    rot = u @ np.diag(sign) @ vt
    scale = (sigma * sign).sum() / (s**2).sum(1).mean()
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def align_matrix(landmarks: np.ndarray, resolution: int) -> np.ndarray:
    """(5, 2) landmarks in the frame -> (2, 3) frame-to-crop matrix for an R x R crop."""
    return umeyama(landmarks, template(resolution))


def invert_affine(m: np.ndarray) -> np.ndarray:
    """(2, 3) -> its inverse (2, 3)."""
    a_inv = np.linalg.inv(m[:, :2])
    return np.concatenate([a_inv, -a_inv @ m[:, 2:]], 1)


def warp_faces(frame: np.ndarray, matrices: list[np.ndarray], resolution: int) -> np.ndarray:
    """frame (H, W, 3) uint8 -> crops (F, R, R, 3) uint8, one per matrix."""
    crops = np.empty((len(matrices), resolution, resolution, 3), np.uint8)
    for i, m in enumerate(matrices):
        cv2.warpAffine(
            frame, m, (resolution, resolution), dst=crops[i], flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB,
        )  # fmt: skip
    return crops


@lru_cache(maxsize=4)
def soft_mask(resolution: int) -> np.ndarray:
    """(R, R) float32 in [0, 1]: 1 inside, eroded by 2m at the border (m = R/25), then
    Gaussian-blurred over m pixels, so the restored face fades into the frame between m and
    3m from the crop's edge and the edge itself (where the crop may hold border fill) is 0."""
    margin = max(1, round(resolution / 25))
    mask = np.zeros((resolution, resolution), np.float32)
    mask[2 * margin : -2 * margin, 2 * margin : -2 * margin] = 1.0
    k = 2 * margin + 1
    mask = cv2.GaussianBlur(mask, (k, k), 0, borderType=cv2.BORDER_CONSTANT)
    mask[mask < 1e-3] = 0.0  # exact zeros outside the face keep untouched pixels bit-exact
    mask.setflags(write=False)
    return mask


def face_region(
    matrix: np.ndarray, resolution: int, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), end-exclusive: the frame pixels that the crop of ``matrix`` (frame ->
    crop) covers once warped back, clipped to the frame; None where it falls outside."""
    r = resolution
    corners = np.array([[0, 0, 1], [r, 0, 1], [0, r, 1], [r, r, 1]], np.float64).T  # (3, 4)
    xy = invert_affine(matrix) @ corners  # (2, 4) crop corners in the frame
    x0, y0 = np.floor(xy.min(1)).astype(int).clip(0, [width, height])
    x1, y1 = np.ceil(xy.max(1)).astype(int).clip(0, [width, height]) + 1
    x1, y1 = min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def paste_faces(frame: np.ndarray, crops: np.ndarray, matrices: list[np.ndarray]) -> np.ndarray:
    """Blend restored crops (F, R, R, 3) uint8 back into a copy of ``frame`` (H, W, 3) uint8.

    Each face touches only its ``face_region``; pixels where the mask is 0 keep their exact
    value.
    """
    out = frame.copy()
    h, w = frame.shape[:2]
    r = crops.shape[1]
    mask = soft_mask(r)
    for crop, m in zip(crops, matrices, strict=True):
        region = face_region(m, r, w, h)
        if region is None:
            continue
        x0, y0, x1, y1 = region
        inv = invert_affine(m)  # crop -> frame
        inv_roi = inv.copy()
        inv_roi[:, 2] -= (x0, y0)
        size = (int(x1 - x0), int(y1 - y0))
        face = cv2.warpAffine(crop, inv_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = cv2.warpAffine(mask, inv_roi, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = alpha[..., None]  # (h, w, 1)
        roi = out[y0:y1, x0:x1].astype(np.float32)
        out[y0:y1, x0:x1] = np.rint(roi + alpha * (face.astype(np.float32) - roi)).astype(np.uint8)
    return out


def crops_to_batch(crops: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """(F, R, R, 3) uint8 -> (F, 3, R, R) float32 in [-1, 1] on ``device`` (default CPU).

    The uint8 crops travel and are converted on the device: a quarter of the bytes over PCIe,
    and no CPU pass (11 ms for 8 faces at 512 on the CI CPU) in the thread that feeds the GPU.
    """
    x = torch.from_numpy(crops)
    if device is not None:
        x = x.to(device)
    # contiguous NCHW (a permuted view would reach the network channels-last, unlike the
    # batches of time_network and the captured CUDA graphs); cheapest while still uint8
    return x.permute(0, 3, 1, 2).contiguous().float().div_(127.5).sub_(1.0)


def batch_to_crops(restored: torch.Tensor) -> np.ndarray:
    """(F, 3, R, R) float about [-1, 1], any device -> (F, R, R, 3) uint8 (clamped). Converted
    on the tensor's device, so only uint8 comes back."""
    x = restored.detach().float().add(1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()
