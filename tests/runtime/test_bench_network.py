"""``daefr-bench network`` on the tiny preset: rows side by side against eager fp32 NCHW, with the
fields the committed reports use, the floor from a matmul measured in the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from daefr.runtime.bench import main  # noqa: E402

FIELDS = {"backend", "precision", "batch", "faces_per_s", "ratio_vs_eager", "code_agreement", "psnr_db",
          "ms_p50", "ms_p95", "pct_of_peak"}  # fmt: skip


def test_network_rows_are_side_by_side_with_eager(tmp_path, capsys):
    out = tmp_path / "net.json"
    argv = ["network", "--preset", "tiny", "--random-weights", "--batches", "1,2", "--iters", "1",
            "--threads", "1", "--only", "ort fp32,torch bf16 channels_last", "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [(r["variant"], r["batch"]) for r in rows] == [
        ("torch fp32", 1), ("torch fp32", 2), ("ort fp32", 1), ("ort fp32", 2),
        ("torch bf16 channels_last", 1), ("torch bf16 channels_last", 2),
    ]  # fmt: skip
    for r in rows:
        assert FIELDS <= set(r) and r["skipped"] is None
        # % of peak > 100 is possible on the shared CI machine (the matmul is timed under the load of that moment)
        assert r["faces_per_s"] > 0 and r["pct_of_peak"] > 0 and r["ms_p50"] <= r["ms_p95"]
    eager, ort = rows[0], rows[2]
    assert eager["ratio_vs_eager"] == 1.0 and eager["code_agreement"] == 1.0 and eager["psnr_db"] == "inf"
    assert ort["code_agreement"] == 1.0 and ort["ratio_vs_eager"] == pytest.approx(
        ort["faces_per_s"] / eager["faces_per_s"]
    )
    assert rows[4]["peak_dtype"] == "bf16" and rows[4]["code_agreement"] < 1.0  # bf16 really ran
    assert 0.5 < report["gmac_per_face"] < 2  # the tiny preset (the official one: 453)
    assert set(report["peak_gmac_per_s"]) == {"fp32", "bf16"} and report["cpu"]["model"]
    printed = capsys.readouterr().out
    assert report["cpu"]["model"] in printed and "GMAC per face" in printed
    assert out.with_suffix(".txt").read_text().splitlines()[0] == printed.splitlines()[0]


def test_network_only_names_known_variants(capsys):
    argv = ["network", "--preset", "tiny", "--random-weights", "--only", "torch fp64", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--only torch fp64: no such variant here" in err and "openvino bf16" in err


def test_network_usage_errors_exit_2():
    for argv in (["network", "--random-weights", "--batches", "0"], ["network", "--random-weights", "--iters", "0"],
                 ["network"]):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


def test_the_official_network_is_453_gmac_per_face():
    """The floor's numerator, counted on the meta device (no weights, instant)."""
    from daefr import DAEFR, DAEFRConfig
    from daefr.runtime.bench_network import OFFICIAL_GMAC_PER_FACE, macs_per_face

    with torch.device("meta"):
        model = DAEFR(DAEFRConfig.from_name("official"))
    assert macs_per_face(model) / 1e9 == pytest.approx(OFFICIAL_GMAC_PER_FACE, rel=1e-3)


ASSET_DIR = Path(__file__).resolve().parents[1] / "data" / "tiny_trained"


def test_network_runs_the_trained_asset_on_its_held_out_faces(tmp_path, capsys):
    out = tmp_path / "net.json"
    argv = ["network", "--preset", "tiny", "--ckpt", str(ASSET_DIR / "daefr_tiny.safetensors"),
            "--faces", str(ASSET_DIR / "held_out"), "--batches", "3", "--iters", "1", "--threads", "1",
            "--only", "torch bf16 channels_last", "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["weights"].endswith("daefr_tiny.safetensors") and "faces of" in report["inputs"]
    assert "held_out" in capsys.readouterr().out
    bf16 = report["rows"][1]
    assert bf16["variant"] == "torch bf16 channels_last" and bf16["batch"] == 3 and bf16["skipped"] is None


@pytest.mark.parametrize("case", ["missing", "file", "empty", "wrong-size", "not-an-image"])
def test_network_faces_that_cannot_be_used_exit_2(tmp_path, capsys, case):
    from PIL import Image

    faces = tmp_path / "faces"
    if case == "file":
        faces.write_text("x")
    elif case != "missing":
        faces.mkdir()
    if case == "wrong-size":
        Image.new("RGB", (32, 32)).save(faces / "a.png")
    if case == "not-an-image":
        (faces / "a.png").write_text("not a png")
    argv = ["network", "--preset", "tiny", "--random-weights", "--faces", str(faces), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("daefr-bench: --faces") and str(faces) in err
