"""Fused attention against an fp64 reference: error at most 2x that of plain PyTorch."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from daefr.kernels import fused_attention  # noqa: E402
from daefr.kernels.attention import attention_ref  # noqa: E402
from daefr.kernels.tolerances import ATTENTION_ERROR_FLOOR, ERROR_RATIO  # noqa: E402

# (B, H, Nq, Nk, Dh): DAEFR's MHCA (8 x 32) and transformer (8 x 64) over 256 tokens, the
# VQGAN blocks' 1 x 512 (4 output slices), odd sizes (batch 3, 255/257 tokens, Dh 40) and
# Dh = 200 (two output slices, the second partial).
SHAPES = [
    (1, 1, 1, 3, 8),
    (1, 8, 256, 256, 32),
    (1, 8, 256, 256, 64),
    (3, 2, 257, 255, 40),
    (1, 1, 97, 256, 512),
    (1, 2, 33, 65, 200),
]


def model_layout_inputs(b, h, n_q, n_k, dh, gen):
    """Strided like the model's: q as the transformer's (B, N, H, Dh).transpose(1, 2), k as
    the VQGAN block's (B, H, Dh, N).transpose(2, 3), v contiguous."""
    q = torch.randn(b, n_q, h, dh, generator=gen).transpose(1, 2)
    k = torch.randn(b, h, dh, n_k, generator=gen).transpose(2, 3)
    v = torch.randn(b, h, n_k, dh, generator=gen)
    return q, k, v


@pytest.mark.parametrize(("b", "h", "n_q", "n_k", "dh"), SHAPES)
def test_error_within_twice_plain_pytorch(device, dtype, b, h, n_q, n_k, dh, gen):
    q, k, v = (t.to(device, dtype) for t in model_layout_inputs(b, h, n_q, n_k, dh, gen))
    out = fused_attention(q, k, v)
    assert out.shape == (b, h, n_q, dh) and out.dtype == dtype and out.is_contiguous()
    ref = attention_ref(*(t.cpu().double() for t in (q, k, v)))  # fp64 from the rounded inputs
    err = (out.cpu().double() - ref).abs().max().item()
    err_torch = (attention_ref(q, k, v).cpu().double() - ref).abs().max().item()
    assert err <= ERROR_RATIO * err_torch + ATTENTION_ERROR_FLOOR[dtype], (err, err_torch)


def test_cross_attention_shapes(device, gen):
    """Queries and keys from different tensors, Nq != Nk (MHCA-style cross attention)."""
    q = torch.randn(2, 4, 50, 16, generator=gen).to(device)
    k = torch.randn(2, 4, 300, 16, generator=gen).to(device)
    v = 5 * torch.randn(2, 4, 300, 16, generator=gen).to(device)
    out = fused_attention(q, k, v)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "v_shape", "message"),
    [
        ((2, 4, 8), (2, 4, 8), (2, 4, 8), r"q must be \(B, H, N, Dh\)"),
        ((1, 2, 8, 16), (1, 2, 9, 16), (1, 2, 8, 16), "k and v must have one shape"),
        ((1, 2, 8, 16), (1, 3, 9, 16), (1, 3, 9, 16), "must share B, H and Dh"),
        ((1, 2, 8, 16), (1, 2, 0, 16), (1, 2, 0, 16), "at least one key"),
    ],
)
def test_launcher_rejects_bad_inputs(q_shape, k_shape, v_shape, message):
    with pytest.raises(ValueError, match=message):
        fused_attention(torch.zeros(q_shape), torch.zeros(k_shape), torch.zeros(v_shape))


def test_launcher_rejects_mixed_dtypes():
    q = torch.zeros(1, 1, 4, 16)
    with pytest.raises(ValueError, match="q=torch.float32, k=torch.float16"):
        fused_attention(q, q.half(), q)
