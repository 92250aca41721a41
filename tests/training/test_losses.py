"""Loss functions and the networks behind them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from daefr.config import DAEFRConfig
from daefr.training.autoencoder import VQAutoencoder
from daefr.training.losses import (
    LPIPS,
    NLayerDiscriminator,
    PerceptualWeightsError,
    adaptive_weight,
    codebook_loss,
    hinge_d_loss,
    load_perceptual,
    patch_association_loss,
)


@pytest.mark.parametrize(
    ("form", "codes_weight", "feat_weight"),
    [
        # vqvae_arch.py:91-92: mean((z_q.detach() - z)^2) + beta * mean((z_q - z.detach())^2)
        ("original", 0.25, 1.0),
        # paper Eq. 2: ||sg(z) - z_q||^2 + beta ||z - sg(z_q)||^2
        ("paper", 1.0, 0.25),
    ],
)
def test_codebook_loss_forms_weight_codes_and_commitment(
    form: str, codes_weight: float, feat_weight: float
) -> None:
    feat = torch.randn(2, 4, 3, 3, requires_grad=True)
    codes = torch.randn(2, 4, 3, 3, requires_grad=True)
    loss = codebook_loss(feat, codes, beta=0.25, form=form)
    loss.backward()
    n = feat.numel()
    diff = (codes - feat).detach()
    assert loss.item() == pytest.approx(1.25 * diff.pow(2).sum().item() / n, rel=1e-6)  # same value
    torch.testing.assert_close(codes.grad, codes_weight * 2 * diff / n)
    torch.testing.assert_close(feat.grad, feat_weight * 2 * -diff / n)
    with pytest.raises(ValueError, match="form"):
        codebook_loss(feat, codes, beta=0.25, form="legacy")


def test_autoencoder_straight_through_and_codebook_gradients() -> None:
    torch.manual_seed(0)
    ae = VQAutoencoder(DAEFRConfig.from_name("tiny").vqgan)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    out = ae(image)
    assert out.recon.shape == image.shape and out.idx.shape == (2, 256)
    # the codes are the nearest codebook rows of the features
    flat = out.feat.permute(0, 2, 3, 1).reshape(-1, out.feat.shape[1])
    assert torch.equal(torch.cdist(flat, ae.quantize.embedding.weight).argmin(1), out.idx.reshape(-1))
    # reconstruction alone: the encoder learns through the straight-through copy, the codebook not
    out.recon.mean().backward(retain_graph=True)
    assert ae.encoder.conv_in.weight.grad.abs().sum() > 0
    assert ae.quantize.embedding.weight.grad is None
    codebook_loss(out.feat, out.codes, 0.25).backward()
    assert ae.quantize.embedding.weight.grad.abs().sum() > 0


def test_patch_loss_rewards_matching_patches() -> None:
    g = torch.Generator().manual_seed(0)
    hq = torch.randn(2, 8, 4, 4, generator=g)
    matched = patch_association_loss(hq, hq * 3.0, 1 / 0.07)  # same directions: diagonal wins
    shuffled = patch_association_loss(hq, torch.randn(2, 8, 4, 4, generator=g), 1 / 0.07)
    assert matched < 0.5 < shuffled
    # uniform similarities: cross-entropy over all M = 32 patches is log(32)
    flat = torch.ones(2, 8, 4, 4)
    assert patch_association_loss(flat, flat, 1 / 0.07).item() == pytest.approx(math.log(32), rel=1e-5)


def test_patch_loss_is_symmetric_cross_entropy_both_ways() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 6, 3, 3, generator=g), torch.randn(1, 6, 3, 3, generator=g)
    na = F.normalize(a.flatten(2)[0].t(), dim=1)
    nb = F.normalize(b.flatten(2)[0].t(), dim=1)
    logits = na @ nb.t() / 0.07
    target = torch.arange(9)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    torch.testing.assert_close(patch_association_loss(a, b, 1 / 0.07), expected)
    torch.testing.assert_close(patch_association_loss(a, b, 1 / 0.07), patch_association_loss(b, a, 1 / 0.07))


def test_hinge_and_patchgan_shapes() -> None:
    disc = NLayerDiscriminator(3, 8, 3)
    logits = disc(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1, 6, 6)  # 64 -> 32 -> 16 -> 8 -> 7 -> 6
    assert hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0)).item() == 0.0
    assert hinge_d_loss(torch.zeros(4), torch.zeros(4)).item() == 1.0


def test_adaptive_weight_is_the_gradient_norm_ratio() -> None:
    w = torch.randn(5, requires_grad=True)
    nll = (3.0 * w).sum()  # grad 3 per element
    g = (0.5 * w).sum()  # grad 0.5 per element
    got = adaptive_weight(nll, g, w, disc_weight=0.8)
    expected = 0.8 * (3 * math.sqrt(5)) / (0.5 * math.sqrt(5) + 1e-4)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    assert not got.requires_grad


def lpips_file(tmp_path: Path, drop: str | None = None) -> Path:
    torch.manual_seed(0)
    state = {k: torch.randn_like(v) * 0.05 for k, v in LPIPS().state_dict().items()}
    if drop is not None:
        del state[drop]
    path = tmp_path / "lpips_vgg.pth"
    torch.save(state, path)
    return path


def test_perceptual_loss_loads_the_lpips_layout_and_measures_distance(tmp_path: Path) -> None:
    model = load_perceptual(lpips_file(tmp_path))
    assert len(model.state_dict()) == 33
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training  # built in eval mode: deterministic
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    same = model(x, x)
    assert same.shape == (2,) and torch.all(same == 0)
    far = model(x, x.flip(-1))
    assert torch.all(far > 0)
    torch.testing.assert_close(model(x, x.flip(-1)), far, rtol=0, atol=0)
    # training mode: the heads' Dropout(0.5) of the original (lpips.py:93) - random, unbiased
    model.train()
    torch.manual_seed(0)
    draws = model(x[:1].expand(24, -1, -1, -1), x[:1].flip(-1).expand(24, -1, -1, -1))  # 24 masks
    assert len(set(draws.tolist())) > 1
    assert draws.mean().item() == pytest.approx(far[0].item(), rel=0.15)


def test_perceptual_loss_refuses_incomplete_weights(tmp_path: Path) -> None:
    with pytest.raises(PerceptualWeightsError, match="net.slice3.10.weight"):
        load_perceptual(lpips_file(tmp_path, drop="net.slice3.10.weight"))
    with pytest.raises(PerceptualWeightsError, match="no such file"):
        load_perceptual(tmp_path / "missing.pth")
