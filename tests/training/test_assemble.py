"""Stage outputs -> the official DAEFR key layout."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from daefr.checkpoint import load_weights_into
from daefr.config import DAEFRConfig
from daefr.model import DAEFR
from daefr.training.assemble import (
    OFFICIAL_FROM_BRANCHES,
    AssemblyError,
    assemble_official_state_dict,
    daefr_from_branches,
    fusion_state,
)
from daefr.training.autoencoder import VQAutoencoder


def branch_states(config: DAEFRConfig) -> dict[str, dict[str, torch.Tensor]]:
    states = {}
    for seed, name in enumerate(("fixed_hq", "hq", "lq")):
        torch.manual_seed(seed)
        states[name] = VQAutoencoder(config.vqgan).state_dict()
    return states


def test_official_size_outputs_give_exactly_the_official_manifest(official_manifest) -> None:
    config = DAEFRConfig(training_modules=True)
    with torch.device("meta"):  # shapes only: no 300 MB of weights
        states = {name: VQAutoencoder(config.vqgan).state_dict() for name in ("fixed_hq", "hq", "lq")}
        fusion = fusion_state(DAEFR(config))
    state = assemble_official_state_dict(states["fixed_hq"], states["hq"], states["lq"], fusion)
    assert len(state) == 877
    assert {k: tuple(v.shape) for k, v in state.items()} == dict(official_manifest)


def test_every_official_key_comes_from_the_documented_source() -> None:
    config = DAEFRConfig.from_name("tiny", training_modules=True)
    states = branch_states(config)
    model = daefr_from_branches(config, states["fixed_hq"], states["hq"], states["lq"])
    official = model.state_dict()
    assert set(official) == set(DAEFR(config).state_dict())
    for official_prefix, source, prefix in OFFICIAL_FROM_BRANCHES:
        mapped = {k: v for k, v in states[source].items() if k.startswith(prefix)}
        assert mapped, (official_prefix, source)
        for key, value in mapped.items():
            assert torch.equal(official[official_prefix + key[len(prefix) :]], value), key
    # the three sources differ, so a swapped row would have failed above
    assert not torch.equal(states["hq"]["encoder.conv_in.weight"], states["lq"]["encoder.conv_in.weight"])


def test_fusion_tensors_are_kept_and_unknown_keys_refused() -> None:
    config = DAEFRConfig.from_name("tiny", training_modules=True)
    states = branch_states(config)
    fusion = {k: torch.full_like(v, 0.5) for k, v in fusion_state(DAEFR(config)).items()}
    model = daefr_from_branches(config, states["fixed_hq"], states["hq"], states["lq"], fusion)
    assert torch.all(model.position_emb == 0.5) and torch.all(model.idx_pred_layer[1].weight == 0.5)
    bad = dict(states["lq"], **{"extra.weight": torch.zeros(1)})
    with pytest.raises(AssemblyError, match="lq:extra.weight"):
        assemble_official_state_dict(states["fixed_hq"], states["hq"], bad, fusion)
    with pytest.raises(AssemblyError, match="not_fusion"):
        assemble_official_state_dict(
            states["fixed_hq"], states["hq"], states["lq"], {"not_fusion": torch.zeros(1)}
        )


def test_inference_model_accepts_the_assembled_weights() -> None:
    config = DAEFRConfig.from_name("tiny")
    states = branch_states(config)
    trained = daefr_from_branches(config, states["fixed_hq"], states["hq"], states["lq"])
    inference = DAEFR(replace(config, training_modules=False))
    load_weights_into(inference, trained.state_dict())  # training-only tensors dropped, rest strict
    assert torch.equal(inference.vqvae.decoder.conv_out.weight, states["fixed_hq"]["decoder.conv_out.weight"])
