"""NR-IQA scorers: a batch of images in [-1, 1] -> one quality score per image in [0, 1]
(higher is better). ``differentiable`` says whether the score carries gradients.

Two kinds, picked by ``build_scorer``:

- ``"brisque"``: the classical BRISQUE (Mittal et al. 2012) of the ``brisque`` package, whose
  LIVE-trained SVM ships inside the wheel: offline, nothing downloaded. Not differentiable.
- a weight file: a learned NR-IQA network (``daefr.quality.network.QualityNet``) loaded
  strictly from the user's file. Never built with random weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

SCORER_NAMES: tuple[str, ...] = ("brisque",)


class ScorerError(ValueError):
    """A scorer that cannot be built (missing package, unreadable weights); names the fix."""


class QualityScorer(Protocol):
    """images: (B, 3, H, W) float in [-1, 1] -> scores (B,) float32 in [0, 1], higher is better."""

    name: str
    differentiable: bool

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")


def build_scorer(spec: str | Path) -> QualityScorer:
    """``"brisque"`` or the path of a learned network's weights (see ``network.load_quality_net``)."""
    if str(spec).lower() == "brisque":
        from daefr.quality.brisque_scorer import BrisqueScorer

        return BrisqueScorer()
    path = Path(spec)
    if not path.is_file():
        raise ScorerError(
            f"{spec}: no such weight file; give 'brisque' (offline) or the path of QualityNet weights"
        )
    from daefr.quality.network import load_quality_net

    return load_quality_net(path)
