"""``--plugins``: the ONNX carries our kernels as TensorRT plugin nodes; the AOT adapters compile."""

from __future__ import annotations

import dataclasses
import json
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
        "from daefr.export.plugin_kernels import PluginTarget, compile_attention, compile_code_head\n"
        "import re\n"
        "t = PluginTarget(90, 87)\n"
        "for k in (compile_attention('fp16', 8, 64, t), compile_code_head('fp32', 64, 64, 32, 1e-5, t)):\n"
        "    entry = re.search(r'\\.entry (\\w+)\\(([^)]*)\\)', k.ptx)\n"
        "    assert entry.group(1) == k.name and '.version 8.7' in k.ptx, (entry.group(1), k.name)\n"
        "    params = ['ptr' if '.ptr' in p or '.u64' in p else 'u32' for p in entry.group(2).split(',')]\n"
        "    print(entry.group(1).rsplit('_', 2)[0], ' '.join(params))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())
    # exactly what TensorRT passes: Triton's trailing scratch pointers are gone
    assert lines["fused_attention_aot"] == "ptr ptr ptr u32 u32 ptr"
    assert lines["code_head_aot"] == "ptr ptr ptr ptr ptr u32 ptr ptr"


def _register_with_stand_in(monkeypatch):
    import fake_tensorrt_plugin

    from daefr.export import plugin_kernels, trt_plugin_defs

    monkeypatch.setattr(trt_plugin_defs, "_REGISTERED", False)
    # no GPU here: compile for the H100 with the PTX a CUDA 12.8 driver JITs
    monkeypatch.setattr(plugin_kernels, "TARGET", plugin_kernels.PluginTarget(90, 87))
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
    assert name.startswith(b"fused_attention_aot_fp16_") and b".entry " + name + b"(" in ptx
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
    assert name.startswith(b"code_head_aot_fp32_") and b".entry " + name + b"(" in ptx
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


def _no_interpret_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_plugin_lint_passes_every_kernel_the_model_needs():
    """The proof of issue 17: every plugin kernel of the official model, compiled as aot_impl
    compiles it (sm_90a, offline), within the PTX limit, with exactly TensorRT's parameters,
    within 48 KiB of shared memory, under unique names, and accepted by ptxas."""
    cmd = [sys.executable, "-m", "daefr.export.plugin_lint", "--ptx-version", "87"]
    done = subprocess.run(cmd, env=_no_interpret_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if " B shared, PTX " in line]
    # the VQGAN's 1x512 attention and the transformer's attention, each in fp32 and fp16, and the head
    assert len(rows) >= 6 and all(line.endswith("PTX 8.7") for line in rows), done.stdout
    assert any(line.startswith("fused_attention(heads=1, head_dim=512) fp32") for line in rows)
    assert done.stdout.strip().splitlines()[-1] == "OK: 0 problem(s) for sm_90, PTX 8.7"


def _raw_triton_kernel() -> str:
    """PTX as the code before issue 17 handed it over: Triton 3.9's .version 9.4 and its two
    trailing scratch pointers (8 params for attention's 6)."""
    params = ",\n".join(
        f"\t.param .u64 .ptr .global .align 1 fused_attention_aot_param_{i}" for i in range(8)
    )
    return (
        ".version 9.4\n.target sm_90a\n.address_size 64\n"
        f".visible .entry fused_attention_aot(\n{params}\n)\n{{\n\tret;\n}}\n"
    )


def test_plugin_lint_finds_what_the_old_kernels_got_wrong():
    from daefr.export import plugin_kernels as pk
    from daefr.export.plugin_lint import lint_kernels

    old = pk.CompiledKernel("fused_attention_aot", _raw_triton_kernel(), 4, 98304, 8)
    problems = lint_kernels([("fp32 8x64", "fused_attention", old), ("fp32 1x512", "fused_attention", old)],
                            pk.PluginTarget(90, 90), assemble=False)  # fmt: skip
    text = "\n".join(problems)
    assert "PTX .version 9.4 is newer than the limit 9.0" in text
    assert "8 .params, TensorRT passes 6" in text
    assert "98304 B of shared memory, limit 49152 B" in text
    assert "entry name fused_attention_aot is used by 2 kernels" in text


def test_trimming_keeps_trt_params_and_refuses_a_read_scratch_pointer():
    from daefr.export import plugin_kernels as pk

    trimmed = pk.for_tensorrt(_raw_triton_kernel(), "fused_attention_aot_fp32_x", 6)
    name, params = pk.entry_params(trimmed)
    assert name == "fused_attention_aot_fp32_x" and len(params) == 6
    assert params[-1].endswith("fused_attention_aot_fp32_x_param_5")
    reads_scratch = _raw_triton_kernel().replace(
        "\tret;", "\tld.param.b64 %rd1, [fused_attention_aot_param_7];"
    )
    with pytest.raises(pk.PluginCompileError, match=r"reads parameters \[7\] beyond the 6"):
        pk.for_tensorrt(reads_scratch, "x", 6)


