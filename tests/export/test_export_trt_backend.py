"""TensorRT engine build and backend against the ``fake_tensorrt`` stand-in (issue 17, items 6-9, 14).

Kept beside the stand-ins: the backend lives in ``runtime/backends/trt_backend.py``, but what
is tested here is how it calls TensorRT, which only the stand-in can show on this machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys

import fake_tensorrt
import pytest
import torch

from daefr.export.manifest import FORMAT, MANIFEST_NAME, sha256_file
from daefr.export.trt_build import attach_timing_cache
from daefr.runtime.backends import trt_backend
from daefr.runtime.backends.base import BackendError


class _FakeStream:
    cuda_stream = 0

    def __init__(self, device: object = None) -> None:
        self.device = device

    def wait_stream(self, other: object) -> None:
        pass

    def synchronize(self) -> None:
        pass


@contextlib.contextmanager
def _device(device: object):  # noqa: ANN202
    """torch.cuda.device stand-in: makes ``device`` current for the stand-in's records."""
    previous = fake_tensorrt.CURRENT_DEVICE[0]
    fake_tensorrt.CURRENT_DEVICE[0] = torch.device(device)
    try:
        yield
    finally:
        fake_tensorrt.CURRENT_DEVICE[0] = previous


@pytest.fixture
def fake_cuda(monkeypatch):
    """Enough of torch.cuda for TrtRestorer on a machine without a GPU."""
    monkeypatch.setattr(trt_backend, "require_cuda", lambda name, device: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "Stream", _FakeStream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "device", _device)
    fake_tensorrt.CURRENT_DEVICE[0] = torch.device("cuda", 0)  # GPU 0 is current, as in a fresh process
    with fake_tensorrt.installed(monkeypatch) as trt:
        yield trt


def _engine_dir(tmp_path, plugins: bool = False):  # noqa: ANN001, ANN202
    engine = tmp_path / "daefr.0123456789abcdef.engine"
    engine.write_bytes(b"engine bytes")
    entry = {
        "graph": "daefr", "file": engine.name, "sha256": sha256_file(engine), "tensorrt": "11.1.0.106",
        "compute_capability": "9.0", "fp16": False, "plugins": plugins,
        "profile": {"min": 1, "opt": 2, "max": 4},
    }  # fmt: skip
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": FORMAT, "engines": [entry]}))
    return tmp_path


def test_engine_and_context_are_made_on_the_requested_gpu(fake_cuda, tmp_path):
    restorer = trt_backend.TrtRestorer(_engine_dir(tmp_path), device="cuda:1")
    made = {call: device for call, device in fake_cuda.CALLS}
    assert made["deserialize_cuda_engine"] == torch.device("cuda", 1)
    assert made["create_execution_context"] == torch.device("cuda", 1)
    assert restorer.resolution == 64 and fake_tensorrt.CURRENT_DEVICE[0] == torch.device("cuda", 0)


def test_inference_runs_on_the_restorers_gpu_and_refuses_a_shape_outside_the_profile(
    fake_cuda, tmp_path, monkeypatch
):
    restorer = trt_backend.TrtRestorer(_engine_dir(tmp_path), device="cuda:1")
    restorer._device = torch.device(
        "cpu"
    )  # outputs are allocated here (no GPU); the TensorRT calls are what is checked
    monkeypatch.setattr(trt_backend.TrtRestorer, "_upload", lambda self, x: x.to(self.dtype).contiguous())
    restored, codes = restorer.restore(torch.zeros(3, 3, 64, 64))
    assert restored.shape == (3, 3, 64, 64) and codes.shape == (3, 256)
    ran = [device for call, device in fake_cuda.CALLS if call in ("set_input_shape", "execute_async_v3")]
    assert ran == [torch.device("cpu")] * 2  # under torch.cuda.device(restorer.device)

    # set_input_shape returns False (it does not raise) for a shape the profile excludes
    monkeypatch.setattr(fake_tensorrt.FakeContext, "set_input_shape", lambda self, name, shape: False)
    with pytest.raises(BackendError, match=r"refuses input shape \(1, 3, 64, 64\) for lq_image"):
        restorer.restore(torch.zeros(1, 3, 64, 64))
    assert not [c for c, _ in fake_cuda.CALLS if c == "execute_async_v3"][1:]  # nothing ran after the refusal


