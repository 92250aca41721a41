"""The model's API on the tiny preset: shapes, stage methods, config validation."""

from __future__ import annotations

import pytest
import torch

from daefr import DAEFR, DAEFRConfig, VQGANConfig
from daefr.ops import nearest_code


def test_forward_returns_restored_image_and_codes(tiny_model, tiny_input):
    with torch.no_grad():
        result = tiny_model(tiny_input)
    assert result.restored.shape == tiny_input.shape
    assert result.code_idx.shape == (2, 256)
    assert result.code_idx.dtype == torch.int64
    assert 0 <= int(result.code_idx.min()) and int(result.code_idx.max()) < 64
    assert torch.isfinite(result.restored).all()


def test_stage_methods_compose_to_forward(tiny_model, tiny_input):
    with torch.no_grad():
        fused = tiny_model.fuse(tiny_model.encode_hq(tiny_input), tiny_model.encode_lq(tiny_input))
        logits = tiny_model.predict_logits(fused)
        code_idx = logits.argmax(-1)
        restored = tiny_model.decode(code_idx)
        result = tiny_model(tiny_input)
    assert torch.equal(code_idx, result.code_idx)
    torch.testing.assert_close(restored, result.restored, rtol=0, atol=1e-5)


def test_batch_items_are_independent(tiny_model, tiny_input):
    with torch.no_grad():
        both = tiny_model(tiny_input)
        second = tiny_model(tiny_input[1:])
    assert torch.equal(both.code_idx[1:], second.code_idx)
    torch.testing.assert_close(both.restored[1:], second.restored, rtol=1e-4, atol=1e-4)


def test_mhca_queries_come_from_lq_and_residual_is_hq(tiny_model):
    g = torch.Generator().manual_seed(3)
    hq, lq = torch.randn(2, 1, 32, 16, 16, generator=g)
    with torch.no_grad():
        fused = tiny_model.fuse(hq, lq)
        # With proj_out zeroed the block is the identity on its HQ input.
        tiny_model.cross_attention.proj_out.weight.zero_()
        tiny_model.cross_attention.proj_out.bias.zero_()
        assert torch.equal(tiny_model.fuse(hq, lq), hq)
    assert not torch.allclose(fused, hq)


def test_wrong_input_shape_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match=r"expected an image batch of shape \(B, 3, 64, 64\)"):
        tiny_model(torch.zeros(1, 3, 32, 32))


def test_nearest_code_reference_first_index_wins_ties():
    codebook = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    idx, codes = nearest_code(torch.tensor([[0.9, 0.1], [0.5, 0.5]]), codebook)
    assert idx.tolist() == [0, 0]
    assert torch.equal(codes, codebook[[0, 0]])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: VQGANConfig(ch=48), "ch=48"),
        (lambda: VQGANConfig(resolution=500), "resolution=500"),
        (lambda: DAEFRConfig(fusion_heads=7), "fusion_heads=7"),
        (lambda: DAEFRConfig(transformer_heads=3), "transformer_heads=3"),
        (lambda: DAEFRConfig.from_name("huge"), "unknown preset 'huge'"),
        (lambda: DAEFR(DAEFRConfig.from_name("tiny"), impl="cuda"), "unknown impl 'cuda'"),
    ],
)
def test_invalid_configs_name_the_field(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_official_preset_numbers():
    cfg = DAEFRConfig.from_name("official")
    assert cfg.num_tokens == 256
    assert cfg.vqgan.latent_size == 16
    assert (cfg.vqgan.codebook_size, cfg.vqgan.code_dim) == (1024, 256)