def test_a_kernel_above_the_shared_memory_limit_fails_with_a_clear_message():
    code = (
        "from daefr.export.plugin_kernels import PluginTarget, PluginCompileError, compile_attention\n"
        "try:\n"
        "    compile_attention('fp32', 1, 512, PluginTarget(90, 87, max_shared_bytes=32768))\n"
        "except PluginCompileError as err:\n"
        "    print(err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=_no_interpret_env(), capture_output=True, text=True, timeout=300
    )
    assert "needs 49152 bytes of shared memory, more than the 32768" in done.stdout, done.stderr[-2000:]
    assert "build without --plugins" in done.stdout


@pytest.mark.parametrize(
    ("field", "value"), [("arch", 5), ("ptx_version", 94), ("ptx_version", 0), ("max_shared_bytes", 0)]
)
def test_plugin_target_validates_each_field(field, value):
    from daefr.export.plugin_kernels import PluginTarget

    kwargs = {"arch": 90, "ptx_version": 87, field: value}
    with pytest.raises(ValueError, match=f"PluginTarget.{field}"):
        PluginTarget(**kwargs)


def test_interpreted_compiles_are_memoised(monkeypatch):
    """Under TRITON_INTERPRET every aot_impl call used to start a new compiler subprocess."""
    from daefr.export import plugin_kernels as pk

    runs = []

    def fake_run(cmd, **kwargs):  # noqa: ANN001, ANN003, ANN202
        runs.append(kwargs["input"])
        kernel = pk.CompiledKernel("k", ".version 8.7", 4, 0, 6)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps(dataclasses.asdict(kernel)), stderr="")

    monkeypatch.setattr(pk, "interpreting", lambda: True)
    monkeypatch.setattr(pk.subprocess, "run", fake_run)
    pk._compile_in_subprocess.cache_clear()
    target = pk.PluginTarget(90, 87)
    first = pk.compile_attention("fp16", 8, 64, target)
    assert pk.compile_attention("fp16", 8, 64, target) is first and len(runs) == 1
    pk.compile_attention("fp32", 8, 64, target)
    pk.compile_attention("fp16", 8, 64, pk.PluginTarget(90, 80))  # another PTX limit: another kernel
    assert len(runs) == 3
    pk._compile_in_subprocess.cache_clear()


@pytest.mark.parametrize("version", ["10.7.0.23", "10.8.0.43"])
def test_tensorrt_before_10_9_is_refused_for_plugins(monkeypatch, version):
    import fake_tensorrt_plugin

    from daefr.export import trt_plugin_defs

    monkeypatch.setattr(trt_plugin_defs, "_REGISTERED", False)
    with fake_tensorrt_plugin.installed(monkeypatch) as trtp:
        sys.modules["tensorrt"].__version__ = version
        with pytest.raises(
            trt_plugin_defs.PluginSupportError, match=rf"needs TensorRT >= 10.9 .* this is TensorRT {version}"
        ):
            trt_plugin_defs.register_once()
        assert not trtp.AOT_IMPLS


def test_a_tensorrt_plugin_module_without_aot_impl_is_refused(monkeypatch):
    import fake_tensorrt_plugin

    from daefr.export import trt_plugin_defs

    monkeypatch.setattr(trt_plugin_defs, "_REGISTERED", False)
    with fake_tensorrt_plugin.installed(monkeypatch) as trtp:
        sys.modules["tensorrt"].__version__ = "10.9.0.34"
        monkeypatch.delattr(trtp, "aot_impl")
        with pytest.raises(trt_plugin_defs.PluginSupportError, match="tensorrt.plugin.aot_impl"):
            trt_plugin_defs.register_once()
    assert trt_plugin_defs.tensorrt_release("10.10.0.31") == (10, 10) > trt_plugin_defs.MIN_TENSORRT


def test_plugin_lint_usage_errors_exit_2(monkeypatch, capsys):
    from daefr.export import plugin_kernels, plugin_lint

    monkeypatch.setattr(plugin_kernels, "interpreting", lambda: True)
    assert plugin_lint.main([]) == 2
    assert "unset TRITON_INTERPRET" in capsys.readouterr().err
    monkeypatch.setattr(plugin_kernels, "interpreting", lambda: False)
    for argv, message in (
        (["--arch", "5"], "PluginTarget.arch"),
        (["--ptx-version", "94"], "PluginTarget.ptx_version"),
    ):
        assert plugin_lint.main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
