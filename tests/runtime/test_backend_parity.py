"""Every backend x precision x layout that runs on the CPU, against eager fp32 on the same faces:
fp32 variants give every code of eager fp32; reduced precisions meet the one table of quality
bars (``daefr.precision.QUALITY_BARS``). The ONNX backends share one export per precision."""

from __future__ import annotations

import copy

import pytest
import torch

from daefr.precision import quality_bar
from daefr.runtime.backends import Restorer, create_restorer, export_onnx
from daefr.runtime.bench_network import psnr_db
from daefr.runtime.plan import PrecisionPlan as Plan

pytest.importorskip("onnxruntime")

VARIANTS = [
    pytest.param(Plan("torch", channels_last=True), id="torch-fp32-channels_last"),
    pytest.param(Plan("ort"), id="ort-fp32"),
    pytest.param(Plan("openvino"), id="openvino-fp32"),
    pytest.param(Plan("torch", "bf16"), id="torch-bf16"),
    pytest.param(Plan("torch", "bf16", channels_last=True), id="torch-bf16-channels_last"),
    pytest.param(Plan("openvino", "bf16"), id="openvino-bf16"),
    pytest.param(Plan("ort", "fp16"), id="ort-fp16"),
]


@pytest.fixture(scope="module")
def conformance_faces(tiny_runtime_model) -> torch.Tensor:
    """The conformance-style input: smooth shapes plus noise, 3 faces (768 codes)."""
    from daefr.export.parity import parity_images

    return parity_images(tiny_runtime_model, 3)


@pytest.fixture(scope="module")
def eager_fp32(tiny_runtime_model, conformance_faces):
    with torch.inference_mode():
        out = tiny_runtime_model(conformance_faces)
    return out.restored, out.code_idx


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory, tiny_runtime_model, tiny_onnx):
    pytest.importorskip("onnx")
    fp16 = export_onnx(tiny_runtime_model, tmp_path_factory.mktemp("onnx16") / "daefr.fp16.onnx", fp16=True)
    return {False: tiny_onnx, True: fp16}


def build(plan: Plan, model, onnx_files) -> Restorer:
    if plan.backend == "openvino":
        pytest.importorskip("openvino")
    onnx = None
    if plan.backend in ("ort", "openvino"):
        onnx = onnx_files[plan.backend == "ort" and plan.precision == "fp16"]
    return create_restorer(plan, model=copy.deepcopy(model), onnx=onnx)


@pytest.mark.parametrize("plan", VARIANTS)
def test_variant_meets_its_precisions_bar(plan, tiny_runtime_model, onnx_files, conformance_faces, eager_fp32):
    if plan.precision == "bf16" and plan.backend == "openvino":
        from daefr.runtime.auto import cpu_has_bf16

        if not cpu_has_bf16():
            pytest.skip("this CPU has neither AVX512-BF16 nor AMX")
    ref_restored, ref_codes = eager_fp32
    with build(plan, tiny_runtime_model, onnx_files) as restorer:
        restored, codes = restorer.restore(conformance_faces)
        again, _ = restorer.restore(conformance_faces[1:2])  # dynamic batch, per sample
    assert restored.dtype == torch.float32 and codes.dtype == torch.int64 and codes.shape == ref_codes.shape
    assert torch.isfinite(restored).all()
    bar = quality_bar(plan.precision)
    agreement = (codes == ref_codes).double().mean().item()
    if plan.precision == "fp32":
        assert torch.equal(codes, ref_codes)  # all 768 codes
        rel = ((restored - ref_restored).abs().max() / ref_restored.abs().max()).item()
        assert rel <= bar.restored_rtol, rel
        assert (again - restored[1:2]).abs().max().item() <= bar.restored_rtol * ref_restored.abs().max().item()
    else:
        assert agreement >= bar.code_agreement, agreement
        assert psnr_db(restored, ref_restored) >= bar.psnr_db
        # not a silent fp32 run: reduced precision must change the numbers at all
        assert not torch.equal(restored, ref_restored)


def test_torch_bf16_keeps_the_policy_islands_in_fp32(tiny_runtime_model):
    from daefr.runtime.backends.torch_backend import apply_precision

    model = apply_precision(copy.deepcopy(tiny_runtime_model), torch.bfloat16)
    norms = [m for m in model.modules() if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]
    assert norms and all(m.weight.dtype == torch.float32 for m in norms)
    assert model.idx_pred_layer[1].weight.dtype == torch.float32  # the code head's logits
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    seen: dict[str, torch.dtype] = {}

    def record(key: str, tensor: torch.Tensor) -> None:
        seen.setdefault(key, tensor.dtype)

    model.idx_pred_layer[0].register_forward_hook(lambda m, a, out: record("head_out", out))
    gn = next(m for m in model.modules() if isinstance(m, torch.nn.GroupNorm))
    gn.register_forward_hook(lambda m, a, out: record("gn_in", a[0]))
    conv = model.vqvae.decoder.conv_out
    conv.register_forward_hook(lambda m, a, out: record("conv_in", a[0]))
    with torch.inference_mode():
        model(torch.zeros(1, 3, 64, 64, dtype=torch.bfloat16))
    # The norm's input was cast up on entry; the code head stays fp32; a conv after a norm gets bf16.
    assert seen == {"head_out": torch.float32, "gn_in": torch.float32, "conv_in": torch.bfloat16}


@pytest.mark.slow  # 60-200 s of inductor compile on the 2-core CI machine
def test_torch_compile_is_exact_and_reports_its_compile_time(tiny_runtime_model, eager_fp32, conformance_faces):
    """The one torch.compile of the suite (tiny model, one batch size)."""
    ref_restored, ref_codes = eager_fp32
    restorer = create_restorer(Plan("torch", compile=True, channels_last=True), model=copy.deepcopy(tiny_runtime_model))
    seconds = restorer.warmup([3])
    assert set(seconds) == {3} and seconds[3] > 0
    restored, codes = restorer.restore(conformance_faces)
    assert torch.equal(codes, ref_codes)
    assert (restored - ref_restored).abs().max().item() <= quality_bar("fp32").restored_rtol * ref_restored.abs().max()
