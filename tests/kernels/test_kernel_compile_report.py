"""The offline Hopper compile check: every autotune config of every kernel call the official
model makes compiles for sm_90a with Triton's compiler and ptxas, no GPU needed.

The interpreter tests prove what the kernels compute; this proves that what a GPU would JIT
compiles, fits in shared memory and puts half-precision dots on tensor cores (bf16 included,
which the interpreter cannot run). Full report: ``reports/cpu/kernels_sm90_compile.txt``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from daefr.kernels import compile_report as cr  # noqa: E402
from daefr.kernels._tiles import ATTENTION_GPU_TILES, GPU_TILES  # noqa: E402

PTXAS_LOG = """ptxas info    : 11 bytes gmem
ptxas info    : Compiling entry function '_attention_kernel' for 'sm_90a'
ptxas info    : Function properties for _attention_kernel
    1072 bytes stack frame, 1904 bytes spill stores, 1724 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 1072 bytes cumulative stack size
"""


def test_ptxas_log_gives_registers_and_spills():
    assert cr.parse_ptxas_log(PTXAS_LOG) == cr.PtxasUsage(registers=255, spill_stores=1904, spill_loads=1724)
    with pytest.raises(ValueError, match="no register/spill line"):
        cr.parse_ptxas_log("ptxas fatal   : Unsupported .version 9.4")


@pytest.mark.parametrize(
    ("registers", "warps", "shared", "want"),
    [
        (241, 4, 65536, 8 / 64),  # 241 -> 7936 regs per warp: 8 warps fit, 2 blocks of 4
        (70, 4, 8192, 28 / 64),  # 2304 per warp: 28 warps -> 7 blocks (shared memory allows 25)
        (32, 4, 100 * 1024, 8 / 64),  # shared memory limits: 2 blocks of 101 KiB per SM
        (16, 1, 0, 32 / 64),  # the 32-blocks-per-SM limit
    ],
)
def test_theoretical_occupancy(registers, warps, shared, want):
    assert cr.theoretical_occupancy(registers, warps, shared) == pytest.approx(want)


def _row(**changes) -> cr.Row:
    base = dict(
        op="fused_attention", source="forward", shapes="1x8x256x64", dtype="float16", config="c1",
        num_warps=4, compiled=True, registers=100, spill_stores=0, spill_loads=0,
        shared_bytes=16384, tensor_cores="wgmma", occupancy=0.25,
    )  # fmt: skip
    return cr.Row(**(base | changes))


def test_problems_are_found():
    assert cr.find_problems([_row(), _row(config="c2", spill_stores=64)]) == []  # spills: not a problem
    problems = cr.find_problems(
        [
            _row(compiled=False, error="CompilationError: boom"),
            _row(config="c2", shared_bytes=cr.SM90.shared_per_block + 1),
            _row(shapes="1x1x256x512", dtype="bfloat16", tensor_cores="none"),
            _row(shapes="1x1x256x512", dtype="float32", tensor_cores="none"),  # fp32 runs exact: fine
        ]
    )
    assert len(problems) == 4, problems
    assert problems[0].startswith("does not compile") and "boom" in problems[0]
    assert "shared memory" in problems[1]
    assert problems[2].startswith("half-precision dots without tensor cores") and "bfloat16" in problems[2]
    assert problems[3].startswith("no usable config: fused_attention 1x8x256x64 forward float16")


def test_records_the_kernel_calls_of_the_official_model():
    calls = {(c.op, c.source, c.key()[1:]) for c in cr.record_model_calls(batch=2)}
    by_op: dict[str, list] = {}
    for op, source, args in calls:
        by_op.setdefault(op, []).append((source, args))
    # VQGAN blocks (1 x 512, head dim strided: the model passes transposed views), MHCA 8 x 32,
    # transformer 8 x 64: one entry each however many times the model calls them
    attention = sorted(args[0] for _, args in by_op["fused_attention"])
    assert attention == sorted(
        [
            "2x1x256x512@(131072, 131072, 1, 256)",
            "2x8x256x32@(65536, 8192, 1, 256)",
            "2x8x256x64@(131072, 64, 512, 1)",
        ]
    )
    heads = {source: args for source, args in by_op["code_head"]}
    assert heads["forward"][0] == "512x512@(512, 1)" and heads["forward"][-1] == "False"
    assert heads["code head with logits"][-1] == "True"
    assert by_op["nearest_code"] == [("HQ-path quantize", ("512x256@(256, 1)", "1024x256@(256, 1)"))]


def test_refuses_to_run_under_the_interpreter(capsys):
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        pytest.skip("this session compiles for the GPU; the refusal needs TRITON_INTERPRET=1")
    assert cr.main(["--dtypes", "float16"]) == 2
    assert "unset TRITON_INTERPRET" in capsys.readouterr().err


def test_every_config_compiles_for_hopper_in_half_precision(tmp_path):
    """All autotune configs, fp16 and bf16 (the deployment dtypes): compile, fit, use tensor
    cores. Runs in a subprocess without TRITON_INTERPRET so the GPU configs are the ones built."""
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run(
        [sys.executable, "-m", "daefr.kernels.compile_report", "--dtypes", "float16,bfloat16", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert report["problems"] == []
    calls = {(r["op"], r["shapes"], r["source"]) for r in rows}
    # 3 attention shapes, the head with and without logits, the quantizer at batch 1 and 2:
    # Triton specialises on alignment and 1/16-divisibility, not on sizes, so batch 2 needs no
    # kernel of its own except the quantizer's (a transposed view at batch 1, a copy at 2)
    assert len(calls) == 7
    quantizer = sorted(shapes for op, shapes, _ in calls if op == "nearest_code")
    assert quantizer == ["256x256* 1024x256", "512x256 1024x256"]
    configs = {
        "fused_attention": len(ATTENTION_GPU_TILES),
        "code_head": len(GPU_TILES),
        "nearest_code": len(GPU_TILES),
    }
    assert all(r["compiled"] and r["registers"] <= 255 for r in rows)
    assert all(r["shared_bytes"] <= cr.SM90.shared_per_block for r in rows)
    for call in calls:
        for dtype in ("float16", "bfloat16"):
            mine = [r for r in rows if (r["op"], r["shapes"], r["source"]) == call and r["dtype"] == dtype]
            assert len(mine) == configs[call[0]], (call, dtype)  # every GPU config, none dropped
            # every call has Hopper tensor-core (wgmma) configs for the autotuner to choose from
            assert any(r["tensor_cores"] == "wgmma" for r in mine), (call, dtype)
            assert all(r["tensor_cores"] in ("wgmma", "mma") for r in mine), (call, dtype)
