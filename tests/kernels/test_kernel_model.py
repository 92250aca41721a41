"""The tiny DAEFR with impl="triton" restores like impl="torch" (fp32)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")

from daefr import DAEFR  # noqa: E402
from daefr.kernels.tolerances import MODEL_RESTORED_ATOL  # noqa: E402


def test_triton_impl_gives_the_torch_codes_and_image(device, tiny_model, tiny_input):
    triton_model = DAEFR(tiny_model.config, impl="triton").eval()
    triton_model.load_state_dict(tiny_model.state_dict())
    tiny_model.to(device)
    triton_model.to(device)
    image = tiny_input[:1].to(device)  # one face: the interpreter runs ~5 s per face
    with torch.no_grad():
        want = tiny_model(image)
        got = triton_model(image)
        # the VQ path (codebook quantizer) on the same HQ features
        hq_feat = tiny_model.encode_hq(image)
        codes, idx = triton_model.vqvae.Fixed_quantize.quantize(hq_feat)
        codes_ref, idx_ref = tiny_model.vqvae.Fixed_quantize.quantize(hq_feat)
    assert torch.equal(got.code_idx, want.code_idx)
    torch.testing.assert_close(got.restored, want.restored, rtol=0, atol=MODEL_RESTORED_ATOL)
    assert torch.equal(idx, idx_ref) and torch.equal(codes, codes_ref)
