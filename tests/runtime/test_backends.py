"""Every backend that can run here against eager fp32 on the same inputs; the ones that cannot
say why in one line."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tolerances import FP16_CODE_AGREEMENT, ORT_FP32_RESTORED_ATOL, TORCH_FP16_RESTORED_ATOL

from daefr.export.manifest import FORMAT, MANIFEST_NAME, sha256_file
from daefr.runtime.backends import BackendError, BackendUnavailable, PlanError, Restorer, create_restorer
from daefr.runtime.backends.trt_backend import select_engine
from daefr.runtime.plan import PrecisionPlan as Plan


def eager(model, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        out = model(batch)
    return out.restored, out.code_idx


def test_torch_backend_is_the_eager_model(tiny_runtime_model, faces_batch):
    restorer = create_restorer(Plan("torch"), model=tiny_runtime_model)
    assert isinstance(restorer, Restorer)
    restored, code_idx = restorer.restore(faces_batch)
    ref_restored, ref_idx = eager(tiny_runtime_model, faces_batch)
    assert restored.dtype == torch.float32 and code_idx.dtype == torch.int64
    assert torch.equal(restored, ref_restored) and torch.equal(code_idx, ref_idx)


def test_ort_cpu_matches_eager_fp32(tiny_runtime_model, tiny_onnx, faces_batch):
    with create_restorer(Plan("ort"), onnx=tiny_onnx) as restorer:
        assert isinstance(restorer, Restorer)
        assert restorer.resolution == 64 and restorer.providers == ["CPUExecutionProvider"]
        restored, code_idx = restorer.restore(faces_batch)
    ref_restored, ref_idx = eager(tiny_runtime_model, faces_batch)
    assert restored.shape == ref_restored.shape and restored.dtype == torch.float32
    assert code_idx.shape == (3, 256) and code_idx.dtype == torch.int64
    assert torch.equal(code_idx, ref_idx)
    assert (restored - ref_restored).abs().max().item() < ORT_FP32_RESTORED_ATOL


def test_ort_dynamic_batch_is_per_sample(tiny_onnx, faces_batch):
    with create_restorer(Plan("ort"), onnx=tiny_onnx) as restorer:
        whole = restorer.restore(faces_batch)
        one = restorer.restore(faces_batch[1:2])
    assert torch.equal(whole[1][1:2], one[1])
    assert torch.allclose(whole[0][1:2], one[0], atol=ORT_FP32_RESTORED_ATOL)


def test_restore_rejects_wrong_shapes(tiny_runtime_model, tiny_onnx):
    for restorer in (
        create_restorer(Plan("torch"), model=tiny_runtime_model),
        create_restorer(Plan("ort"), onnx=tiny_onnx),
    ):
        with pytest.raises(ValueError, match=r"\(B>=1, 3, 64, 64\)"):
            restorer.restore(torch.zeros(1, 3, 32, 32))


def test_ort_rejects_a_graph_with_other_names(tmp_path):
    path = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"])  # fmt: skip
    with pytest.raises(BackendError, match="not the end-to-end daefr graph"):
        create_restorer(Plan("ort"), onnx=path)


def test_missing_onnx_is_unavailable(tmp_path):
    with pytest.raises(BackendUnavailable, match="no such ONNX file"):
        create_restorer(Plan("ort"), onnx=tmp_path / "absent.onnx")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_backends_say_why_they_cannot_run(tiny_runtime_model, tiny_onnx, tmp_path):
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        create_restorer(Plan("torch", device="cuda"), model=tiny_runtime_model)
    with pytest.raises(BackendUnavailable, match="CUDA"):
        create_restorer(Plan("ort", device="cuda"), onnx=tiny_onnx)
    with pytest.raises(PlanError, match="--cuda-graphs needs --device cuda"):
        Plan("torch", cuda_graphs=True)
    with pytest.raises(BackendUnavailable, match="(TensorRT is not installed|no CUDA device)") as info:
        create_restorer(Plan("trt", device="cuda"), engine_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_unknown_backend_and_missing_arguments():
    with pytest.raises(PlanError, match="--backend 'tvm'"):
        Plan("tvm")
    with pytest.raises(PlanError, match="needs weights"):
        create_restorer(Plan("torch"))
    with pytest.raises(PlanError, match="needs --onnx"):
        create_restorer(Plan("ort"))
    with pytest.raises(PlanError, match="resolve --backend auto first"):
        create_restorer(Plan("auto"))


# -- TensorRT engine compatibility (pure logic, runs anywhere) --------------------------------
@pytest.fixture()
def engine_dir(tmp_path):
    (tmp_path / "daefr.0123.engine").write_bytes(b"engine bytes")
    entry = {
        "graph": "daefr", "file": "daefr.0123.engine", "sha256": sha256_file(tmp_path / "daefr.0123.engine"),
        "tensorrt": "10.7.0", "gpu": "NVIDIA H100", "compute_capability": "9.0", "fp16": False, "plugins": False,
        "profile": {"min": 1, "opt": 4, "max": 8},
    }  # fmt: skip
    manifest = {"format": FORMAT, "engines": [entry], "engines_not_built": None}
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(manifest))
    return tmp_path, manifest


def test_manifest_accepts_a_matching_engine(engine_dir):
    path, manifest = engine_dir
    entry = select_engine(path, manifest, trt_version="10.7.0", compute_capability="9.0")
    assert entry["file"] == "daefr.0123.engine"


@pytest.mark.parametrize(
    ("trt_version", "capability", "fp16", "tamper", "message"),
    [
        (
            "11.0.0",
            "9.0",
            False,
            False,
            "built for TensorRT 10.7.0 on compute capability 9.0; this is TensorRT 11.0.0",
        ),
        ("10.7.0", "8.9", False, False, "this is TensorRT 10.7.0 on 8.9"),
        ("10.7.0", "9.0", False, True, "stale or foreign"),
        ("10.7.0", "9.0", True, False, r"lists no daefr fp16 engine \(plugins=False\), only fp32"),
    ],
)
def test_manifest_refuses_foreign_or_stale_engines(
    engine_dir, trt_version, capability, fp16, tamper, message
):
    path, manifest = engine_dir
    if tamper:
        (path / "daefr.0123.engine").write_bytes(b"another engine")
    with pytest.raises(BackendError, match=message) as info:
        select_engine(
            path, manifest, trt_version=trt_version, compute_capability=capability,
            precision="fp16" if fp16 else "fp32",
        )  # fmt: skip
    assert "rebuild" in str(info.value)


def test_manifest_of_another_format_is_refused(engine_dir):
    path, manifest = engine_dir
    with pytest.raises(BackendError, match="format"):
        select_engine(path, {**manifest, "format": "other/9"}, trt_version="10.7.0", compute_capability="9.0")


# -- GPU tier ------------------------------------------------------------------------------
@pytest.mark.gpu
def test_torch_cuda_graphs_match_eager_on_gpu(tiny_runtime_model, faces_batch):
    """Against eager on the same GPU: cuDNN's TF32 convolutions make CPU fp32 a different
    computation (a few codes flip), which is not what the graphs are tested for."""
    reference = create_restorer(Plan("torch", device="cuda"), model=copy.deepcopy(tiny_runtime_model))
    ref_restored, ref_idx = reference.restore(faces_batch)
    restorer = create_restorer(Plan("torch", device="cuda", cuda_graphs=True), model=copy.deepcopy(tiny_runtime_model))
    for _ in range(2):  # capture, then replay
        restored, code_idx = restorer.restore(faces_batch)
    assert torch.equal(code_idx.cpu(), ref_idx.cpu())
    assert (restored.cpu() - ref_restored.cpu()).abs().max().item() < ORT_FP32_RESTORED_ATOL * 10


@pytest.mark.gpu
def test_torch_fp16_on_gpu_is_close(tiny_runtime_model, faces_batch):
    """fp16 vs fp32 on the GPU: nearly all codes agree, and the fp16 image is within the
    bound of the fp32 decoder fed the very same codes (a flipped code is not decoder error)."""
    fp32 = copy.deepcopy(tiny_runtime_model).cuda()
    _, ref_idx = eager(fp32, faces_batch.cuda())
    model = copy.deepcopy(tiny_runtime_model)
    restored, code_idx = create_restorer(Plan("torch", "fp16", device="cuda"), model=model).restore(faces_batch)
    assert restored.dtype == torch.float32 and code_idx.dtype == torch.int64
    agreement = (code_idx.cpu() == ref_idx.cpu()).float().mean().item()
    assert agreement >= FP16_CODE_AGREEMENT, agreement
    with torch.inference_mode():
        same_codes_fp32 = fp32.decode(code_idx.cuda())
    assert (restored.cpu() - same_codes_fp32.cpu()).abs().max().item() < TORCH_FP16_RESTORED_ATOL


@pytest.mark.gpu
def test_ort_cuda_io_binding_matches_eager(tiny_runtime_model, tiny_onnx, faces_batch):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here is the CPU build (install onnxruntime-gpu for the CUDA provider)")
    ref_restored, ref_idx = eager(tiny_runtime_model, faces_batch)
    restored, code_idx = create_restorer(Plan("ort", device="cuda"), onnx=tiny_onnx).restore(faces_batch.cuda())
    assert restored.is_cuda and torch.equal(code_idx.cpu(), ref_idx)
    assert (restored.cpu() - ref_restored).abs().max().item() < ORT_FP32_RESTORED_ATOL * 10


@pytest.mark.trt
@pytest.mark.gpu
def test_trt_engine_matches_eager(tiny_runtime_model, tiny_onnx, tmp_path, faces_batch):
    import tensorrt as trt

    from daefr.export.trt_build import EngineSpec, build_engine, gpu_identity

    spec = EngineSpec("daefr", sha256_file(tiny_onnx), 1, 4, 8, fp16=False, plugins=False)
    result = build_engine(tiny_onnx, spec, tmp_path)
    entry = result.manifest_entry(spec, trt.__version__, gpu_identity())
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format": FORMAT, "engines": [entry]}))
    ref_restored, ref_idx = eager(tiny_runtime_model, faces_batch)
    with create_restorer(Plan("trt", device="cuda"), engine_dir=tmp_path) as restorer:
        from_host = restorer.restore(faces_batch)  # through the pinned staging buffer
        from_device = restorer.restore(faces_batch.cuda())
    for restored, code_idx in (from_host, from_device):
        assert restored.dtype == torch.float32 and code_idx.dtype == torch.int64
        # TensorRT may use TF32 in an FP32 engine: allow a rare flipped near-tie.
        assert (code_idx.cpu() == ref_idx).float().mean().item() >= 0.99
        assert (restored.cpu() - ref_restored).abs().max().item() < TORCH_FP16_RESTORED_ATOL


# -- the ONNX backends share one contract and error behaviour ------------------------------
ONNX_BACKENDS = ["ort", pytest.param("openvino", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None, reason="openvino is not installed"))]  # fmt: skip


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_onnx_backends_refuse_other_graphs_missing_files_and_wrong_shapes(backend, tiny_onnx, tmp_path):
    path = tmp_path / "other.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False,
                      input_names=["x"], output_names=["y"])  # fmt: skip
    with pytest.raises(BackendError, match="not the end-to-end daefr graph"):
        create_restorer(Plan(backend), onnx=path)
    with pytest.raises(BackendUnavailable, match="no such ONNX file"):
        create_restorer(Plan(backend), onnx=tmp_path / "absent.onnx")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(BackendError, match="garbage.onnx"):
        create_restorer(Plan(backend), onnx=garbage)
    with create_restorer(Plan(backend), onnx=tiny_onnx) as restorer:
        assert isinstance(restorer, Restorer) and restorer.resolution == 64
        with pytest.raises(ValueError, match=r"\(B>=1, 3, 64, 64\)"):
            restorer.restore(torch.zeros(1, 3, 32, 32))


def test_an_onnx_file_of_another_precision_is_refused(tiny_onnx):
    with pytest.raises(PlanError, match="is an fp32 graph but --precision fp16 needs an fp16 one"):
        create_restorer(Plan("ort", "fp16"), onnx=tiny_onnx)
