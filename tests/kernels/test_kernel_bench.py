"""The kernel benchmark's code paths with its clock replaced (on the CPU through the Triton
interpreter, and on a GPU): every kernel is checked against float64 before it is timed, and a
wrong kernel is reported, not taken as a result. Real timings: ``python -m daefr.kernels.bench``."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

import daefr.kernels  # noqa: E402
from daefr.kernels import bench  # noqa: E402

PEAKS = ("test device", 1e11, 1e12, 1e12)  # (name, bytes/s, half FLOP/s, fp32 FLOP/s)


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch):
    """Run each timed function once (so it must work) and call it 10 us."""

    def time_us(fn):
        fn()
        return 10.0

    monkeypatch.setattr(bench, "time_us", time_us)


def test_every_kernel_is_checked_then_timed(device, dtype):
    torch.manual_seed(0)
    rows = [
        bench.bench_nearest_code(1, dtype, PEAKS, compiled=False, device=device),
        bench.bench_code_head(1, dtype, PEAKS, compiled=False, device=device),
        bench.bench_attention(1, 8, 32, dtype, PEAKS, compiled=False, device=device),
    ]
    assert [r.kernel for r in rows] == ["nearest_code", "code_head", "attention"]
    for row in rows:
        assert row.check_passed, row.check_detail
        assert row.kernel_us == 10.0 and row.floor_us is not None
    assert set(rows[0].baselines_us) == {"cdist+argmin+gather", "eager"}
    assert set(rows[2].baselines_us) == {"sdpa", "eager"}
    assert "100.00% of 256 tokens" in rows[0].check_detail
    lines = bench.format_rows(rows)
    assert all("check ok" in line for line in lines)
    # the autotuner's choice is named (one config in the interpreter, the GPU list on a GPU)
    assert all(r.config.startswith("BLOCK_M=") and " w" in r.config for r in rows)
    targets = bench.check_targets(rows)  # every kernel "as fast" as each baseline: 1x
    assert any("nearest_code" not in t and "code_head" in t and "got 1.00x: MISSED" in t for t in targets)
    assert any("attention" in t and "got 1.00x: met" in t for t in targets)


def test_a_wrong_kernel_fails_its_check(device, monkeypatch):
    right = daefr.kernels.nearest_code

    def off_by_one(z, codebook):
        idx, _ = right(z, codebook)
        idx = (idx + 1) % codebook.shape[0]
        return idx, codebook[idx]

    monkeypatch.setattr(daefr.kernels, "nearest_code", off_by_one)
    row = bench.bench_nearest_code(1, torch.float32, PEAKS, compiled=False, device=device)
    assert not row.check_passed
    assert "0.00% of 256 tokens" in row.check_detail
    assert "CHECK FAILED" in bench.format_rows([row])[0]


def test_attention_is_timed_on_the_strides_the_model_passes():
    """The layouts of MODEL_ATTENTION_LAYOUTS are those of the official model's own calls."""
    from daefr.kernels.compile_report import record_model_calls

    recorded = {
        tuple(call.args[0].shape[1::2]): call.args[0].stride()
        for call in record_model_calls(batch=2)
        if call.op == "fused_attention"
    }
    assert set(recorded) == set(bench.MODEL_ATTENTION_LAYOUTS)
    for (heads, head_dim), layout in bench.MODEL_ATTENTION_LAYOUTS.items():
        q = bench.attention_input(2, heads, head_dim, layout, torch.float32, "cpu")
        assert q.shape == (2, heads, bench.TOKENS, head_dim)
        assert q.stride() == recorded[(heads, head_dim)], (heads, head_dim, layout)
    with pytest.raises(ValueError, match="unknown attention layout"):
        bench.attention_input(1, 8, 64, "diagonal", torch.float32, "cpu")
