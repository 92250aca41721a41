"""``daefr-export --triton-repo``: configs parsed by Triton's own ModelConfig protobuf, checked
against the manifest, and the repository's ONNX run in ONNX Runtime with the config's names."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from daefr.cli.common import random_model
from daefr.export.cli import main
from daefr.export.manifest import MANIFEST_NAME, sha256_file
from daefr.export.triton_repo import TRITON_DTYPES, RepoOptions, write_repo

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="tritonclient[grpc] is not installed (pip install 'daefr[client]')",
)
text_format = pytest.importorskip("google.protobuf.text_format")

TINY = ["--random-weights", "--preset", "tiny", "--seed", "4"]


def parse_config(model_dir):
    """Triton's ModelConfig from config.pbtxt: a field or enum typo raises ParseError."""
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def dtype_name(value: int) -> str:
    return model_config_pb2.DataType.Name(value)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out, repo = tmp_path_factory.mktemp("export"), tmp_path_factory.mktemp("repo")
    (repo / "other_model").mkdir()  # a model already in the repository must survive
    argv = [*TINY, "--out-dir", str(out), "--only", "daefr", "--no-parity", "--max-batch", "6",
            "--opt-batch", "2", "--triton-repo", str(repo), "--triton-queue-delay-us", "1500",
            "--triton-instances", "2", "-q"]  # fmt: skip
    assert main(argv) == 0
    return out, repo, json.loads((out / MANIFEST_NAME).read_text())


def test_onnx_model_config_agrees_with_the_manifest(exported) -> None:
    out, repo, manifest = exported
    art = next(a for a in manifest["artifacts"] if a["graph"] == "daefr" and a["precision"] == "fp32")
    cfg = parse_config(repo / "daefr")
    assert cfg.name == "daefr" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 6
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 6]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 1500
    assert [(g.count, model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind)) for g in cfg.instance_group] == [
        (2, "KIND_GPU")
    ]
    for got, want in ((cfg.input, art["inputs"]), (cfg.output, art["outputs"])):
        assert [t.name for t in got] == [t["name"] for t in want]
        assert [dtype_name(t.data_type) for t in got] == [TRITON_DTYPES[t["dtype"]] for t in want]
        assert [list(t.dims) for t in got] == [t["shape"][1:] for t in want]
    assert not cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert sha256_file(repo / "daefr" / "1" / "model.onnx") == art["sha256"]
    assert (repo / "other_model").is_dir() and not list(repo.glob(".daefr*"))


def test_repository_onnx_runs_in_onnx_runtime_with_the_config_names(exported) -> None:
    import onnxruntime as ort

    _, repo, _ = exported
    cfg = parse_config(repo / "daefr")
    sess = ort.InferenceSession(str(repo / "daefr" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = cfg.input
    lq = np.random.default_rng(0).uniform(-1, 1, (3, *inp.dims)).astype(np.float32)
    outs = dict(
        zip([o.name for o in cfg.output], sess.run([o.name for o in cfg.output], {inp.name: lq}), strict=True)
    )
    for o in cfg.output:
        assert list(outs[o.name].shape) == [3, *o.dims]
        assert TRITON_DTYPES[str(outs[o.name].dtype)] == dtype_name(o.data_type)
    with torch.no_grad():
        eager = random_model("tiny", 4)(torch.from_numpy(lq))
    np.testing.assert_array_equal(outs["code_idx"], eager.code_idx.numpy())  # int32 vs int64: values
    np.testing.assert_allclose(outs["restored"], eager.restored.numpy(), atol=1e-3)


def test_engines_become_tensorrt_plan_models_and_plugin_engines_are_skipped(exported, tmp_path) -> None:
    out, _, manifest = exported
    fake = tmp_path / "export"
    shutil.copytree(out, fake)
    (fake / "daefr.fp16.plan").write_bytes(b"not a real engine")
    (fake / "daefr.plugins.plan").write_bytes(b"not a real engine")
    engine = {"graph": "daefr", "file": "daefr.fp16.plan", "fp16": True, "plugins": False,
              "sha256": sha256_file(fake / "daefr.fp16.plan"), "profile": {"min": 1, "opt": 4, "max": 16}}  # fmt: skip
    manifest["engines"] = [engine, {**engine, "file": "daefr.plugins.plan", "plugins": True}]
    (fake / MANIFEST_NAME).write_text(json.dumps(manifest))
    repo = tmp_path / "repo"
    written = write_repo(fake, repo, RepoOptions(kind="cpu"))
    assert sorted(p.name for p in written) == ["daefr", "daefr_trt"]
    cfg = parse_config(repo / "daefr_trt")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 16]
    assert [t.name for t in cfg.output] == ["restored", "code_idx"]
    assert (repo / "daefr_trt" / "1" / "model.plan").read_bytes() == b"not a real engine"


def test_ort_tensorrt_fp16_accelerator_parses(exported, tmp_path) -> None:
    out, _, _ = exported
    write_repo(out, tmp_path, RepoOptions(ort_trt_fp16=True))
    (acc,) = parse_config(tmp_path / "daefr").optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"


def test_rewriting_replaces_the_model_atomically(exported, tmp_path) -> None:
    out, _, _ = exported
    write_repo(out, tmp_path, RepoOptions(max_batch_size=8, preferred_batch_sizes=(8,)))
    (tmp_path / "daefr" / "stale.txt").write_text("old")
    write_repo(out, tmp_path, RepoOptions(max_batch_size=3, preferred_batch_sizes=(3,)))
    assert parse_config(tmp_path / "daefr").max_batch_size == 3
    assert not (tmp_path / "daefr" / "stale.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "daefr"
    ]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--triton-instances", "0"], "must be >= 1"),
        (["--triton-queue-delay-us", "-5"], "must be >= 0"),
        (["--triton-kind", "cpu", "--triton-ort-trt-fp16"], "needs kind='gpu'"),
        (["--triton-kind", "tpu"], "invalid choice"),
    ],
)
def test_bad_triton_flags_are_exit_2(flags, message, tmp_path, capsys) -> None:
    assert main([*TINY, "--out-dir", str(tmp_path), "--triton-repo", str(tmp_path / "r"), *flags]) == 2
    assert message in capsys.readouterr().err


def test_repo_that_is_a_file_is_exit_2(tmp_path, capsys) -> None:
    (tmp_path / "file").write_text("x")
    assert main([*TINY, "--out-dir", str(tmp_path / "o"), "--triton-repo", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_repo_without_the_end_to_end_graph_fails_with_the_fix(tmp_path, capsys) -> None:
    argv = [
        *TINY,
        "--out-dir",
        str(tmp_path / "o"),
        "--only",
        "mhca",
        "--no-parity",
        "--triton-repo",
        str(tmp_path / "r"),
        "-q",
    ]
    assert main(argv) == 1
    assert "--only daefr" in capsys.readouterr().err
