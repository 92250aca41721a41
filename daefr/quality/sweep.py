"""How the condition S steers a conditioned model: the NR-IQA score of its output per S."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from daefr.model import DAEFR
from daefr.quality.scorer import QualityScorer


@dataclass(frozen=True)
class SweepRow:
    """quality: the condition S; mean/min/max: the scorer's score of the restored faces;
    codes_changed: fraction of (common, HQ+) codes that differ from the first row's."""

    quality: float
    mean: float
    min: float
    max: float
    codes_changed: float


def score_sweep(
    model: DAEFR, scorer: QualityScorer, images: torch.Tensor, qualities: list[float]
) -> list[SweepRow]:
    """images: (B, 3, R, R) in [-1, 1] (degraded faces) -> one row per S in ``qualities``."""
    if model.config.quality is None:
        raise ValueError("score_sweep needs a quality-conditioned model")
    rows: list[SweepRow] = []
    first: torch.Tensor | None = None
    device = next(model.parameters()).device
    for s in qualities:
        with torch.inference_mode():
            out = model(images.to(device), torch.full((images.shape[0],), float(s), device=device))
        codes = torch.cat([out.code_idx, out.plus_idx], dim=1).cpu()
        first = codes if first is None else first
        scores = scorer(out.restored.clamp(-1, 1).cpu())
        rows.append(
            SweepRow(
                quality=float(s),
                mean=float(scores.mean()),
                min=float(scores.min()),
                max=float(scores.max()),
                codes_changed=float((codes != first).float().mean()),
            )
        )
    return rows
