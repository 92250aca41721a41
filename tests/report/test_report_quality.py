"""daefr-report's NR-IQA column and, for an IQPFR-conditioned model, the sweep of S; --quality
with a plain model is exit 2. Checked against an independent run of the model and scorer."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import torch

from daefr.quality.checkpoint import load_conditioned_model
from daefr.quality.scorer import build_scorer
from daefr.runtime.report import cli
from daefr.runtime.report.faces import report_faces, to_batch
from daefr.runtime.report.quality import CONDITIONED_SKIP

FAST = ["--preset", "tiny", "--device", "cpu", "--faces", "2", "--batches", "1", "--repeats", "1", "-q"]


@pytest.mark.parametrize("weights", ["plain", "random"])
def test_quality_with_a_plain_model_is_exit_2_in_one_line(tmp_path, capsys, iqp_checkpoints, weights):
    flags = ["--random-weights"] if weights == "random" else ["--ckpt", str(iqp_checkpoints["plain"])]
    assert cli.main([*flags, *FAST, "--out", str(tmp_path / "r"), "--quality", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain DAEFR model" in err
    assert not (tmp_path / "r" / "report.json").exists()


@pytest.mark.parametrize("bad", ["-1", "2", "nan", "abc"])
def test_quality_out_of_range_is_a_usage_error(tmp_path, iqp_checkpoints, bad):
    with pytest.raises(SystemExit) as info:
        cli.main(
            ["--ckpt", str(iqp_checkpoints["conditioned"]), *FAST, "--out", str(tmp_path), "--quality", bad]
        )
    assert info.value.code == 2


def test_a_missing_scorer_file_is_exit_2(tmp_path, capsys):
    argv = [
        "--random-weights",
        *FAST,
        "--out",
        str(tmp_path / "r"),
        "--quality-scorer",
        str(tmp_path / "no.pth"),
    ]
    assert cli.main(argv) == 2
    assert "no such weight file" in capsys.readouterr().err


def test_conditioned_report_scores_each_output_and_sweeps_s(tmp_path, iqp_checkpoints):
    out = tmp_path / "r"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert (
            cli.main(
                ["--ckpt", str(iqp_checkpoints["conditioned"]), *FAST, "--out", str(out), "--quality", "0.5"]
            )
            == 0
        )
    summary = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in summary["variants"]}
    assert all(r["reason"] == CONDITIONED_SKIP for r in rows.values() if r["backend"] != "torch")
    assert {"ort cpu fp32", "trt fp16"} <= set(rows)

    # independently: the model at S = 0.5 on the report's faces, scored by BRISQUE
    model = load_conditioned_model(iqp_checkpoints["conditioned"], "tiny")
    scorer = build_scorer("brisque")
    faces = to_batch([f.degraded for f in report_faces(64, 2, 0)])
    with torch.no_grad():
        want = scorer(model(faces, torch.full((2,), 0.5)).restored.clamp(-1, 1))
    got = rows["eager fp32"]["nr_iqa"]
    # 2e-3: the report restores one face per call, this run two (float rounding, then uint8)
    assert got["scorer"] == "brisque" and got["per_face"] == pytest.approx(want.tolist(), abs=2e-3)

    condition = summary["quality_condition"]
    assert condition["condition"] == 0.5 and condition["trained_range"] == pytest.approx([0.3, 0.9])
    sweep = condition["sweep"]
    assert [r["quality"] for r in sweep] == pytest.approx([0.0, 0.3, 0.6, 0.9, 1.0])
    for r in sweep:
        with torch.no_grad():
            scores = scorer(model(faces, torch.full((2,), r["quality"])).restored.clamp(-1, 1))
        assert r["mean"] == pytest.approx(float(scores.mean()), abs=1e-5)  # the same batch of two
    assert sweep[0]["codes_changed"] == 0 and max(r["codes_changed"] for r in sweep) > 0
    lines = printed.getvalue().splitlines()
    assert sum(line.startswith("S=") for line in lines) == len(sweep)
    page = (out / "report.html").read_text()
    assert "Quality condition (IQPFR)" in page and "<th>NR-IQA</th>" in page


def test_plain_report_without_a_scorer_has_no_quality_column_values(tmp_path):
    out = tmp_path / "r"
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["--random-weights", *FAST, "--out", str(out), "--quality-scorer", "none"]) == 0
    summary = json.loads((out / "report.json").read_text())
    ran = [r for r in summary["variants"] if r["status"] == "ran"]
    assert ran and all(r["nr_iqa"] is None for r in ran)
    assert summary["quality_condition"] is None and summary["nr_iqa_scorer"] is None
