"""Every command takes --precision (with --fp16 as its alias); a flag the chosen backend cannot
honour exits 2 with one line, and --backend auto says in one log line what it chose and why."""

from __future__ import annotations

import logging

import pytest

from daefr.cli import restore
from daefr.runtime import bench, cli_video
from daefr.runtime.report import cli as report_cli

TINY = ["--preset", "tiny", "--random-weights", "-q"]


def _exit_code(main, argv) -> int:  # noqa: ANN001
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


REFUSED = [
    (["--backend", "ort", "--precision", "bf16"], "not --precision bf16"),
    (["--backend", "openvino", "--fp16"], "not --precision fp16"),
    (["--backend", "torch", "--precision", "fp16", "--device", "cpu"], "on cpu runs fp32, bf16"),
    (["--backend", "ort", "--compile"], "--compile applies to the torch backend only"),
    (["--backend", "openvino", "--channels-last"], "--channels-last applies to the torch backend only"),
    (["--backend", "torch", "--plugins"], "--plugins applies to the trt backend only"),
    (["--backend", "torch", "--cuda-graphs", "--device", "cpu"], "--cuda-graphs needs --device cuda"),
    (["--fp16", "--precision", "bf16"], "--fp16 and --precision bf16 disagree"),
    (["--backend", "trt", "--device", "cpu"], "--backend trt runs on cuda"),
]


@pytest.mark.parametrize(("flags", "message"), REFUSED)
def test_daefr_restore_refuses_what_the_backend_cannot_honour(flags, message, tmp_path, capsys):
    face = tmp_path / "face.png"
    face.write_bytes(b"")  # never read: the flags are refused first
    assert _exit_code(restore.main, [str(face), "-o", str(tmp_path / "out"), *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len([line for line in err.splitlines() if "error" in line]) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flags", "message"), REFUSED[:4])
def test_daefr_video_refuses_what_the_backend_cannot_honour(flags, message, tmp_path, capsys):
    argv = [str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.mp4"), *TINY, *flags]
    assert _exit_code(cli_video.main, argv) == 2
    assert message in capsys.readouterr().err


def test_daefr_export_refuses_bf16_and_disagreeing_aliases(tmp_path, capsys):
    from daefr.export.cli import main as export_main

    out = ["--preset", "tiny", "--random-weights", "--out-dir", str(tmp_path / "x"), "-q"]
    assert export_main([*out, "--precision", "bf16"]) == 2
    assert "--precision bf16: no backend runs a bf16 export" in capsys.readouterr().err
    assert export_main([*out, "--fp16", "--precision", "fp32"]) == 2
    assert "disagree" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # --precision fp16 is --fp16: the FP16 graph is written, and the manifest records the plan
    only = [*out, "--only", "mhca", "--no-parity", "--precision", "fp16"]
    assert export_main(only) == 0
    import json

    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["plan"] == {"precision": "fp16", "plugins": False}
    assert {a["file"] for a in manifest["artifacts"]} == {"mhca.onnx", "mhca.fp16.onnx"}


def test_bench_and_report_take_precision(tmp_path, capsys):
    argv = ["network", *TINY, "--fp16", "--precision", "bf16"]
    assert _exit_code(bench.main, argv) == 2
    assert "disagree" in capsys.readouterr().err
    assert _exit_code(report_cli.main, [*TINY, "--out", str(tmp_path), "--precision", "int8"]) == 2


def test_restore_defaults_to_auto_and_logs_its_choice(tmp_path, caplog):
    from PIL import Image

    face = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (120, 90, 80)).save(face)
    with caplog.at_level(logging.INFO, logger="daefr"):
        assert restore.main([str(face), "-o", str(tmp_path / "out"), "--preset", "tiny", "--random-weights"]) == 0
    chosen = [r.getMessage() for r in caplog.records if "--backend auto chose" in r.getMessage()]
    assert len(chosen) == 1 and "fp32" in chosen[0], chosen
    assert (tmp_path / "out" / "face.png").is_file()
