"""TensorRT: engine keys and availability on the CPU; building and comparing where TensorRT is."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest

from daefr.export.trt_build import TRT_MISSING, EngineSpec, engine_key, trt_unavailable_reason

SPEC = EngineSpec("daefr", "ab" * 32, 1, 4, 8, fp16=True, plugins=False)
GPU = {"gpu": "NVIDIA H100", "compute_capability": "9.0"}


@pytest.fixture(autouse=True)
def _plugin_target(monkeypatch):
    """Plugin engine keys include the PTX target, resolved from the GPU; there is none here."""
    from daefr.export import plugin_kernels

    monkeypatch.setattr(plugin_kernels, "TARGET", plugin_kernels.PluginTarget(90, 90))


def test_engine_key_changes_with_every_input():
    base = engine_key(SPEC, "11.4.0", GPU)
    assert base == engine_key(EngineSpec("daefr", "ab" * 32, 1, 4, 8, True, False), "11.4.0", dict(GPU))
    variants = [
        engine_key(replace(SPEC, onnx_sha256="cd" * 32), "11.4.0", GPU),
        engine_key(replace(SPEC, fp16=False), "11.4.0", GPU),
        engine_key(replace(SPEC, plugins=True), "11.4.0", GPU),
        engine_key(replace(SPEC, max_batch=16), "11.4.0", GPU),
        engine_key(replace(SPEC, opt_batch=2), "11.4.0", GPU),
        engine_key(replace(SPEC, graph="decoder"), "11.4.0", GPU),
        engine_key(SPEC, "10.13.0", GPU),
        engine_key(SPEC, "11.4.0", {**GPU, "compute_capability": "8.0"}),
        engine_key(SPEC, "11.4.0", {**GPU, "gpu": "NVIDIA H200"}),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_plugin_engine_keys_follow_the_kernel_code(monkeypatch):
    """A plugin ONNX only names its kernels: editing them (or another Triton) must rebuild."""
    from daefr.export import trt_build

    plugins = replace(SPEC, plugins=True)
    real = engine_key(plugins, "11.4.0", GPU)
    assert real == engine_key(plugins, "11.4.0", GPU)  # the digest of the installed sources
    monkeypatch.setattr(trt_build, "plugin_code_digest", lambda: "edited kernel")
    assert engine_key(plugins, "11.4.0", GPU) != real
    assert engine_key(SPEC, "11.4.0", GPU) == engine_key(SPEC, "11.4.0", GPU)  # no digest without plugins


def test_plugin_engine_keys_follow_the_drivers_ptx_limit(monkeypatch):
    """A plugin engine whose PTX a CUDA 13.0 driver JITs (9.0) is not one a 12.8 driver (8.7) can load."""
    from daefr.export import plugin_kernels

    plugins = replace(SPEC, plugins=True)
    newest = engine_key(plugins, "11.4.0", GPU)
    monkeypatch.setattr(plugin_kernels, "TARGET", plugin_kernels.PluginTarget(90, 87))
    assert engine_key(plugins, "11.4.0", GPU) != newest
    monkeypatch.setattr(plugin_kernels, "TARGET", plugin_kernels.PluginTarget(90, 87, max_shared_bytes=65536))
    assert len({newest, engine_key(plugins, "11.4.0", GPU)}) == 2
    monkeypatch.setattr(plugin_kernels, "TARGET", None)
    assert engine_key(SPEC, "11.4.0", GPU)  # a standard engine never asks for the PTX target


def test_engine_spec_validates_the_profile():
    with pytest.raises(ValueError, match="1 <= min <= opt <= max"):
        EngineSpec("daefr", "ab" * 32, 1, 8, 4, fp16=True, plugins=False)


def test_unavailable_reason_names_what_is_missing():
    reason = trt_unavailable_reason()
    if importlib.util.find_spec("tensorrt") is None:
        assert reason == TRT_MISSING
    else:
        assert reason is None or "GPU" in reason


def test_importing_the_export_package_does_not_import_tensorrt():
    import subprocess
    import sys

    code = "import sys, daefr.export.cli, daefr.export.trt_build, daefr.export.plugins; print('tensorrt' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.trt
def test_fp16_engine_matches_onnxruntime_and_eager(export_model, export_stages, tmp_path):
    from daefr.export.compare import compare_backends
    from daefr.export.graphs import CODE_IDX_DTYPE
    from daefr.export.manifest import sha256_file
    from daefr.export.onnx_export import export_graph
    from daefr.export.parity import FP16_MIN_CODE_AGREEMENT, FP16_RTOL
    from daefr.export.trt_build import build_engine, timing_cache_path

    onnx_path = export_graph(export_model, "daefr", tmp_path / "daefr.fp16.onnx", fp16=True)
    spec = EngineSpec("daefr", sha256_file(onnx_path), 1, 3, 4, fp16=True, plugins=False)
    result = build_engine(onnx_path, spec, tmp_path, timing_cache_path(tmp_path))
    assert not result.cached and result.path.is_file()
    assert build_engine(onnx_path, spec, tmp_path).cached  # same key: reused
    stage = export_stages[3]
    feed = {"lq_image": stage["lq_image"].numpy()}
    eager = {"restored": stage["restored"].numpy(), "code_idx": stage["code_idx"].to(CODE_IDX_DTYPE).numpy()}
    stats = compare_backends(feed, eager, onnx_path=onnx_path, engine_path=result.path)
    assert stats["trt_vs_eager"]["restored"]["max_rel"] <= FP16_RTOL
    assert stats["trt_vs_eager"]["code_idx"]["agreement"] >= FP16_MIN_CODE_AGREEMENT
    assert np.isfinite(stats["trt_vs_onnxrt"]["restored"]["max_abs"])
