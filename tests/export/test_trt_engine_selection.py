"""The trt backend runs the engine the plan asks for: ``--precision fp16 --backend trt`` loads the
FP16 manifest entry, ``--plugins`` the plugin one, and daefr-report's trt rows load what they are
labelled. TensorRT cannot be installed here: the stand-in ``tensorrt`` module records which
engine file is deserialised (and stops there, as there is no GPU to run it on)."""

from __future__ import annotations

import contextlib
import json

import fake_tensorrt_plugin
import pytest
import torch

from daefr.export.manifest import FORMAT, MANIFEST_NAME, sha256_file
from daefr.runtime.backends import trt_backend

ENGINES = {  # file -> (fp16, plugins)
    "daefr.fp32.engine": (False, False),
    "daefr.fp16.engine": (True, False),
    "daefr.fp16.plugins.engine": (True, True),
}


class Deserialised(Exception):
    """Raised by the stand-in runtime with the engine bytes it was given."""


@pytest.fixture()
def engine_dir(tmp_path):
    entries = []
    for name, (fp16, plugins) in ENGINES.items():
        (tmp_path / name).write_bytes(name.encode())  # each engine's bytes name its file
        entries.append({
            "graph": "daefr", "file": name, "sha256": sha256_file(tmp_path / name), "tensorrt": "11.0.0-stand-in",
            "gpu": "NVIDIA H100", "compute_capability": "9.0", "fp16": fp16, "plugins": plugins,
            "profile": {"min": 1, "opt": 4, "max": 8},
        })  # fmt: skip
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": FORMAT, "engines": entries}))
    return tmp_path


@pytest.fixture()
def stand_in(monkeypatch):
    with fake_tensorrt_plugin.installed(monkeypatch):
        import sys

        trt = sys.modules["tensorrt"]

        class Runtime:
            def __init__(self, logger: object) -> None:
                pass

            def deserialize_cuda_engine(self, data: bytes) -> None:
                raise Deserialised(data.decode())

        class Logger:
            WARNING = 2

            def __init__(self, level: int) -> None:
                pass

        monkeypatch.setattr(trt, "Runtime", Runtime, raising=False)
        monkeypatch.setattr(trt, "Logger", Logger, raising=False)
        # No GPU here: the checks before the engine choice are the TensorRT helper's to test.
        monkeypatch.setattr(trt_backend, "require_cuda", lambda backend, device: None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
        monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: None)
        # The backend makes its device current (torch.cuda.device), which needs a real GPU.
        monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
        yield


@pytest.mark.parametrize(
    ("flags", "engine"),
    [
        ([], "daefr.fp32.engine"),
        (["--precision", "fp16"], "daefr.fp16.engine"),
        (["--fp16"], "daefr.fp16.engine"),
        (["--precision", "fp16", "--plugins"], "daefr.fp16.plugins.engine"),
    ],
)
def test_restore_with_trt_loads_the_engine_of_the_requested_precision(
    stand_in, engine_dir, tmp_path, flags, engine
):
    from daefr.cli.restore import main

    face = tmp_path / "face.png"
    face.write_bytes(b"")
    argv = [str(face), "-o", str(tmp_path / "out"), "--backend", "trt", "--engine-dir", str(engine_dir),
            "--device", "cuda", "-q", *flags]  # fmt: skip
    with pytest.raises(Deserialised) as info:
        main(argv)
    assert str(info.value) == engine


def test_a_precision_the_export_did_not_build_is_a_clear_error(stand_in, engine_dir, tmp_path, capsys):
    from daefr.cli.restore import main

    manifest = json.loads((engine_dir / MANIFEST_NAME).read_text())
    manifest["engines"] = [e for e in manifest["engines"] if e["fp16"]]  # daefr-export --fp16 only
    (engine_dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    face = tmp_path / "face.png"
    face.write_bytes(b"")
    argv = [str(face), "-o", str(tmp_path / "out"), "--backend", "trt", "--engine-dir", str(engine_dir),
            "--device", "cuda", "-q"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "lists no daefr fp32 engine (plugins=False), only fp16, fp16 + plugins" in err
    assert "--precision" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("row", "engine"),
    [("trt fp16", "daefr.fp16.engine"), ("trt fp16 + plugins", "daefr.fp16.plugins.engine")],
)
def test_report_trt_rows_load_what_they_are_labelled(stand_in, engine_dir, row, engine):
    from daefr.runtime.report.variants import trt_variants

    with pytest.raises(Deserialised) as info:
        trt_variants(torch.device("cuda"), {row: engine_dir})
    assert str(info.value) == engine
