"""Checkpoint files: official layout, formats, strictness, and refusing code in pickles."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest
import torch

from daefr import DAEFR, DAEFRConfig
from daefr.checkpoint import CheckpointError, load_model, load_weights_into, read_state_dict, save_safetensors
from daefr.model import TRAINING_ONLY_PREFIXES


@pytest.fixture(scope="module")
def official_full() -> DAEFR:
    return DAEFR(DAEFRConfig(training_modules=True))


def test_full_model_has_exactly_the_official_keys_in_order(official_full, official_manifest):
    ours = [(k, tuple(v.shape)) for k, v in official_full.state_dict().items()]
    assert ours == official_manifest
    assert len(ours) == 877
    assert sum(v.numel() for v in official_full.state_dict().values()) == 152_151_235


def test_inference_model_has_the_703_inference_keys(official_manifest):
    inference = [(k, s) for k, s in official_manifest if not k.startswith(TRAINING_ONLY_PREFIXES)]
    model = DAEFR(DAEFRConfig())
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == inference
    assert len(inference) == 703
    assert sum(p.numel() for p in model.parameters()) == 122_142_083


LIGHTNING_MODULES = (
    "pytorch_lightning",
    "pytorch_lightning.utilities",
    "pytorch_lightning.utilities.parsing",
)


def _save_lightning_checkpoint(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A PyTorch-Lightning-like checkpoint whose metadata holds a class from a package that
    the loading process does not have (as a user without Lightning would see it)."""

    class AttributeDict(dict):
        pass

    AttributeDict.__module__ = LIGHTNING_MODULES[-1]
    AttributeDict.__qualname__ = "AttributeDict"
    for name in LIGHTNING_MODULES:
        sys.modules[name] = types.ModuleType(name)
    sys.modules[LIGHTNING_MODULES[-1]].AttributeDict = AttributeDict
    try:
        hparams = AttributeDict(learning_rate=1.44e-4, ckpt_path="x")
        torch.save({"epoch": 3, "global_step": 100, "state_dict": state, "hyper_parameters": hparams}, path)
    finally:
        for name in LIGHTNING_MODULES:
            del sys.modules[name]


def test_lightning_checkpoint_with_metadata_objects_loads(tmp_path, tiny_model, tiny_input):
    path = tmp_path / "model.ckpt"
    _save_lightning_checkpoint(path, tiny_model.state_dict())
    loaded = load_model(path, "tiny")
    with torch.no_grad():
        assert torch.equal(loaded(tiny_input).restored, tiny_model(tiny_input).restored)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_and_load_round_trip(tmp_path, tiny_model, suffix):
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        assert save_safetensors(tiny_model, path) == len(tiny_model.state_dict())
    else:
        torch.save(tiny_model.state_dict(), path)
    state = read_state_dict(path)
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(state[key], value), key


def test_fp16_safetensors_halves_the_file_and_loads(tmp_path, tiny_model):
    full, half = tmp_path / "f32.safetensors", tmp_path / "f16.safetensors"
    save_safetensors(tiny_model, full)
    save_safetensors(tiny_model, half, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    model = load_model(half, "tiny")
    assert next(model.parameters()).dtype == torch.float32


def test_full_official_state_dict_loads_into_inference_model_dropping_training_keys(official_full):
    model = DAEFR(DAEFRConfig())
    state = official_full.state_dict()
    load_weights_into(model, state)
    assert torch.equal(model.position_emb, official_full.position_emb)


def test_mismatched_checkpoint_names_the_keys(tiny_model):
    state = dict(tiny_model.state_dict())
    del state["feat_emb.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["position_emb"] = torch.zeros(3, 3)
    model = DAEFR(DAEFRConfig.from_name("tiny"))
    with pytest.raises(CheckpointError) as err:
        load_weights_into(model, state, source="bad.ckpt")
    message = str(err.value)
    assert "bad.ckpt" in message
    assert "missing 1 keys: feat_emb.bias" in message
    assert "unexpected 1 keys: extra.weight" in message
    assert "position_emb (3, 3) != (256, 64)" in message


def test_official_checkpoint_does_not_fit_the_tiny_preset(tmp_path, tiny_model):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_model.state_dict(), path)
    with pytest.raises(CheckpointError, match="mis-shaped"):
        load_model(path, "official")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_code(tmp_path, tiny_model):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": tiny_model.state_dict(), "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match="refused global .*system"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"not a checkpoint at all", "not a readable"), (b"", "not a readable")],
)
def test_corrupt_files_are_clear_errors(tmp_path, content, match):
    for suffix in (".ckpt", ".safetensors"):
        path = tmp_path / f"bad{suffix}"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=match):
            read_state_dict(path)


def test_truncated_checkpoint_is_a_clear_error(tmp_path, tiny_model):
    path = tmp_path / "cut.pth"
    torch.save(tiny_model.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        read_state_dict(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_state_dict(tmp_path / "nope.ckpt")
