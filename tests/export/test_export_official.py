"""The official (512x512) network: exported, checked and matched in ONNX Runtime (slow tier).

One eager pass at batch 1 serves every graph. The end-to-end graph is checked in FP32 and in
FP16; MHCA and the transformer at their official sizes; the encoders and decoder run inside
the end-to-end graph (the tiny tests cover them as separate graphs and batch 1 and 3).
"""

from __future__ import annotations

import onnx
import pytest

from daefr import DAEFR, DAEFRConfig
from daefr.export.onnx_export import export_graph
from daefr.export.parity import FP16_RTOL, FP32_RTOL, check_parity, stages_for
from daefr.export.precision import convert_to_fp16
from daefr.seeded_weights import seed_model_

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def official():
    model = seed_model_(DAEFR(DAEFRConfig.from_name("official")), salt="export-official").eval()
    return model, stages_for(model, (1,))


@pytest.fixture(scope="module")
def end_to_end(official, tmp_path_factory):
    model, _ = official
    return export_graph(model, "daefr", tmp_path_factory.mktemp("official") / "daefr.onnx")


def test_official_end_to_end_matches_eager(official, end_to_end):
    model, stages = official
    onnx.checker.check_model(str(end_to_end), full_check=True)
    result = check_parity(model, "daefr", end_to_end, stages)
    restored, codes = result.outputs
    assert codes.agreement == 1.0
    assert restored.max_rel <= FP32_RTOL
    assert result.passed


def test_official_end_to_end_fp16(official, end_to_end):
    model, stages = official
    path = end_to_end.with_name("daefr.fp16.onnx")
    onnx.save(convert_to_fp16(onnx.load(str(end_to_end))), str(path))  # export_graph(fp16=True)'s rewrite
    result = check_parity(model, "daefr", path, stages, precision="fp16")
    assert result.outputs[0].max_rel <= FP16_RTOL
    assert result.passed, result.summary()


@pytest.mark.parametrize("graph", ["mhca", "transformer"])
def test_official_graph_matches_eager(official, graph, tmp_path):
    model, stages = official
    path = export_graph(model, graph, tmp_path / f"{graph}.onnx")
    result = check_parity(model, graph, path, stages)
    assert result.passed, result.summary()
