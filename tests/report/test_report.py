"""daefr-report on the CPU for the tiny preset (eager vs ONNX Runtime), checked against an
independent computation, and its HTML opened in headless Chromium."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from daefr.runtime.report import cli
from daefr.runtime.report.metrics import accuracy, psnr, ssim

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def to_unit_numpy(image: torch.Tensor) -> np.ndarray:
    return ((image.double().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def test_psnr_and_ssim_match_scikit_image():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 48, 48, generator=g) * 2 - 1
    b = (a + 0.1 * torch.randn(2, 3, 48, 48, generator=g)).clamp(-1, 1)
    for i in range(2):
        x, y = to_unit_numpy(a[i]), to_unit_numpy(b[i])
        assert psnr(a, b)[i].item() == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1), rel=1e-9)
        expected = structural_similarity(
            x, y, data_range=1, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ssim(a, b)[i].item() == pytest.approx(expected, abs=2e-3)


def test_code_agreement_counts_equal_codes():
    ref = torch.zeros(2, 256, dtype=torch.long)
    other = ref.clone()
    other[1, :64] = 5
    image = torch.zeros(2, 3, 16, 16)
    acc = accuracy(image, ref, image + 0.5, other)
    assert acc.code_agreement == pytest.approx(1 - 64 / 512)
    assert acc.min_face_code_agreement == pytest.approx(0.75)
    assert acc.max_abs_error == pytest.approx(0.5)


def test_identical_outputs_plot_above_every_finite_psnr():
    from daefr.runtime.report.plots import PSNR_CAP_DB, identical_height

    assert identical_height([float("inf"), 28.1]) == PSNR_CAP_DB
    assert identical_height([float("inf"), 122.0, 28.1]) == 140.0  # ORT fp32 can beat 100 dB
    assert identical_height([]) == PSNR_CAP_DB


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    argv = [
        "--random-weights",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--faces",
        "3",
        "--batches",
        "1,2",
        "--repeats",
        "2",
    ]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(argv) == 0
    (out / "stdout.txt").write_text(printed.getvalue())
    return out


def test_quality_bar_lines_say_pass_or_fail_and_that_weights_are_random(tiny_report):
    lines = (tiny_report / "stdout.txt").read_text().splitlines()
    bar_lines = [line for line in lines if line.startswith("ort cpu fp16: ")]
    assert len(bar_lines) == 1, lines
    assert re.fullmatch(
        r"ort cpu fp16: (PASS|FAIL) \(codes \d+\.\d\d %, PSNR \d+\.\d dB; random weights: the bars are meant "
        r"for real ones\)",
        bar_lines[0],
    ), bar_lines[0]
    assert lines[-1] == f"report: {tiny_report / 'report.html'}"


def test_report_numbers_match_an_independent_computation(tiny_report, tmp_path):
    summary = json.loads((tiny_report / "report.json").read_text())
    rows = {r["name"]: r for r in summary["variants"]}
    assert rows["eager fp32"]["status"] == "ran"
    assert rows["ort cpu fp32"]["status"] == "ran", rows["ort cpu fp32"]["reason"]
    assert rows["trt fp16"]["status"] == "skipped" and rows["trt fp16"]["reason"]
    assert summary["weights"]["kind"] == "random"
    # Recompute the ORT row from scratch: same faces, same seeded weights, our own session.
    import onnxruntime as ort

    from daefr import DAEFR, DAEFRConfig
    from daefr.export.onnx_export import export_graph
    from daefr.runtime.report.faces import report_faces, to_batch
    from daefr.seeded_weights import seed_model_

    model = seed_model_(DAEFR(DAEFRConfig.from_name("tiny")), salt="daefr-random-0").eval()
    faces = to_batch([f.degraded for f in report_faces(64, 3, seed=0)])
    with torch.no_grad():
        eager = model(faces)
    path = export_graph(model, "daefr", tmp_path / "daefr.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    restored, codes = session.run(["restored", "code_idx"], {"lq_image": faces.numpy()})
    expected_agreement = float((codes.astype(np.int64) == eager.code_idx.numpy()).mean())
    expected_psnr = np.mean(
        [
            peak_signal_noise_ratio(
                to_unit_numpy(eager.restored[i]), to_unit_numpy(torch.from_numpy(restored[i])), data_range=1
            )
            for i in range(3)
        ]
    )
    got = rows["ort cpu fp32"]["accuracy"]
    assert got["code_agreement"] == pytest.approx(expected_agreement)
    assert float(got["psnr_db"]) == pytest.approx(expected_psnr, rel=1e-3)
    assert got["max_abs_error"] == pytest.approx(
        np.abs(restored - eager.restored.numpy()).max(), rel=0.05, abs=1e-6
    )
    assert set(rows["ort cpu fp32"]["throughput_faces_per_s"]) == {"1", "2"}
    assert set(rows["ort cpu fp32"]["graph_error"]) == {
        "lq_encoder",
        "hq_encoder",
        "mhca",
        "transformer",
        "decoder",
    }
    assert rows["eager fp32"]["accuracy"]["code_agreement"] == 1.0


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it)"
)
def test_report_html_opens_in_headless_chromium(tiny_report, tmp_path):
    page = (tiny_report / "report.html").as_uri()
    dom = subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert 'alt="accuracy against speed"' in dom
    assert 'alt="input, eager and backend outputs with amplified differences"' in dom
    marker = dom.split('data-images-ok="')[1].split('"')[0]
    loaded, total = (int(v) for v in marker.split("/"))
    assert total >= 3 and loaded == total, f"only {loaded} of {total} images decoded"
    shot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,2000", f"--screenshot={shot}", page],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10, "the screenshot is blank"
