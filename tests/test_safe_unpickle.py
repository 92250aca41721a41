"""The checkpoint reader against real metadata (OmegaConf, numpy) and hostile or broken files.

Every file is written here by the test itself: real Lightning-style checkpoints saved with the
real ``omegaconf`` and ``numpy`` packages, payload pickles, and hand-made malformed pickles.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from daefr.checkpoint import CheckpointError, load_model, read_state_dict
from daefr.cli import convert
from daefr.safe_unpickle import OpaqueObject, restricted_torch_load

omegaconf = pytest.importorskip("omegaconf", reason="omegaconf is in the dev extra")


def _lightning(state: dict) -> dict:
    """What taming/DAEFR-style training code saves: OmegaConf configs and numpy loop state."""
    cfg = omegaconf.OmegaConf.create(
        {
            "model": {
                "base_learning_rate": 4.5e-6,
                "params": {"embed_dim": 256, "ddconfig": {"ch_mult": [1, 2]}},
            }
        }
    )
    return {
        "epoch": 3,
        "global_step": np.int64(1200),
        "state_dict": state,
        "hyper_parameters": {"config": cfg, "ckpt_path": None, "ignore_keys": omegaconf.ListConfig(["loss"])},
        "callbacks": {"ModelCheckpoint": {"best_model_score": np.float32(0.25), "best_k": np.arange(3.0)}},
        "loops": {"rng": np.random.get_state(), "gen": np.random.default_rng(0).bit_generator.state},
    }


def test_real_omegaconf_and_numpy_checkpoint_loads_inertly(tmp_path, tiny_model, tiny_input):
    path = tmp_path / "DAEFR_model.ckpt"
    torch.save(_lightning(tiny_model.state_dict()), path)
    loaded = load_model(path, "tiny")
    with torch.no_grad():
        assert torch.equal(loaded(tiny_input).restored, tiny_model(tiny_input).restored)
    # The metadata came back as placeholders, never as the real classes.
    obj = restricted_torch_load(str(path))
    config = obj["hyper_parameters"]["config"]
    assert isinstance(config, OpaqueObject) and config.qualified_name.startswith("omegaconf.")
    assert not isinstance(config, omegaconf.DictConfig)
    score = obj["callbacks"]["ModelCheckpoint"]["best_model_score"]
    assert isinstance(score, OpaqueObject) and "numpy" in score.qualified_name


def test_benign_checkpoint_prints_nothing_about_weights_only(tmp_path, tiny_model, capsys, caplog):
    path = tmp_path / "model.ckpt"
    torch.save(_lightning(tiny_model.state_dict()), path)
    caplog.set_level("DEBUG")
    read_state_dict(path)
    said = capsys.readouterr()
    for text in (said.out, said.err, caplog.text):
        assert "weights_only" not in text


class _RunsCode:
    def __init__(self, marker: Path, fn=os.system) -> None:
        self.marker, self.fn = marker, fn

    def __reduce__(self):
        return (self.fn, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


@pytest.mark.parametrize("gadget", [_RunsCode, _Eval])
def test_payload_beside_real_metadata_is_refused_and_never_runs(tmp_path, tiny_model, gadget):
    marker = tmp_path / "pwned"
    payload = _lightning(tiny_model.state_dict())
    payload["hyper_parameters"]["evil"] = gadget(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="refused global"):
        read_state_dict(path)
    assert not marker.exists()


def _state_with(tiny_model, key: str, value: torch.Tensor) -> dict:
    state = dict(tiny_model.state_dict())
    state[key] = value
    return state


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda s: s.to_sparse(), r"feat_emb\.bias \(sparse\)"),
        (lambda s: torch.empty(s.shape, device="meta"), r"feat_emb\.bias \(meta\)"),
        pytest.param(
            lambda s: torch.quantize_per_tensor(s, 0.1, 0, torch.qint8),
            r"feat_emb\.bias \(quantized\)",
            marks=pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor"),
        ),
        (lambda s: s.to(torch.int64), r"not floating-point: feat_emb\.bias \(torch\.int64\)"),
        (lambda s: s.bool(), r"not floating-point: feat_emb\.bias \(torch\.bool\)"),
        (lambda s: s.to(torch.complex64), r"not floating-point: feat_emb\.bias \(torch\.complex64\)"),
        (lambda s: s.clone().fill_(float("nan")), r"NaN or Inf: feat_emb\.bias"),
        (lambda s: s.clone().fill_(float("inf")), r"NaN or Inf: feat_emb\.bias"),
        (lambda s: s.double().fill_(1e300), r"not finite in torch\.float32: feat_emb\.bias"),
    ],
)
def test_tensors_of_the_wrong_kind_name_the_file_and_key(tmp_path, tiny_model, make, match):
    path = tmp_path / "odd.pth"
    torch.save(_state_with(tiny_model, "feat_emb.bias", make(tiny_model.state_dict()["feat_emb.bias"])), path)
    with pytest.raises(CheckpointError, match=match) as err:
        load_model(path, "tiny")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_non_finite_safetensors_is_refused(tmp_path, tiny_model):
    from safetensors.torch import save_file

    path = tmp_path / "nan.safetensors"
    save_file(_state_with(tiny_model, "feat_emb.bias", torch.full((64,), float("nan"))), str(path))
    with pytest.raises(CheckpointError, match=r"nan\.safetensors: 1 tensors hold NaN"):
        load_model(path, "tiny")


class _Rebuild:
    def __init__(self, args: tuple) -> None:
        self.args = args

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


def _zip_with_pickle(tmp_path: Path, name: str, pickle_bytes: bytes) -> Path:
    """A torch zip checkpoint whose data.pkl is replaced by ``pickle_bytes``."""
    base, out = tmp_path / "base.pth", tmp_path / name
    torch.save({"w": torch.zeros(3)}, base)
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = pickle_bytes if info.filename.endswith("data.pkl") else zin.read(info.filename)
            zout.writestr(info.filename, data)
    return out


def _pickle_with_persistent_id(pid: object) -> bytes:
    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return pid if obj == "STORAGE" else None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump({"w": "STORAGE"})
    return buf.getvalue()


MALFORMED = {
    "text.pth": lambda tmp: tmp.joinpath("text.pth").write_text("these are not weights\n"),
    "empty.ckpt": lambda tmp: tmp.joinpath("empty.ckpt").write_bytes(b""),
    "pid_short.pth": lambda tmp: _zip_with_pickle(
        tmp, "pid_short.pth", _pickle_with_persistent_id(("storage",))
    ),
    "pid_type.pth": lambda tmp: _zip_with_pickle(
        tmp, "pid_type.pth", _pickle_with_persistent_id(("bogus", 1))
    ),
    "pid_int.pth": lambda tmp: _zip_with_pickle(tmp, "pid_int.pth", _pickle_with_persistent_id(5)),
    "pid_str.pth": lambda tmp: _zip_with_pickle(
        tmp, "pid_str.pth", _pickle_with_persistent_id(("storage", "FloatStorage", "0", "cpu", 3))
    ),
    "pid_key.pth": lambda tmp: _zip_with_pickle(
        tmp, "pid_key.pth", _pickle_with_persistent_id(("storage", torch.FloatStorage, "nokey", "cpu", 3))
    ),
    "pid_huge.pth": lambda tmp: _zip_with_pickle(
        tmp, "pid_huge.pth", _pickle_with_persistent_id(("storage", torch.FloatStorage, "0", "cpu", 10**12))
    ),
    "cut_pickle.pth": lambda tmp: _zip_with_pickle(
        tmp, "cut_pickle.pth", pickle.dumps({"w": 1}, protocol=2)[:-3]
    ),
    "args_str.pth": lambda tmp: torch.save(
        {"w": _Rebuild(("abc", 0, (3,), (1,), False, collections.OrderedDict()))}, tmp / "args_str.pth"
    ),
    "args_size.pth": lambda tmp: torch.save({"w": _Rebuild((None, 0, "x", (1,)))}, tmp / "args_size.pth"),
    "args_few.pth": lambda tmp: torch.save({"w": _Rebuild((1,))}, tmp / "args_few.pth"),
    "keys.pth": lambda tmp: torch.save({1: torch.zeros(1)}, tmp / "keys.pth"),
    # a 10^12-element stride-0 view of one float: checking it would allocate a terabyte
    "expanded.pth": lambda tmp: torch.save({"w": torch.zeros(1).expand(10**6, 10**6)}, tmp / "expanded.pth"),
    # list(range(10**12)) in two opcodes: refused at the global, nothing allocated
    "range_bomb.pth": lambda tmp: tmp.joinpath("range_bomb.pth").write_bytes(
        b"\x80\x02c__builtin__\nlist\nc__builtin__\nrange\nJ\x00\xe4\x0bT\x85R\x85R."
    ),
    "list.pth": lambda tmp: torch.save([torch.zeros(1)], tmp / "list.pth"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_checkpoints_are_one_line_errors(tmp_path, name):
    MALFORMED[name](tmp_path)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path / name)
    message = str(err.value)
    assert message.startswith(str(tmp_path / name)) and "\n" not in message


@pytest.mark.parametrize("name", ["text.pth", "pid_type.pth", "args_str.pth"])
def test_convert_cli_exits_2_with_one_line(tmp_path, name, capsys):
    MALFORMED[name](tmp_path)
    code = convert.main([str(tmp_path / name), "-o", str(tmp_path / "out.safetensors"), "--preset", "tiny"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and name in err and "Traceback" not in err
    assert not (tmp_path / "out.safetensors").exists()


def test_a_fifo_as_checkpoint_does_not_hang(tmp_path):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        read_state_dict(fifo)
