"""Fused nearest-code quantizer against its reference, on odd shapes, fp32 and fp16 (bf16 on GPU)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from daefr.kernels import nearest_code  # noqa: E402
from daefr.kernels.quantize import nearest_code_ref  # noqa: E402
from daefr.kernels.tolerances import NEAREST_CODE_DIST_RTOL  # noqa: E402

# (M, K, D): M = 1, 255, 257, 1000; K never a multiple of the 64/128 code tiles except the
# official 1024 x 256 codebook; D = 40 and 72 end in a partial BLOCK_D chunk.
SHAPES = [(1, 37, 40), (255, 1024, 256), (257, 1000, 72), (1000, 300, 64)]


def separated_problem(m: int, k: int, d: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Tokens = a known code + 5% noise: the nearest code is unambiguous in every dtype."""
    codebook = torch.randn(k, d, generator=gen)
    true_idx = torch.randint(k, (m,), generator=gen)
    z = codebook[true_idx] + 0.05 * torch.randn(m, d, generator=gen)
    return z, codebook, true_idx


def fp64_dist(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    zd, cd = z.double().cpu(), codebook.double().cpu()
    return torch.cdist(zd, cd) ** 2  # (M, K)


@pytest.mark.parametrize(("m", "k", "d"), SHAPES)
def test_separated_codes_give_exact_indices(device, dtype, m, k, d, gen):
    z, codebook, true_idx = separated_problem(m, k, d, gen)
    z, codebook = z.to(device, dtype), codebook.to(device, dtype)
    idx, codes = nearest_code(z, codebook)
    assert idx.dtype == torch.int64 and idx.shape == (m,)
    assert codes.dtype == dtype and codes.shape == (m, d)
    assert torch.equal(idx.cpu(), true_idx)
    assert torch.equal(codes, codebook[idx])  # gather is a bit-exact copy


@pytest.mark.parametrize(("m", "k", "d"), [(257, 1000, 72), (1000, 300, 64)])
def test_random_codes_are_nearest_up_to_near_ties(device, dtype, m, k, d, gen):
    z = torch.randn(m, d, generator=gen).to(device, dtype)
    codebook = torch.randn(k, d, generator=gen).to(device, dtype)
    idx, codes = nearest_code(z, codebook)
    dist = fp64_dist(z, codebook)
    terms = z.double().cpu().pow(2).sum(1) + codebook.double().cpu().pow(2).sum(1).max()
    picked = dist.gather(1, idx.cpu()[:, None])[:, 0]
    excess = picked - dist.min(1).values
    assert (excess <= NEAREST_CODE_DIST_RTOL[dtype] * terms).all(), f"worst excess {excess.max():.3g}"
    assert torch.equal(codes, codebook[idx])
    if dtype == torch.float32:
        assert (idx.cpu() == nearest_code_ref(z, codebook)[0].cpu()).float().mean() > 0.99


def test_first_index_wins_ties(device, gen):
    k, d = 300, 40
    # small integers: every distance is exact in fp32, so equal codes give equal distances
    # whatever the summation order (with randn codes a tile boundary changed the rounding)
    codebook = torch.randint(-3, 4, (k, d), generator=gen).float()
    codebook[9] = codebook[7]  # a tie inside one code tile
    codebook[200] = codebook[5]  # a tie across tiles
    z = codebook[[7, 5, 9, 200]]
    idx, _ = nearest_code(z.to(device), codebook.to(device))
    assert idx.tolist() == [7, 5, 7, 5]


def test_strided_inputs_match_contiguous(device, gen):
    z = torch.randn(64, 257, generator=gen).t().to(device)  # (257, 64) with stride (1, 257)
    codebook = torch.randn(64, 130, generator=gen)[:, ::2].t().to(device)  # (65, 64), strided
    idx, codes = nearest_code(z, codebook)
    idx_c, codes_c = nearest_code(z.contiguous(), codebook.contiguous())
    assert torch.equal(idx, idx_c) and torch.equal(codes, codes_c)
    assert torch.equal(idx.cpu(), nearest_code_ref(z, codebook)[0].cpu())


def test_empty_batch(device):
    idx, codes = nearest_code(torch.zeros(0, 8, device=device), torch.zeros(5, 8, device=device))
    assert idx.shape == (0,) and codes.shape == (0, 8)


@pytest.mark.parametrize(
    ("z_shape", "c_shape", "z_dtype", "c_dtype", "message"),
    [
        ((4, 8, 1), (5, 8), torch.float32, torch.float32, r"z must be \(M, D\)"),
        ((4, 8), (5, 7), torch.float32, torch.float32, "code dim differs"),
        ((4, 8), (0, 8), torch.float32, torch.float32, "codebook is empty"),
        ((4, 8), (5, 8), torch.float32, torch.float16, "must share one dtype"),
        ((4, 8), (5, 8), torch.float64, torch.float64, "not supported"),
    ],
)
def test_launcher_rejects_bad_inputs(z_shape, c_shape, z_dtype, c_dtype, message):
    with pytest.raises(ValueError, match=message):
        nearest_code(torch.zeros(z_shape, dtype=z_dtype), torch.zeros(c_shape, dtype=c_dtype))


def test_cpu_tensors_without_the_interpreter_run_the_reference(monkeypatch):
    """The daefr:: ops' CPU implementation (what tracing and export use without a process-wide
    TRITON_INTERPRET=1): the PyTorch reference, NaN tokens mapped to index 0 as in the kernel."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    g = torch.Generator().manual_seed(0)
    z, codebook = torch.randn(37, 8, generator=g), torch.randn(19, 8, generator=g)
    z[5] = float("nan")
    idx, codes = nearest_code(z, codebook)
    ref_idx, _ = nearest_code_ref(z, codebook)
    assert idx[5] == 0 and torch.equal(idx[:5], ref_idx[:5]) and torch.equal(idx[6:], ref_idx[6:])
    assert torch.equal(codes, codebook[idx])
