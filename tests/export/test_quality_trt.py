"""The quality-conditioned transformer's TensorRT engine, against the ``fake_tensorrt`` stand-in
(no TensorRT here): its profile gives ``quality`` (B,) the batch range of ``fused_feat``."""

from __future__ import annotations

import fake_tensorrt
import onnx
import pytest
from onnx import TensorProto, helper

from daefr.export import trt_build
from daefr.export.quality_graph import build_quality_engine
from daefr.export.trt_build import EngineBuildError, EngineSpec, build_engine
from daefr.quality.checkpoint import load_conditioned_model


@pytest.fixture()
def fake_trt(monkeypatch):
    monkeypatch.setattr(trt_build, "gpu_identity", lambda: {"gpu": "stand-in", "compute_capability": "9.0"})
    with fake_tensorrt.installed(monkeypatch) as trt:
        yield trt


@pytest.mark.parametrize(("opt", "most"), [(1, 1), (4, 8), (3, 17)])
def test_quality_input_gets_the_same_batch_profile_as_fused_feat(
    fake_trt, iqp_checkpoints, tmp_path, opt, most
):
    model = load_conditioned_model(iqp_checkpoints["conditioned"], "tiny")
    result = build_quality_engine(model, tmp_path, opt_batch=opt, max_batch=most)
    assert result.path.is_file() and not result.cached
    (profile,) = fake_tensorrt.PROFILES
    d, r = model.config.vqgan.code_dim, model.config.vqgan.latent_size
    assert profile == {
        "fused_feat": ((1, d, r, r), (opt, d, r, r), (most, d, r, r)),
        "quality": ((1,), (opt,), (most,)),
    }
    again = build_quality_engine(model, tmp_path, opt_batch=opt, max_batch=most)
    assert again.cached and again.path == result.path and len(fake_tensorrt.PROFILES) == 1


def test_an_input_without_a_dynamic_batch_axis_is_refused(fake_trt, tmp_path):
    static = helper.make_tensor_value_info("quality", TensorProto.FLOAT, [2])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Identity", ["quality"], ["y"])], "g", [static], [out])
    path = tmp_path / "static.onnx"
    onnx.save(helper.make_model(graph), str(path))
    spec = EngineSpec("transformer_quality", trt_build.sha256_file(path), 1, 2, 4, fp16=False, plugins=False)
    with pytest.raises(
        EngineBuildError, match=r"input quality has shape \(2,\); an engine needs a dynamic batch"
    ):
        build_engine(path, spec, tmp_path)
    assert not list(tmp_path.glob("*.engine"))
