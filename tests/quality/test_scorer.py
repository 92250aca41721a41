"""NR-IQA scorers: BRISQUE offline orders clean > blurred > flat; learned networks load only
from a matching weight file, never as a silent random network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from daefr.quality.brisque_scorer import BrisqueScorer, raw_to_score
from daefr.quality.network import QualityNet
from daefr.quality.scorer import ScorerError, build_scorer


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    img = torch.from_numpy(data.astronaut()[20:220, 150:350]).permute(2, 0, 1).float() / 127.5 - 1
    return F.interpolate(img[None], size=64, mode="area")  # (1, 3, 64, 64) in [-1, 1]


def test_brisque_scores_in_range_and_ranks_degradations(face: torch.Tensor) -> None:
    scorer = build_scorer("brisque")
    assert isinstance(scorer, BrisqueScorer) and not scorer.differentiable
    blurred = F.avg_pool2d(F.pad(face, (2, 2, 2, 2), mode="replicate"), 5, 1)
    scores = scorer(torch.cat([face, blurred, torch.zeros_like(face)]))
    print("brisque scores clean/blur/flat:", scores.tolist())
    assert scores.shape == (3,) and scores.dtype == torch.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[0] > scores[1] > scores[2]
    assert torch.equal(scorer(face), scorer(face))  # deterministic


def test_raw_mapping_is_clipped_and_monotone() -> None:
    assert raw_to_score(-5.0) == 1.0 and raw_to_score(150.0) == 0.0 and raw_to_score(float("nan")) == 0.0
    assert raw_to_score(20.0) > raw_to_score(40.0)


def test_brisque_refuses_wrong_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        BrisqueScorer()(torch.zeros(3, 64, 64))


def test_learned_network_loads_strictly_and_is_differentiable(tmp_path: Path, face: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = QualityNet()
    torch.save(net.state_dict(), tmp_path / "iqa.pth")
    loaded = build_scorer(tmp_path / "iqa.pth")
    assert loaded.differentiable
    assert torch.allclose(loaded(face), net(face))
    x = face.clone().requires_grad_(True)
    QualityNet()(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("case", ["missing", "directory", "other-weights", "garbage"])
def test_learned_network_refuses_unusable_files(tmp_path: Path, case: str) -> None:
    path = tmp_path / "w.pth"
    if case == "directory":
        path = tmp_path
    elif case == "other-weights":
        torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    elif case == "garbage":
        path.write_bytes(b"not a checkpoint")
    with pytest.raises(ScorerError):
        build_scorer(path)
