"""``--plugins``: the ONNX carries our kernels as TensorRT plugin nodes; the AOT adapters compile."""

from __future__ import annotations

import os
import subprocess
import sys

import onnx
import pytest

from daefr.export.plugins import NAMESPACE, export_plugin_graph


def _plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == NAMESPACE]


@pytest.fixture(scope="module")
def plugin_onnx(export_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("plugins")
    fp32 = export_plugin_graph(export_model, "transformer", out / "transformer.plugins.fp32.onnx")
    fp16 = export_plugin_graph(export_model, "transformer", out / "transformer.plugins.fp16.onnx", fp16=True)
    return onnx.load(str(fp32)), onnx.load(str(fp16))


def test_plugin_graph_has_the_custom_nodes(plugin_onnx, export_model):
    model, _ = plugin_onnx
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import} >= {(NAMESPACE, 1)}
    nodes = _plugin_nodes(model)
    layers = export_model.config.transformer_layers
    assert sorted(n.op_type for n in nodes) == ["code_head"] + ["fused_attention"] * layers
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["plugin_namespace"] == NAMESPACE.encode()  # plugin id daefr::<op_type>
        assert attrs["aot"] == 1
        if node.op_type == "code_head":
            assert attrs["eps"] == pytest.approx(export_model.idx_pred_layer[0].eps)
            assert len(node.input) == 5 and len(node.output) == 2
    # No plain-ONNX attention or code head is left: the plugins replace them.
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"Softmax", "ArgMax"}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    head = next(n for n in nodes if n.op_type == "code_head")
    assert types[head.output[0]] == onnx.TensorProto.INT32
    out = model.graph.output[0]
    assert out.name == "code_idx" and out.type.tensor_type.elem_type == onnx.TensorProto.INT32


def test_fp16_plugin_graph_feeds_the_head_fp32_and_attention_fp16(plugin_onnx):
    _, model = plugin_onnx
    onnx.checker.check_model(model, full_check=True)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.value_info}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    for node in _plugin_nodes(model):
        want = onnx.TensorProto.FLOAT if node.op_type == "code_head" else onnx.TensorProto.FLOAT16
        assert [types[i] for i in node.input] == [want] * len(node.input), node.op_type


def test_aot_adapters_compile_to_ptx_with_trt_calling_convention():
    """TensorRT launches AOT kernels as (inputs, int32 extras, outputs): check the PTX entry.

    Runs in a subprocess without TRITON_INTERPRET (the test session interprets kernels), so
    Triton compiles real PTX for sm_90; no GPU is needed to compile.
    """
    code = (
        "from daefr.export.plugin_kernels import compile_attention, compile_code_head\n"
        "import re\n"
        "for k in (compile_attention('fp16', 8, 64, arch=90), compile_code_head('fp32', 64, 64, 32, 1e-5, arch=90)):\n"
        "    entry = re.search(r'\\.entry (\\w+)\\(([^)]*)\\)', k.ptx)\n"
        "    params = ['ptr' if '.ptr' in p or '.u64' in p else 'u32' for p in entry.group(2).split(',')]\n"
        "    print(entry.group(1), ' '.join(params))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    # Triton may append its own scratch pointers after the outputs; the order before them is ours.
    assert lines["fused_attention_aot"].startswith("ptr ptr ptr u32 u32 ptr")
    assert lines["code_head_aot"].startswith("ptr ptr ptr ptr ptr u32 ptr ptr")


def _register_with_stand_in(monkeypatch):
    import fake_tensorrt_plugin

    from daefr.export import plugin_kernels, trt_plugin_defs

    monkeypatch.setattr(trt_plugin_defs, "_REGISTERED", False)
    monkeypatch.setattr(plugin_kernels, "TARGET_ARCH", 90)  # no GPU here: compile for the H100
    with fake_tensorrt_plugin.installed(monkeypatch) as trtp:
        trt_plugin_defs.register_once()  # TensorRT validates the annotations here
        return trtp


def test_plugin_definitions_pass_tensorrts_decoration_checks_and_launch_right(monkeypatch):
    """With a stand-in of ``tensorrt.plugin`` that validates as its source does: real (not
    string) annotations, the aot_impl return annotation, static dims through
    ``constant_value()``. The AOT kernels really compile (in a subprocess: this session
    interprets Triton, as the export CLI does)."""
    trtp = _register_with_stand_in(monkeypatch)
    assert set(trtp.AOT_IMPLS) == {"daefr::fused_attention", "daefr::code_head"}
    batch, tokens = trtp.ShapeExpr(None, "B"), trtp.ShapeExpr(256)

    q = trtp.TensorDesc((batch, trtp.ShapeExpr(1), tokens, trtp.ShapeExpr(512)), trtp.float16)
    name, ptx, launch, extra = trtp.AOT_IMPLS["daefr::fused_attention"](q, q, q, (q.like(),), 0)
    assert name == b"fused_attention_aot" and b".entry fused_attention_aot" in ptx
    assert launch.grid_z == 4 and launch.block_x == 128  # Dh 512 in 128-wide slices, 4 warps
    assert launch.grid_x.constant_value() == 4 and not launch.grid_y.is_constant  # batch stays symbolic
    assert len(extra.items) == 2

    x = trtp.TensorDesc((trtp.ShapeExpr(None, "M"), trtp.ShapeExpr(512)), trtp.float32)
    vec = trtp.TensorDesc((trtp.ShapeExpr(512),), trtp.float32)
    proj = trtp.TensorDesc((trtp.ShapeExpr(1024), trtp.ShapeExpr(512)), trtp.float32)
    codebook = trtp.TensorDesc((trtp.ShapeExpr(1024), trtp.ShapeExpr(256)), trtp.float32)
    idx, codes = trtp.REGISTERED["daefr::code_head"](x, vec, vec, proj, codebook, 1e-5)
    assert idx.dtype is trtp.int32 and codes.shape_expr[1].constant_value() == 256
    name, ptx, launch, extra = trtp.AOT_IMPLS["daefr::code_head"](
        x, vec, vec, proj, codebook, 1e-5, (idx, codes), 0
    )
    assert name == b"code_head_aot" and b".entry code_head_aot" in ptx
    assert not launch.grid_x.is_constant and len(extra.items) == 1


def test_a_dynamic_head_dim_is_a_clear_error(monkeypatch):
    trtp = _register_with_stand_in(monkeypatch)
    dynamic = trtp.ShapeExpr(None, "Dh")
    q = trtp.TensorDesc(
        (trtp.ShapeExpr(None, "B"), trtp.ShapeExpr(8), trtp.ShapeExpr(256), dynamic), trtp.float16
    )
    with pytest.raises(ValueError, match="attention head dim must be static"):
        trtp.AOT_IMPLS["daefr::fused_attention"](q, q, q, (q.like(),), 0)


def test_string_annotations_would_break_registration(monkeypatch):
    """Why trt_plugin_defs.py has no ``from __future__ import annotations``: the stand-in,
    like TensorRT, cannot check a string annotation."""
    import fake_tensorrt_plugin

    with fake_tensorrt_plugin.installed(monkeypatch) as trtp, pytest.raises(TypeError):

        @trtp.register("daefr::broken")
        def _desc(q: "trtp.TensorDesc") -> "trtp.TensorDesc":  # noqa: UP037
            return q

    source = open(os.path.join(os.path.dirname(__file__), "../../export/trt_plugin_defs.py")).read()
    assert "from __future__ import annotations" not in source.replace("NOT use ``from __future__", "")
