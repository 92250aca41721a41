"""CMake: configure succeeds without TensorRT (skipping daefr-trt-run) and the manifest reader
that daefr-trt-run uses builds and reads a real manifest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from daefr.export.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def configured(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.fail("cmake is not installed (the project's CI machine has cmake 3.25)")
    build = tmp_path_factory.mktemp("cmake-build")
    done = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build)], capture_output=True, text=True, timeout=300
    )
    return build, done


def test_configure_succeeds_and_says_whether_trt_run_is_built(configured):
    _, done = configured
    assert done.returncode == 0, done.stderr
    has_trt = shutil.which("trtexec") is not None or Path("/usr/include/x86_64-linux-gnu/NvInfer.h").exists()
    if not has_trt:
        assert "daefr-trt-run: SKIPPED, not found: NvInfer.h, libnvinfer" in done.stdout
    else:
        assert "daefr-trt-run" in done.stdout


def test_manifest_reader_builds_and_reads_a_manifest(configured, tmp_path):
    build, _ = configured
    made = subprocess.run(
        ["cmake", "--build", str(build), "--target", "daefr-manifest-info"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    out = tmp_path / "export"
    assert main(
        [
            "--random-weights",
            "--preset",
            "tiny",
            "--out-dir",
            str(out),
            "--only",
            "transformer",
            "--no-parity",
            "-q",
        ]
    ) in (0, 1)
    done = subprocess.run(
        [str(build / "daefr-manifest-info"), str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "preset tiny resolution 64 tokens 256"
    assert (
        lines[1] == "artifact transformer fp32 standard transformer.onnx inputs fused_feat outputs code_idx"
    )
    (out / "manifest.json").write_text('{"preset": "tiny", "resolution": 64,')  # truncated
    bad = subprocess.run(
        [str(build / "daefr-manifest-info"), str(out)], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1 and "invalid JSON" in bad.stderr
