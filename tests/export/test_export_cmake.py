"""CMake: configure succeeds without TensorRT (skipping daefr-trt-run); the manifest reader and
the engine choice that daefr-trt-run uses build, pass their C++ tests (ctest) and read a real
manifest, and refuse what they must (stale or foreign engines, hostile JSON) in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from daefr.export.cli import main
from daefr.export.manifest import FORMAT

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


def _build(build: Path, target: str) -> None:
    made = subprocess.run(
        ["cmake", "--build", str(build), "--target", target], capture_output=True, text=True, timeout=300
    )
    assert made.returncode == 0, made.stdout + made.stderr


def test_cpp_manifest_tests_pass_under_ctest(configured):
    """cpp/manifest_test.cpp: sha256 vectors, bounded JSON, and select_engine refusing a stale
    sha256, another TensorRT version, compute capability, precision or plugin flag."""
    build, _ = configured
    _build(build, "daefr-manifest-test")
    done = subprocess.run(
        ["ctest", "--test-dir", str(build), "--output-on-failure"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "100% tests passed" in done.stdout and "manifest" in done.stdout


def _info(build: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(build / "daefr-manifest-info"), *args], capture_output=True, text=True, timeout=60
    )


def _engine_export(tmp_path: Path) -> Path:
    engine = tmp_path / "daefr.abcdef.engine"
    engine.write_bytes(b"serialized engine")
    entry = {
        "graph": "daefr", "file": engine.name, "sha256": hashlib.sha256(engine.read_bytes()).hexdigest(),
        "tensorrt": "11.1.0.106", "compute_capability": "9.0", "fp16": True, "plugins": False,
        "profile": {"min": 1, "opt": 2, "max": 4},
    }  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps({"format": FORMAT, "engines": [entry]}))
    return engine


def test_manifest_info_selects_as_the_runner_does_and_refuses_mismatches(configured, tmp_path):
    build, _ = configured
    _build(build, "daefr-manifest-info")
    engine = _engine_export(tmp_path)
    here = ["--select", "daefr", "--tensorrt", "11.1.0.106", "--compute-capability", "9.0", "--fp16"]
    ok = _info(build, str(tmp_path), *here)
    assert ok.returncode == 0 and ok.stdout.startswith(f"engine {engine.name} sha256 "), ok.stderr
    other_trt = _info(build, str(tmp_path), *here[:3], "10.13.0.35", *here[4:])
    assert other_trt.returncode == 1 and "built for TensorRT 11.1.0.106" in other_trt.stderr
    other_gpu = _info(build, str(tmp_path), *here[:5], "8.9", "--fp16")
    assert other_gpu.returncode == 1 and "this is TensorRT 11.1.0.106 on 8.9" in other_gpu.stderr
    engine.write_bytes(b"rebuilt elsewhere")
    stale = _info(build, str(tmp_path), *here)
    assert stale.returncode == 1 and "does not match the sha256" in stale.stderr
    assert _info(build, str(tmp_path), "--select", "daefr").returncode == 2  # no version given
    assert _info(build, str(tmp_path), "--bogus").returncode == 2
    assert _info(build).returncode == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 200000 + "]" * 200000, "nesting deeper than 64 levels"),
        ('{"preset": "tiny", "resolution": 99999999999999999999, "num_tokens": 1}', "out of range (int64)"),
        ('{"preset": "tiny", "resolution": 6.4e1, "num_tokens": 1}', "expected an integer, got 6.4e1"),
        ('{"preset": "tiny", "resolution": NaN}', "invalid JSON"),
    ],
)
def test_manifest_info_rejects_hostile_json_in_one_line(configured, tmp_path, text, message):
    """Formerly: a segfault on deep nesting and INT64_MIN printed for a huge integer."""
    build, _ = configured
    _build(build, "daefr-manifest-info")
    (tmp_path / "manifest.json").write_text(text)
    done = _info(build, str(tmp_path))
    assert done.returncode == 1, (done.returncode, done.stdout[:200])
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1 and not done.stdout


def test_manifest_info_on_a_directory_or_nothing(configured, tmp_path):
    build, _ = configured
    _build(build, "daefr-manifest-info")
    (tmp_path / "manifest.json").mkdir()
    as_dir = _info(build, str(tmp_path))
    assert as_dir.returncode == 1 and "manifest.json: cannot" in as_dir.stderr
    missing = _info(build, str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "cannot open" in missing.stderr
