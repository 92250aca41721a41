"""The proof that this is DAEFR: the original implementation's forward pass, reproduced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from daefr import DAEFR, DAEFRConfig
from daefr.checkpoint import load_weights_into
from daefr.seeded_weights import seeded_state_dict

RTOL = 1e-4  # float32 features vs the original, relative to each tensor's max magnitude


def relative_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    ref = torch.from_numpy(reference)
    return ((ours.reshape(ref.shape) - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(scope="module")
def official_outputs(official_manifest, reference_input):
    model = DAEFR(DAEFRConfig(training_modules=True)).eval()
    load_weights_into(model, seeded_state_dict(official_manifest), source="conformance weights")
    with torch.no_grad():
        lq = model.encode_lq(reference_input)
        hq = model.encode_hq(reference_input)
        fused = model.fuse(hq, lq)
        logits = model.predict_logits(fused)
        result = model(reference_input)
    return {"lq_feat": lq, "hq_feat": hq, "fused_feat": fused, "logits": logits, "result": result}


def test_every_code_index_matches_the_original(official_outputs, reference_dir):
    expected = np.load(reference_dir / "official_forward" / "code_idx.npy")
    got = official_outputs["result"].code_idx[0].numpy()
    assert got.shape == expected.shape == (256,)
    assert (got == expected).all(), f"{(got != expected).sum()} of 256 codes differ"


@pytest.mark.parametrize("name", ["lq_feat", "hq_feat", "fused_feat", "logits"])
def test_intermediate_features_match_the_original(official_outputs, reference_dir, name):
    expected = np.load(reference_dir / "official_forward" / f"{name}.npy")
    assert relative_error(official_outputs[name], expected) < RTOL


def test_restored_image_matches_the_original(official_outputs, reference_dir):
    expected = np.load(reference_dir / "official_forward" / "restored.npy")
    assert relative_error(official_outputs["result"].restored, expected) < RTOL


def test_argmax_of_logits_is_the_code(official_outputs):
    logits = official_outputs["logits"]
    assert torch.equal(logits.argmax(-1), official_outputs["result"].code_idx)


def test_vendored_reference_is_the_shared_one(reference_dir):
    # The team's copy sits beside the checkout (shared/reference) where there is one.
    shared_reference = Path(__file__).resolve().parents[2] / "shared" / "reference"
    if not shared_reference.is_dir():
        pytest.skip(f"no shared reference at {shared_reference} to compare the vendored copy with")
    shared = sorted(p.relative_to(shared_reference) for p in shared_reference.rglob("*") if p.is_file())
    vendored = sorted(p.relative_to(reference_dir) for p in reference_dir.rglob("*") if p.is_file())
    assert vendored == shared
    for rel in shared:
        assert (reference_dir / rel).read_bytes() == (shared_reference / rel).read_bytes(), rel
