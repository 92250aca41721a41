"""The NR-IQA side of ``daefr-report``: each variant's output score (the quality column) and,
for an IQPFR-conditioned model, a small sweep of the condition S with the score it reached."""

from __future__ import annotations

from dataclasses import asdict

import torch

from daefr.model import DAEFR
from daefr.quality.scorer import QualityScorer
from daefr.quality.sweep import score_sweep

CONDITIONED_SKIP = (
    "an IQPFR-conditioned model runs on the torch backend only "
    "(no exported graph carries its quality input yet)"
)


def output_score(scorer: QualityScorer, restored: torch.Tensor) -> dict[str, object]:
    """restored (F, 3, R, R) in about [-1, 1] -> {"scorer", "mean", "per_face"} (higher is better)."""
    scores = scorer(restored.float().clamp(-1, 1).cpu())
    return {"scorer": scorer.name, "mean": float(scores.mean()), "per_face": [float(s) for s in scores]}


def sweep_values(model: DAEFR) -> list[float]:
    """0, the lowest S trained for, their middle, the highest, 1 (duplicates dropped)."""
    lo, hi = (float(v) for v in model.iqp.quality_range)
    return sorted({0.0, round(lo, 4), round((lo + hi) / 2, 4), round(hi, 4), 1.0})


def quality_sweep(model: DAEFR, scorer: QualityScorer, faces: torch.Tensor) -> list[dict[str, float]]:
    """faces (F, 3, R, R) in [-1, 1] -> one row per S: the score of the restored faces, and the
    share of codes that differ from the first row's."""
    return [asdict(row) for row in score_sweep(model, scorer, faces, sweep_values(model))]