def test_plugin_engines_load_without_registering_plugins_or_importing_triton(
    fake_cuda, tmp_path, monkeypatch
):
    from daefr.export import plugins

    def fail() -> None:
        raise AssertionError("register_plugins called at run time")

    monkeypatch.setattr(plugins, "register_plugins", fail)
    monkeypatch.setitem(sys.modules, "triton", None)  # importing triton now raises ImportError
    restorer = trt_backend.TrtRestorer(_engine_dir(tmp_path, plugins=True), device="cuda:0", plugins=True)
    assert restorer.engine is fake_tensorrt.Runtime.ENGINE


@pytest.mark.parametrize(
    ("config", "blob", "attached", "warns"),
    [
        (fake_tensorrt.BuilderConfig(), b"good", b"good", False),
        (fake_tensorrt.BuilderConfig(), b"corrupt", b"", True),  # create_timing_cache -> None
        (fake_tensorrt.BuilderConfig(accepts=False), b"foreign", b"", True),  # set_timing_cache -> False
        (fake_tensorrt.BuilderConfig(creates=False), b"good", None, True),  # no cache at all
        (fake_tensorrt.BuilderConfig(), None, b"", False),  # no file yet
    ],
)
def test_timing_cache_falls_back_instead_of_passing_none(tmp_path, caplog, config, blob, attached, warns):
    path = tmp_path / "timing.cache"
    if blob is not None:
        path.write_bytes(blob)
    with caplog.at_level(logging.WARNING):
        ok = attach_timing_cache(config, path)
    assert ok == (attached is not None)
    assert (config.attached.blob if config.attached else None) == attached
    assert bool(caplog.records) == warns


def test_build_engine_refuses_plugins_on_tensorrt_before_10_9(monkeypatch, tmp_path):
    from daefr.export.trt_build import EngineBuildError, EngineSpec, build_engine

    spec = EngineSpec("daefr", "ab" * 32, 1, 1, 1, fp16=False, plugins=True)
    with fake_tensorrt.installed(monkeypatch, version="10.8.0.43"):
        with pytest.raises(EngineBuildError, match=r"model.onnx: --plugins needs TensorRT >= 10.9"):
            build_engine(tmp_path / "model.onnx", spec, tmp_path)


def test_plugin_engines_run_one_input_shape_per_context(fake_cuda, tmp_path, monkeypatch):
    """NVIDIA/TensorRT#4849: AOT plugins leak CUDA modules on shape changes (11.1, 11.2.1)."""
    shapes = []
    real = fake_tensorrt.FakeContext.set_input_shape

    def record(self, name, shape):  # noqa: ANN001, ANN202
        shapes.append(tuple(shape))
        return real(self, name, shape)

    monkeypatch.setattr(fake_tensorrt.FakeContext, "set_input_shape", record)
    monkeypatch.setattr(trt_backend.TrtRestorer, "_upload", lambda self, x: x.to(self.dtype).contiguous())
    for plugins, want in ((True, {4}), (False, {3, 1, 4, 2})):
        restorer = trt_backend.TrtRestorer(
            _engine_dir(tmp_path, plugins=plugins), device="cuda:0", plugins=plugins
        )
        restorer._device = torch.device("cpu")
        shapes.clear()
        for b in (3, 1, 6):  # 6 = a chunk of 4 and one of 2
            restored, codes = restorer.restore(torch.zeros(b, 3, 64, 64))
            assert restored.shape == (b, 3, 64, 64) and codes.shape == (b, 256)
        assert {s[0] for s in shapes} == want  # plugin engines: always the profile's max batch
