"""The plug-in leaves the plain DAEFR alone and gives a conditioned model its own strict keys."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from daefr import DAEFR, DAEFRConfig
from daefr.checkpoint import CheckpointError, load_model
from daefr.config import QualityConfig
from daefr.quality.checkpoint import IQP_KEYS, load_conditioned_model, quality_config_of
from daefr.seeded_weights import seed_model_

TINY_Q = QualityConfig(hq_plus_size=48, threshold=0.6, embed_dim=16)


def conditioned(training_modules: bool = False) -> DAEFR:
    cfg = replace(DAEFRConfig.from_name("tiny", training_modules=training_modules), quality=TINY_Q)
    model = seed_model_(DAEFR(cfg), salt="iqp-test").eval()
    model.iqp.threshold.fill_(TINY_Q.threshold)  # seeding fills buffers too
    model.iqp.quality_range.copy_(torch.tensor([0.0, 1.0]))
    return model


def test_official_key_counts_unchanged_and_iqp_keys_come_last() -> None:
    plain = DAEFR(DAEFRConfig.from_name("tiny"))
    assert not hasattr(plain, "iqp")
    for training_modules in (False, True):
        base = list(DAEFR(DAEFRConfig.from_name("tiny", training_modules=training_modules)).state_dict())
        keys = list(conditioned(training_modules).state_dict())
        assert keys == base + list(IQP_KEYS)


def test_official_preset_plain_counts_are_877_and_703() -> None:
    with torch.device("meta"):
        assert len(DAEFR(DAEFRConfig()).state_dict()) == 703
        assert len(DAEFR(DAEFRConfig(training_modules=True)).state_dict()) == 877
        assert len(DAEFR(DAEFRConfig(quality=QualityConfig())).state_dict()) == 703 + len(IQP_KEYS)


def test_conditioned_checkpoint_round_trips_strictly(tmp_path: Path) -> None:
    model = conditioned()
    model.iqp.quality_range.copy_(torch.tensor([0.3, 0.7]))
    torch.save(model.state_dict(), tmp_path / "iqp.pt")
    loaded = load_conditioned_model(tmp_path / "iqp.pt", "tiny")
    assert loaded.config.quality == TINY_Q and loaded.iqp.default_quality == pytest.approx(0.7)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = model(x, torch.tensor([0.2, 0.9])), loaded(x, torch.tensor([0.2, 0.9]))
    assert torch.equal(a.code_idx, b.code_idx) and torch.equal(a.plus_idx, b.plus_idx)
    with pytest.raises(CheckpointError, match="unexpected 12 keys: iqp.threshold"):
        load_model(tmp_path / "iqp.pt", "tiny")  # the plain loader never silently drops iqp.*
    state = model.state_dict()
    del state["iqp.fuse.bias"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing 1 keys: iqp.fuse.bias"):
        load_conditioned_model(tmp_path / "broken.pt", "tiny")


def test_plain_checkpoint_is_not_a_conditioned_one(tmp_path: Path) -> None:
    torch.save(DAEFR(DAEFRConfig.from_name("tiny")).state_dict(), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="not a quality-conditioned"):
        load_conditioned_model(tmp_path / "plain.pt", "tiny")
    with pytest.raises(CheckpointError):
        quality_config_of({"iqp.threshold": torch.tensor(2.0)})


def test_quality_is_validated_and_a_plain_model_refuses_it() -> None:
    x = torch.zeros(2, 3, 64, 64)
    with pytest.raises(ValueError, match="plain DAEFR"):
        DAEFR(DAEFRConfig.from_name("tiny"))(x, torch.tensor([0.5, 0.5]))
    model = conditioned()
    for bad in (
        torch.tensor([1.5, 0.5]),
        torch.tensor([-0.1, 0.5]),
        torch.tensor([0.5]),
        torch.tensor([1, 0]),
    ):
        with pytest.raises(ValueError, match="quality"):
            model(x, bad)
    with pytest.raises(ValueError, match="quality"):
        model(x, torch.tensor([float("nan"), 0.5]))


def test_fresh_plug_in_decodes_like_the_plain_model() -> None:
    """A fresh iqp (zero FiLM, fuse = [I | 0]) reproduces the plain model's output."""
    plain = seed_model_(DAEFR(DAEFRConfig.from_name("tiny")), salt="iqp-plain").eval()
    model = DAEFR(replace(plain.config, quality=TINY_Q)).eval()
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(IQP_KEYS)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        a, b = plain(x), model(x, torch.tensor([0.9]))
    assert torch.equal(a.code_idx, b.code_idx)
    assert torch.allclose(a.restored, b.restored, atol=1e-5)
