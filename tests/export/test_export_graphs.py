"""Every graph of the tiny preset: export, ONNX checker, ORT parity (batch 1 and 3), FP16."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from daefr.export.graphs import GRAPHS, build_graph, tensor_specs
from daefr.export.onnx_export import ExportError, export_graph
from daefr.export.parity import (
    FP16_LOGIT_TIE,
    FP16_MIN_CODE_AGREEMENT,
    FP16_RTOL,
    FP32_RTOL,
    check_parity,
    eager_stages,
    parity_images,
)
from daefr.export.precision import keeps_fp32


def _io(model: onnx.ModelProto, values) -> list[tuple[str, str, tuple]]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(d.dim_param or d.dim_value for d in t.shape.dim)
        out.append((v.name, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, dims))
    return out


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_graph_exports_checks_and_matches_eager(graph, export_model, export_stages, tmp_path):
    path = export_graph(export_model, graph, tmp_path / f"{graph}.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    specs = tensor_specs(export_model)
    spec = GRAPHS[graph]
    for names, values in ((spec.inputs, model.graph.input), (spec.outputs, model.graph.output)):
        expected = [(n, str(specs[n].dtype).removeprefix("torch."), specs[n].shape) for n in names]
        assert _io(model, values) == expected
    result = check_parity(export_model, graph, path, export_stages)
    assert result.batches == (1, 3)
    for out in result.outputs:
        if out.name == "code_idx":
            assert out.agreement == 1.0, out
        else:
            assert out.max_rel <= FP32_RTOL, out
    assert result.passed


@pytest.mark.parametrize("graph", list(GRAPHS))
def test_fp16_graph_keeps_policy_islands_and_stays_close(graph, export_model, export_stages, tmp_path):
    path = export_graph(export_model, graph, tmp_path / f"{graph}.fp16.onnx", fp16=True)
    model = onnx.load(str(path))
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*model.graph.value_info, *model.graph.input)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    half = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert half, "no float16 weights: the FP16 variant is still float32"
    islands = [n for n in model.graph.node if keeps_fp32(n) and n.op_type != "ArgMax"]
    assert islands
    for node in islands:  # normalisations, softmax, code head compute in float32
        assert all(types[i] == onnx.TensorProto.FLOAT for i in node.input if i), node.name
    assert [i.type.tensor_type.elem_type for i in model.graph.input if i.name != "code_idx"] in (
        [onnx.TensorProto.FLOAT],
        [onnx.TensorProto.FLOAT] * 2,
        [],
    )
    result = check_parity(export_model, graph, path, export_stages, precision="fp16")
    for out in result.outputs:
        if out.name == "code_idx":
            assert out.agreement >= FP16_MIN_CODE_AGREEMENT and out.worst_logit_gap <= FP16_LOGIT_TIE, out
        else:
            assert out.max_rel <= FP16_RTOL, out
    assert result.passed


def test_graph_modules_are_the_eager_model(export_model):
    image = parity_images(export_model, 2, seed=5)
    stages = eager_stages(export_model, image)
    with torch.no_grad():
        restored, code_idx = build_graph(export_model, "daefr")(image)
        reference = export_model(image)
        decoded = build_graph(export_model, "decoder")(code_idx)
    assert code_idx.dtype == torch.int32
    assert torch.equal(code_idx.long(), reference.code_idx)
    assert torch.equal(stages["code_idx"], reference.code_idx)
    torch.testing.assert_close(restored, reference.restored, rtol=0, atol=1e-6)
    torch.testing.assert_close(decoded, reference.restored, rtol=0, atol=1e-6)


def test_dynamo_export_matches_eager(export_model, export_stages, tmp_path):
    path = export_graph(export_model, "mhca", tmp_path / "mhca.onnx", dynamo=True)
    result = check_parity(export_model, "mhca", path, export_stages)
    assert result.passed, result.summary()


def test_parity_catches_a_wrong_graph(export_model, export_stages, tmp_path):
    path = export_graph(export_model, "mhca", tmp_path / "mhca.onnx")
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if t.name.endswith("proj_out.weight"))
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.01, weight.name))
    onnx.save(model, str(path))
    result = check_parity(export_model, "mhca", path, export_stages)
    assert not result.passed
    assert result.outputs[0].max_rel > FP32_RTOL


def test_fp16_code_criteria_reject_a_wrong_choice(export_model, export_stages):
    from daefr.export.parity import _compare_codes, _judge

    stage = export_stages[1]
    logits = stage["logits"]
    worst = logits.argmin(-1).numpy().astype(np.int32)  # the least likely code everywhere
    agreement, gap = _compare_codes(worst, stage)
    assert gap > FP16_LOGIT_TIE
    assert not _judge("code_idx", {"finite": 1.0, "agreement": 0.999, "gap": gap}, "fp16").passed
    assert _judge("code_idx", {"finite": 1.0, "agreement": 0.999, "gap": 1e-3}, "fp16").passed
    assert not _judge("code_idx", {"finite": 1.0, "agreement": 0.999, "gap": 0.0}, "fp32").passed


@pytest.mark.parametrize(("opset", "dynamo"), [(16, False), (21, False), (17, True)])
def test_unsupported_opsets_are_refused(export_model, tmp_path, opset, dynamo):
    with pytest.raises(ValueError, match=f"opset {opset}"):
        export_graph(export_model, "mhca", tmp_path / "x.onnx", opset=opset, dynamo=dynamo)
    assert not list(tmp_path.iterdir())


def test_unknown_graph_is_refused(export_model, tmp_path):
    with pytest.raises(ValueError, match="unknown graph 'encoder'"):
        export_graph(export_model, "encoder", tmp_path / "x.onnx")


def test_failed_export_leaves_no_file(export_model, tmp_path, monkeypatch):
    import daefr.export.onnx_export as onnx_export

    target = tmp_path / "mhca.fp16.onnx"
    target.write_bytes(b"previous")

    def broken(model):
        raise RuntimeError("simulated failure in the FP16 rewrite")

    monkeypatch.setattr(onnx_export, "convert_to_fp16", broken)
    with pytest.raises(ExportError, match="mhca"):
        export_graph(export_model, "mhca", target, fp16=True)
    assert target.read_bytes() == b"previous"  # untouched, no half-written replacement
    assert [p.name for p in tmp_path.iterdir()] == ["mhca.fp16.onnx"]  # no temp file left
