"""``daefr-export`` through ``main([...])``: artifacts, manifest, the no-TensorRT line, exit codes."""

from __future__ import annotations

import json

import pytest
import torch

from daefr import DAEFR, DAEFRConfig
from daefr.checkpoint import save_safetensors
from daefr.export.cli import main
from daefr.export.manifest import MANIFEST_NAME, sha256_file
from daefr.export.trt_build import trt_unavailable_reason

TINY = ["--random-weights", "--preset", "tiny"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One export of two graphs (FP32 + FP16); (exit code, out dir, stdout lines)."""
    out = tmp_path_factory.mktemp("cli")
    capture = pytest.MonkeyPatch()
    import io
    import sys

    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        code = main([*TINY, "--out-dir", str(out), "--only", "mhca,transformer", "--fp16", "-q"])
    finally:
        capture.undo()
    return code, out, buf.getvalue().splitlines()


def test_cli_exports_and_says_why_no_engines(cli_run):
    code, out, lines = cli_run
    reason = trt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: engines are built instead")
    assert code == 0
    assert len(lines) == 1 and lines[0].startswith("daefr-export: TensorRT engines not built: ")
    assert reason in lines[0]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["manifest.json", "mhca.onnx", "mhca.fp16.onnx", "transformer.onnx", "transformer.fp16.onnx"]
    )


def test_manifest_describes_the_artifacts(cli_run):
    _, out, _ = cli_run
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert m["format"] == "daefr-export/1"
    assert (m["preset"], m["resolution"], m["num_tokens"], m["opset"]) == ("tiny", 64, 256, 18)
    assert m["weights"]["source"] == "random" and "RANDOM" in m["weights"]["note"]
    assert m["versions"]["torch"] == torch.__version__
    assert {"onnx", "onnxruntime", "tensorrt"} <= set(m["versions"])
    if trt_unavailable_reason() is not None:
        assert m["engines"] == [] and m["engines_not_built"] == trt_unavailable_reason()
    assert len(m["git_revision"]) >= 7
    by_file = {a["file"]: a for a in m["artifacts"]}
    assert set(by_file) == {"mhca.onnx", "mhca.fp16.onnx", "transformer.onnx", "transformer.fp16.onnx"}
    for name, a in by_file.items():
        assert a["sha256"] == sha256_file(out / name)
        assert a["bytes"] == (out / name).stat().st_size
        assert a["parity"]["passed"] is True
        assert a["parity"]["batches"] == [1, 3]
    mhca = by_file["mhca.onnx"]
    assert [(t["name"], t["shape"], t["dtype"]) for t in mhca["inputs"]] == [
        ("hq_feat", ["batch", 32, 16, 16], "float32"),
        ("lq_feat", ["batch", 32, 16, 16], "float32"),
    ]
    code = by_file["transformer.fp16.onnx"]
    assert code["precision"] == "fp16"
    assert code["outputs"] == [{"name": "code_idx", "shape": ["batch", 256], "dtype": "int32"}]
    assert code["parity"]["outputs"][0]["agreement"] >= 0.97


def test_require_trt_fails_without_tensorrt(tmp_path, capsys):
    if trt_unavailable_reason() is None:
        pytest.skip("TensorRT and a GPU are present")
    assert main([*TINY, "--out-dir", str(tmp_path), "--only", "mhca", "--require-trt", "-q"]) == 1
    assert "TensorRT engines not built" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--only", "mhca,nope"], "unknown graph(s) ['nope']"),
        (["--max-batch", "0"], "--max-batch 0"),
        (["--max-batch", "2", "--opt-batch", "3"], "--opt-batch 3"),
        (["--opset", "12"], "--opset: opset 12"),
        (["--plugins", "--dynamo"], "--plugins needs the TorchScript exporter"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_flags_are_one_line_exit_2(argv, message, tmp_path, capsys):
    assert main([*TINY, "--out-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("daefr-export: error: ") and message in err[0]
    assert not list(tmp_path.iterdir())


def test_weights_are_required(tmp_path, capsys):
    assert main(["--preset", "tiny", "--out-dir", str(tmp_path)]) == 2
    assert "one of the arguments --ckpt --random-weights is required" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_bad_checkpoint_is_one_line_exit_2(content, tmp_path, capsys):
    ckpt = tmp_path / "bad.pth"
    if content is not None:
        ckpt.write_bytes(content)
    out = tmp_path / "out"
    assert main(["--ckpt", str(ckpt), "--preset", "tiny", "--out-dir", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.pth" in err[0]
    assert not out.exists()


def test_checkpoint_of_another_preset_is_exit_2(tmp_path, capsys):
    ckpt = tmp_path / "tiny.safetensors"
    save_safetensors(DAEFR(DAEFRConfig.from_name("tiny")), ckpt)
    assert main(["--ckpt", str(ckpt), "--preset", "official", "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "mis-shaped" in err and "--preset official" in err


def test_checkpoint_export_records_its_hash(tmp_path, capsys):
    ckpt = tmp_path / "tiny.safetensors"
    save_safetensors(DAEFR(DAEFRConfig.from_name("tiny")), ckpt)
    out = tmp_path / "out"
    code = main(["--ckpt", str(ckpt), "--preset", "tiny", "--out-dir", str(out), "--only", "mhca", "-q"])
    assert code == (0 if trt_unavailable_reason() else code)
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert m["weights"] == {"source": "checkpoint", "file": "tiny.safetensors", "sha256": sha256_file(ckpt)}


def test_failed_parity_exits_1(tmp_path, capsys, monkeypatch):
    import daefr.export.parity as parity

    monkeypatch.setattr(parity, "FP32_RTOL", 0.0)  # nothing float can pass an exact bound
    assert main([*TINY, "--out-dir", str(tmp_path), "--only", "mhca", "-q"]) == 1
    assert "parity or build FAILED for mhca (fp32)" in capsys.readouterr().err
    m = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert m["artifacts"][0]["parity"]["passed"] is False


def test_failed_manifest_write_leaves_no_manifest(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    real_write = Path.write_bytes

    def half_then_fail(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError("simulated: disk full")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)  # the manifest's write path
    assert main([*TINY, "--out-dir", str(tmp_path), "--only", "transformer", "--no-parity", "-q"]) == 1
    assert "disk full" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transformer.onnx"]
