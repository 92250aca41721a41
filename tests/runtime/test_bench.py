"""``daefr-bench video`` through ``main([...])`` on a small synthetic clip, tiny preset: every
backend is measured or skipped with its reason, ratios are to eager, the JSON and the printed
tables agree, and usage errors exit 2."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("av")
pytest.importorskip("onnxruntime")

from daefr.runtime.bench import main  # noqa: E402

FRAMES = 6


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "video.json"
    argv = [
        "video", "--random-weights", "--preset", "tiny", "--backends", "torch,ort,trt",
        "--frames", str(FRAMES), "--size", "320x240", "--batch-size", "2", "--iters", "2",
        "--warmup", "1", "--threads", "1", "--detect-workers", "1", "--out", str(out), "-q",
    ]  # fmt: skip
    return main(argv), json.loads(out.read_text())


def test_every_backend_is_measured_or_says_why_not(bench_run):
    code, report = bench_run
    assert code == 0
    by_name = {r["backend"]: r for r in report["results"]}
    assert list(by_name) == ["torch", "ort", "trt"]
    assert "skipped" in by_name["trt"] and "TensorRT" in by_name["trt"]["skipped"]
    for name in ("torch", "ort"):
        video, network = by_name[name]["video"], by_name[name]["network"]
        assert video["frames"] == FRAMES and video["faces"] >= FRAMES - 1  # one synthetic face per frame
        assert video["fps"] > 0 and network["faces_per_s"] > 0
        assert set(video["stage_s"]) == {"decode", "detect", "align", "restore", "paste", "encode"}
        lat = video["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert by_name["torch"]["network"]["ratio_to_eager"] == 1.0
    ort = by_name["ort"]
    assert ort["network"]["ratio_to_eager"] == pytest.approx(
        ort["network"]["faces_per_s"] / by_name["torch"]["network"]["faces_per_s"]
    )
    assert report["preset"] == "tiny" and report["weights"] == "random (speed only)"
    assert report["clip"] == "synthetic 320x240"


def test_printed_tables_match_the_json(bench_run):
    # the module fixture printed outside this test's capture: render the table from the JSON again
    from daefr.runtime.bench import format_table

    _, report = bench_run
    table = format_table(report["results"]).splitlines()
    assert table[0].split()[:3] == ["backend", "faces/s", "x"]
    ort_row = next(line for line in table if line.startswith("ort ") and "ms/frame" not in line)
    ort = next(r for r in report["results"] if r["backend"] == "ort")
    assert float(ort_row.split()[3]) == pytest.approx(ort["video"]["fps"], abs=0.01)
    stage_row = next(line for line in table if line.startswith("ort ") and "ms/frame by stage" in line)
    paste_ms = 1e3 * ort["video"]["stage_s"]["paste"] / ort["video"]["frames"]
    assert f"paste {paste_ms:.1f}" in stage_row
    assert any(line.startswith("trt ") and "skipped:" in line for line in table)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["video", "--random-weights", "--backends", "tensorflow"], "unknown ['tensorflow']"),
        (["video", "--backends", "torch"], "pass --ckpt or --random-weights"),
        (["video", "--random-weights", "--frames", "0"], "--frames must be >= 1"),
        (["video", "--random-weights", "--size", "321x240"], "must be even"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_stages_costs_every_cpu_stage_per_frame(tmp_path, capsys):
    from daefr.runtime.bench_stages import STAGES

    out = tmp_path / "stages.json"
    argv = ["stages", "--size", "320x240", "--frames", "4", "--resolution", "64", "--out", str(out), "-q"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    costs = {c["stage"]: c for c in report["stages"]}
    assert list(costs) == list(STAGES)
    for cost in costs.values():
        assert 0 < cost["ms_p50"] <= cost["ms_p95"] and cost["ms_mean"] > 0
        assert cost["max_fps_one_core"] == pytest.approx(1e3 / cost["ms_mean"])
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[:3] == ["stage", "ms", "mean"] and len(printed) == 1 + len(STAGES)


def test_stages_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["stages", "--frames", "0"])
    assert exc.value.code == 2
    assert "--frames must be >= 1" in capsys.readouterr().err


def test_every_batch_size_is_met_before_the_timed_video_on_cuda_only(monkeypatch):
    """CUDA graphs are captured and Triton autotunes per batch size: the video bench meets
    each size 1..B first. On the CPU there is nothing to warm (and it would cost minutes)."""
    import torch

    from daefr.runtime import bench
    from daefr.runtime.bench import warm_every_batch_size

    class Recorder:
        resolution = 8

        def __init__(self, device):
            self.device, self.sizes = torch.device(device), []

        def restore(self, batch):
            assert batch.device == self.device
            self.sizes.append(batch.shape[0])

    cpu = Recorder("cpu")
    warm_every_batch_size(cpu, 4)
    assert cpu.sizes == []
    monkeypatch.setattr(bench, "COMPILES_PER_BATCH_SIZE", ("meta",))  # "meta" plays the GPU
    meta = Recorder("meta")
    warm_every_batch_size(meta, 4)
    assert meta.sizes == [1, 2, 3, 4]
