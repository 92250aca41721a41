"""A learned NR-IQA network, loaded from the user's weight file (as ``--perceptual`` loads LPIPS).

``QualityNet`` is a small CNN (strided convs -> global mean -> linear -> sigmoid) whose score
is differentiable. No trained weights ship here and none are downloaded: ``load_quality_net``
refuses a missing or mismatched file instead of building a random network, which would score
noise. Train one with any NR-IQA data set (targets in [0, 1]) and ``torch.save`` its state_dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from daefr.checkpoint import CheckpointError, read_state_dict
from daefr.quality.scorer import ScorerError, check_images

WIDTHS: tuple[int, ...] = (32, 64, 128, 128)


class QualityNet(nn.Module):
    """images (B, 3, H, W) in [-1, 1] -> scores (B,) in (0, 1); differentiable."""

    name = "quality-net"
    differentiable = True

    def __init__(self, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GELU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        pooled = self.features(images).mean(dim=(2, 3))  # (B, C)
        return torch.sigmoid(self.head(pooled)).squeeze(-1)  # (B,)


def load_quality_net(path: str | Path) -> QualityNet:
    """Strictly load ``QualityNet`` weights (state_dict .pth/.pt or .safetensors), eval mode."""
    try:
        state = read_state_dict(path)
    except CheckpointError as err:
        raise ScorerError(f"NR-IQA weights: {err}") from err
    net = QualityNet()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        raise ScorerError(
            f"{path}: not QualityNet weights (missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"mis-shaped {misshaped[:4]}); save QualityNet().state_dict() or use 'brisque'"
        )
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()
