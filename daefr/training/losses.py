"""Losses of the three stages (paper Eqs. 2-7) and the networks they need.

- ``codebook_loss``: the VQ loss in the original's form (weight 1 on committing the encoder,
  beta on moving the codes) or the paper's Eq. 2 (the reverse); the straight-through copy itself
  lives in ``VQAutoencoder.forward``.
- ``LPIPS``: the perceptual loss. It needs pretrained weights, which cannot be downloaded here,
  so it is only ever built from a file (``load_perceptual``); there is no random fallback.
- ``NLayerDiscriminator`` (PatchGAN), ``hinge_d_loss``, ``adaptive_weight``.
- ``patch_association_loss``: the CLIP-style loss of the association stage (Eq. 4).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------
# Codebook


def codebook_loss(
    feat: torch.Tensor, codes: torch.Tensor, beta: float, form: str = "original"
) -> torch.Tensor:
    """feat: encoder features z; codes: chosen codebook rows z_q (same shape); fp32 result.

    ``"original"``: mean((sg(z_q) - z)^2) + beta * mean((z_q - sg(z))^2), the VectorQuantizer
    that trained the released weights (vqvae_arch.py:91-92, taming's "legacy" form: the encoder
    commits with weight 1, the codes move with weight beta). ``"paper"``: Eq. 2 as printed,
    weight 1 on moving the codes and beta on the commitment. Both have the value
    (1 + beta) * mean((z_q - z)^2); only the gradients differ.
    """
    feat, codes = feat.float(), codes.float()
    commit = F.mse_loss(feat, codes.detach())  # moves the encoder
    move = F.mse_loss(codes, feat.detach())  # moves the codes
    if form == "original":
        return commit + beta * move
    if form == "paper":
        return move + beta * commit
    raise ValueError(f"codebook_loss: form={form!r}; choose 'original' or 'paper'")


# --------------------------------------------------------------------------------------
# Perceptual loss: LPIPS (VGG16 trunk + learned 1x1 heads), as the original code uses.

# (slice, torchvision vgg16.features indices) of the five LPIPS slices; convs at the listed
# indices, each followed by ReLU, max-pool before the first conv of slices 2..5.
_VGG_SLICES: tuple[tuple[int, ...], ...] = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
_VGG_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)


class _LinearHead(nn.Module):
    """LPIPS' NetLinLayer: Dropout(0.5) then a 1x1 conv (keys ``model.1.weight``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """Learned perceptual distance, frozen. Inputs (B, 3, H, W) in [-1, 1] -> (B,) distances.

    Built in eval mode. ``train(True)`` turns on the heads' Dropout(0.5), as Lightning's
    ``model.train()`` does to the original's LPIPS during training (the VGG trunk has no
    dropout or BatchNorm, so nothing else changes); the training stages choose the mode from
    ``LossConfig.perceptual_dropout``.

    Parameter names are those of ``lpips.LPIPS(net="vgg").state_dict()`` (``scaling_layer.*``,
    ``net.slice{1..5}.{i}.*``, ``lin{0..4}.model.1.weight``), so that file loads as it is.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer(
            "shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
        )
        self.scaling_layer.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.net = nn.Module()
        in_ch = 3
        for s, (indices, out_ch) in enumerate(zip(_VGG_SLICES, _VGG_CHANNELS, strict=True), start=1):
            block = nn.Sequential()
            if s > 1:
                block.add_module(str(indices[0] - 1), nn.MaxPool2d(2, 2))
            for i in indices:
                block.add_module(str(i), nn.Conv2d(in_ch, out_ch, 3, padding=1))
                block.add_module(str(i + 1), nn.ReLU())
                in_ch = out_ch
            setattr(self.net, f"slice{s}", block)
        for k, ch in enumerate(_VGG_CHANNELS):
            setattr(self, f"lin{k}", _LinearHead(ch))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.scaling_layer.shift, self.scaling_layer.scale
        hx, hy = (x - shift) / scale, (y - shift) / scale
        total = x.new_zeros(x.shape[0])
        for k in range(len(_VGG_CHANNELS)):
            block = getattr(self.net, f"slice{k + 1}")
            hx, hy = block(hx), block(hy)
            # unit-normalise channels (eps 1e-10 as LPIPS), squared difference, 1x1 head
            nx = hx / (hx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = hy / (hy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            head = getattr(self, f"lin{k}").model  # dropout (training mode only), 1x1 conv
            total = total + head((nx - ny).pow(2)).mean(dim=(1, 2, 3))
        return total


class PerceptualWeightsError(ValueError):
    """A perceptual-loss weights file that cannot be used; names the file and the keys."""


def load_perceptual(path: str | Path) -> LPIPS:
    """LPIPS from a state_dict file with all 33 tensors (VGG16 trunk, 5 heads, scaling).

    Make one on a machine with internet access:
    ``torch.save(lpips.LPIPS(net="vgg").state_dict(), "lpips_vgg.pth")``.
    """
    from daefr.checkpoint import CheckpointError, read_state_dict

    model = LPIPS()
    try:
        state = read_state_dict(path)
    except CheckpointError as err:
        raise PerceptualWeightsError(str(err)) from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(k for k in expected if k in state and state[k].shape != expected[k].shape)
    if missing or unexpected or misshaped:
        raise PerceptualWeightsError(
            f"{path}: not an LPIPS-VGG state_dict (missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"mis-shaped {misshaped[:4]}); expected lpips.LPIPS(net='vgg').state_dict()"
        )
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model


# --------------------------------------------------------------------------------------
# Adversarial loss


class NLayerDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming): (B, 3, H, W) -> per-patch logits (B, 1, h, w)."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < layers else 1
            seq += [
                nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        seq.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*seq)
        for m in self.modules():  # taming's weights_init
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, disc_weight: float
) -> torch.Tensor:
    """||grad nll|| / (||grad g|| + 1e-4) at the decoder's last layer, clamped to [0, 1e4],
    times ``disc_weight`` (VQGAN's balance of the reconstruction and GAN terms)."""
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.float().norm() / (g_grad.float().norm() + 1e-4)
    return weight.clamp(0.0, 1e4).detach() * disc_weight


# --------------------------------------------------------------------------------------
# Association (CLIP-style patch loss)


def patch_association_loss(hq_feat: torch.Tensor, lq_feat: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """hq_feat, lq_feat: (B, D, r, r) features of the HQ encoder (clean input) and LQ encoder
    (degraded input). Every one of the M = B*r*r patches is a class: cosine similarities
    (M, M) times ``logit_scale``, cross-entropy toward the diagonal along both axes, averaged.
    """
    d = hq_feat.shape[1]
    hq = F.normalize(hq_feat.permute(0, 2, 3, 1).reshape(-1, d).float(), dim=1)  # (M, D)
    lq = F.normalize(lq_feat.permute(0, 2, 3, 1).reshape(-1, d).float(), dim=1)  # (M, D)
    logits = logit_scale * hq @ lq.t()  # (M, M): rows HQ patches, columns LQ patches
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
