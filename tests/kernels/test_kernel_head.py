"""Fused code head (LayerNorm + Linear + argmax + gather) against an fp64 reference."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from daefr import ops  # noqa: E402
from daefr.kernels import code_head, code_head_with_logits  # noqa: E402
from daefr.kernels.head import code_head_ref  # noqa: E402
from daefr.kernels.tolerances import (  # noqa: E402
    CODE_HEAD_FP32_MARGIN,
    CODE_HEAD_LOGIT_EPS,
    ERROR_RATIO,
    LOGITS_ERROR_FLOOR,
)

EPS = 1e-5
# (M, C, K, D): the official head is C = 512, K = 1024, D = 256; the others end in partial
# channel and code tiles (the interpreter's tiles are 128 x 128 x 128).
SHAPES = [(1, 40, 37, 24), (255, 512, 1024, 256), (257, 72, 1000, 72), (1000, 64, 300, 32)]


def head_inputs(m: int, c: int, k: int, d: int, gen: torch.Generator) -> tuple:
    """x off-centre and scaled so the LayerNorm matters; O(1) logits."""
    x = 3 * torch.randn(m, c, generator=gen) + 1
    ln_weight = 1 + 0.5 * torch.randn(c, generator=gen)
    ln_bias = 0.1 * torch.randn(c, generator=gen)
    proj_weight = torch.randn(k, c, generator=gen) / c**0.5
    codebook = torch.randn(k, d, generator=gen)
    return x, ln_weight, ln_bias, EPS, proj_weight, codebook


def cast(args: tuple, device: str, dtype: torch.dtype) -> tuple:
    return tuple(a.to(device, dtype) if isinstance(a, torch.Tensor) else a for a in args)


@pytest.mark.parametrize(("m", "c", "k", "d"), SHAPES)
def test_matches_fp64_reference(device, dtype, m, c, k, d, gen):
    args = cast(head_inputs(m, c, k, d, gen), device, dtype)
    idx, codes, logits = code_head_with_logits(*args)
    _, _, logits64 = code_head_ref(*cast(args, "cpu", torch.float64))  # from the rounded inputs
    idx_cpu = idx.cpu()
    assert idx.dtype == torch.int64 and idx.shape == (m,)
    assert codes.dtype == dtype and torch.equal(codes, args[-1][idx])

    # argmax up to near ties; exact in fp32 wherever the top-2 gap is clear
    top2 = logits64.topk(min(2, k), dim=1).values
    picked = logits64.gather(1, idx_cpu[:, None])[:, 0]
    assert (picked >= top2[:, 0] - CODE_HEAD_LOGIT_EPS[dtype]).all()
    if dtype == torch.float32:
        clear = (top2[:, 0] - top2[:, -1]) > CODE_HEAD_FP32_MARGIN
        assert torch.equal(idx_cpu[clear], logits64.argmax(1)[clear])

    # logits: flash-attention's rule against plain PyTorch in the same dtype
    err = (logits.cpu().double() - logits64).abs().max().item()
    err_torch = (code_head_ref(*args)[2].cpu().double() - logits64).abs().max().item()
    assert err <= ERROR_RATIO * err_torch + LOGITS_ERROR_FLOOR[dtype], (err, err_torch)


def test_inference_variant_matches(device, dtype, gen):
    args = cast(head_inputs(257, 72, 300, 40, gen), device, dtype)
    idx, codes, _ = code_head_with_logits(*args)
    idx2, codes2 = code_head(*args)  # same kernel, logits not stored
    assert torch.equal(idx2, idx) and torch.equal(codes2, codes)


def test_first_index_wins_ties(device, gen):
    x, w, b, eps, proj, cb = head_inputs(20, 64, 300, 16, gen)
    x[:, 0] = 50.0  # channel 0 normalises to about +7.9 in every row
    w[0] = 1.0
    # three equal rows with one non-zero weight: their logits are one product each, hence
    # exactly equal whatever the summation order, and larger than all others
    for row in (3, 40, 150):  # one tie inside a code tile, one across tiles
        proj[row] = 0.0
        proj[row, 0] = 10.0
    idx, _ = code_head(*cast((x, w, b, eps, proj, cb), device, torch.float32))
    assert idx.tolist() == [3] * 20


def test_strided_x_matches_contiguous(device, gen):
    x, w, b, eps, proj, cb = head_inputs(70, 64, 100, 16, gen)
    x_t = x.t().contiguous().t()  # (70, 64) with stride (1, 70)
    out = code_head_with_logits(*cast((x_t, w, b, eps, proj, cb), device, torch.float32))
    ref = code_head_with_logits(*cast((x, w, b, eps, proj, cb), device, torch.float32))
    assert all(torch.equal(a, r) for a, r in zip(out, ref, strict=True))


def test_ops_triton_branch_matches_torch(device, gen):
    x, w, b, eps, proj, cb = cast(head_inputs(33, 64, 100, 16, gen), device, torch.float32)
    norm = torch.nn.LayerNorm(64, eps=eps).to(device)
    with torch.no_grad():
        norm.weight.copy_(w)
        norm.bias.copy_(b)
        got = ops.code_head(x, norm, proj, cb, impl="triton", return_logits=True)
        want = ops.code_head(x, norm, proj, cb, impl="torch", return_logits=True)
    assert torch.equal(got.idx, want.idx) and torch.equal(got.codes, want.codes)
    torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=LOGITS_ERROR_FLOOR[torch.float32])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x": torch.zeros(4, 8, 1)}, r"x must be \(M, C\)"),
        ({"ln_weight": torch.zeros(7)}, "channel count differs"),
        ({"proj_weight": torch.zeros(6, 8)}, "proj_weight has 6 rows but the codebook 5"),
        ({"codebook": torch.zeros(5, 3, dtype=torch.float16)}, "must share one dtype"),
    ],
)
def test_launcher_rejects_bad_inputs(change, message):
    args = {
        "x": torch.zeros(4, 8),
        "ln_weight": torch.ones(8),
        "ln_bias": torch.zeros(8),
        "eps": EPS,
        "proj_weight": torch.zeros(5, 8),
        "codebook": torch.zeros(5, 3),
    }
    args.update(change)
    with pytest.raises(ValueError, match=message):
        code_head(**args)
