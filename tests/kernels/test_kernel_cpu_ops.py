"""The daefr:: ops' CPU implementations: without TRITON_INTERPRET an ``impl="triton"`` model on
the CPU runs the PyTorch references (so tracing and export need no process-wide switch), and
gives the codes of ``impl="torch"``."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from daefr import DAEFR, DAEFRConfig  # noqa: E402
from daefr.seeded_weights import seed_model_  # noqa: E402


def test_triton_impl_on_cpu_without_the_interpreter_matches_torch(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cfg = DAEFRConfig.from_name("tiny")
    torch_model = seed_model_(DAEFR(cfg), salt="cpu-ops").eval()
    triton_model = DAEFR(cfg, impl="triton").eval()
    triton_model.load_state_dict(torch_model.state_dict())
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        want, got = torch_model(x), triton_model(x)
    assert torch.equal(got.code_idx, want.code_idx)
    assert (got.restored - want.restored).abs().max().item() < 1e-4
    with torch.inference_mode():  # bf16 inputs: one dtype in, fp32 statistics inside, as the kernels
        from daefr.kernels import code_head_with_logits, fused_attention

        q = torch.randn(1, 2, 9, 8, dtype=torch.bfloat16)
        assert fused_attention(q, q, q).dtype == torch.bfloat16
        w = torch.ones(8, dtype=torch.bfloat16)
        idx, codes, logits = code_head_with_logits(q[0, 0], w, w * 0, 1e-5, torch.randn(5, 8).bfloat16(),
                                                   torch.randn(5, 3).bfloat16())  # fmt: skip
        assert idx.dtype == torch.int64 and logits.shape == (9, 5) and codes.shape == (9, 3)
