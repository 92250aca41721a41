"""One step of each stage against the original's definitions (LIAGM/DAEFR at 02d5010).

Tiny preset, formula weights (``daefr.seeded_weights``, the reference formula), a fixed batch,
no perceptual term. Each expected loss is computed here by hand from the original's formulas,
cited by file:line; the only thing shared with the implementation is the networks' forward
(encoder, decoder, MHCA, transformer), which ``tests/test_conformance.py`` proves equal to the
original's. Nearest codes are found here by brute force in float64, the losses are written out
(no ``daefr.training.losses``), and the set of parameters that receive gradients is the
original's optimizer rule (``configure_optimizers``) minus the tensors its forward never reads.

Original files: ``DAEFR/modules/vqvae/vqvae_arch.py`` (VQ), ``DAEFR/models/vqgan_origin.py``
(codebook stage), ``DAEFR/modules/losses/vqperceptual.py`` / ``vqperceptual_dual.py`` (losses),
``DAEFR/models/association_stage.py``, ``DAEFR/models/daefr.py``; pytorch-lightning 1.0.8
(``requirements.txt``) ``trainer/training_loop.py:684-736`` runs ``training_step`` (the whole
forward) once per optimizer, stepping each before the next one's forward.
"""

from __future__ import annotations

import copy
import hashlib
import re
from pathlib import Path

import pytest
import torch
from training_helpers import tiny_config

from daefr.cli.train import main
from daefr.config import DAEFRConfig
from daefr.seeded_weights import CONFORMANCE_SALT, seed_model_, seeded_state_dict
from daefr.training.autoencoder import VQAutoencoder
from daefr.training.branches import BranchStage
from daefr.training.data import FaceFolder
from daefr.training.fusion import FusionNet, FusionStage
from daefr.training.precision import autocast

CPU = torch.device("cpu")
TINY = DAEFRConfig.from_name("tiny")
BETA = 0.25  # VectorQuantizer(n_embed, embed_dim, beta=0.25), vqvae_arch.py:672, :742-746
RTOL = 1e-5  # same float32 ops in another order; the losses are O(1)
# MultiHeadAttnBlock.norm2 is read only for cross-attention (vqvae_arch.py:282-285), so the
# self-attention blocks' norm2 never receives a gradient in the original either.
UNREAD = re.compile(r"\.attn[^.]*(\.\d+)?\.norm2\.")


@pytest.fixture(scope="module")
def batch(faces_dir: Path) -> dict[str, torch.Tensor]:
    cfg = tiny_config("codebook")
    data = FaceFolder(faces_dir, TINY.vqgan.resolution, cfg.degradation, seed=0)
    items = [data[0], data[1]]
    return {k: torch.stack([item[k] for item in items]) for k in ("hq", "lq")}


# -- the original's formulas, by hand ---------------------------------------------------
def nearest(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vqvae_arch.py:45-84: tokens (B, h, w, D) flattened, argmin_k ||z - e_k||^2, z_q = e[idx].
    Here in float64 by explicit differences. -> (z_q (B, D, h, w), idx (B*h*w,))."""
    b, d, h, w = z.shape
    tokens = z.permute(0, 2, 3, 1).reshape(-1, d).double()
    dist = ((tokens[:, None, :] - codebook.double()[None, :, :]) ** 2).sum(-1)  # (M, K)
    idx = dist.argmin(1)
    return codebook[idx].reshape(b, h, w, d).permute(0, 3, 1, 2), idx


def vq_loss(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """vqvae_arch.py:91-92: mean((z_q.detach() - z)^2) + beta * mean((z_q - z.detach())^2);
    the value is (1 + beta) * mean((z_q - z)^2)."""
    return (1 + BETA) * ((z_q - z) ** 2).mean()


def clip_loss(hq_feat: torch.Tensor, lq_feat: torch.Tensor) -> torch.Tensor:
    """association_stage.py:174-197: flatten to (B*h*w, D), unit rows, logits = exp(logit_scale)
    H L^T with logit_scale = log(1/0.07) (:41, in no optimizer, so constant), cross-entropy to
    the diagonal along both axes, averaged."""
    d = hq_feat.shape[1]
    h = hq_feat.permute(0, 2, 3, 1).reshape(-1, d)
    lq = lq_feat.permute(0, 2, 3, 1).reshape(-1, d)
    h, lq = h / h.norm(dim=1, keepdim=True), lq / lq.norm(dim=1, keepdim=True)
    logits = (1 / 0.07) * h @ lq.t()
    diag = torch.arange(logits.shape[0])
    ce_h = -(logits.log_softmax(1)[diag, diag]).mean()
    ce_l = -(logits.t().log_softmax(1)[diag, diag]).mean()
    return (ce_h + ce_l) / 2


def autoencoder_objective(ae: VQAutoencoder, x: torch.Tensor) -> torch.Tensor:
    """vqperceptual.py:142-168 with perceptual_weight 0 and the GAN factor 0 before disc_start
    (adopt_weight, :166): mean|x - x_rec| + codebook_weight (1.0, HQ_codebook.yaml:35) * qloss;
    x_rec decodes z_q (the straight-through value, vqvae_arch.py:95; vqvae_arch.py:700-713)."""
    with torch.no_grad():
        z = ae.encode(x)
        z_q, _ = nearest(z, ae.quantize.embedding.weight)
        return (x - ae.decode(z_q)).abs().mean() + 1.0 * vq_loss(z, z_q)


def grad_names(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def seeded_autoencoders(stage: BranchStage) -> dict[str, VQAutoencoder]:
    for b in ("hq", "lq"):
        seed_model_(stage.ae[b], f"{CONFORMANCE_SALT}:{b}")
    return {b: copy.deepcopy(stage.ae[b]) for b in ("hq", "lq")}


# -- stage 1 ------------------------------------------------------------------------------
def test_codebook_stage_step_matches_the_original(batch: dict[str, torch.Tensor]) -> None:
    stage = BranchStage(tiny_config("codebook"), TINY.vqgan, CPU)
    before = seeded_autoencoders(stage)
    logs = stage.train_step(batch, 0)
    # HQ_codebook.yaml trains on 'gt' (the clean face); LQ_codebook.yaml's dataset returns the
    # degraded face as 'gt' (ffhq_degradation_dataset_LQ.py:206): each reconstructs its input.
    for b in ("hq", "lq"):
        ae, x = before[b], batch[b]
        assert logs[f"{b}_loss"] == pytest.approx(autoencoder_objective(ae, x).item(), rel=RTOL)
        # vqgan_origin.py:177-189: every vqvae parameter is in opt_ae; all but the unread
        # norm2 of the self-attention blocks receive a gradient; the discriminator none (GAN off)
        expected = {n for n, _ in ae.named_parameters() if not UNREAD.search(n)}
        assert grad_names(stage.ae[b]) == expected
        assert not grad_names(stage.disc[b])
        # the codebook's gradient is beta times its term's (the original's "legacy" form)
        with torch.no_grad():
            z = ae.encode(x)
            _, idx = nearest(z, ae.quantize.embedding.weight)
        codebook = ae.quantize.embedding.weight
        tokens = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        expected_grad = torch.zeros_like(codebook).index_add_(0, idx, codebook[idx] - tokens)
        expected_grad *= 2 * BETA / z.numel()
        got = stage.ae[b].quantize.embedding.weight.grad
        torch.testing.assert_close(got, expected_grad, rtol=1e-4, atol=1e-9)


def test_paper_form_puts_weight_one_on_the_codes(batch: dict[str, torch.Tensor]) -> None:
    stage = BranchStage(tiny_config("codebook", loss={"codebook_form": "paper"}), TINY.vqgan, CPU)
    before = seeded_autoencoders(stage)
    logs = stage.train_step(batch, 0)
    ae, x = before["hq"], batch["hq"]
    assert logs["hq_loss"] == pytest.approx(autoencoder_objective(ae, x).item(), rel=RTOL)  # same value
    with torch.no_grad():
        z = ae.encode(x)
        _, idx = nearest(z, ae.quantize.embedding.weight)
    codebook = ae.quantize.embedding.weight
    tokens = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    expected = torch.zeros_like(codebook).index_add_(0, idx, codebook[idx] - tokens) * 2 / z.numel()
    torch.testing.assert_close(stage.ae["hq"].quantize.embedding.weight.grad, expected, rtol=1e-4, atol=1e-9)


def test_discriminator_sees_the_updated_generator(batch: dict[str, torch.Tensor]) -> None:
    stage = BranchStage(tiny_config("codebook", loss={"disc_start": 0}), TINY.vqgan, CPU)
    before = seeded_autoencoders(stage)
    disc_before = {b: copy.deepcopy(stage.disc[b]) for b in ("hq", "lq")}
    logs = stage.train_step(batch, 0)
    for b in ("hq", "lq"):
        x, ae, disc = batch[b], before[b], disc_before[b].train()
        # generator (vqperceptual.py:142-168): nll + d_weight * g + qloss, with
        # d_weight = 0.8 * ||grad nll|| / (||grad g|| + 1e-4) at the decoder's last conv (:105-116)
        z = ae.encode(x)
        z_q, _ = nearest(z.detach(), ae.quantize.embedding.weight)
        rec = ae.decode(z + (z_q - z).detach())
        nll = (x - rec).abs().mean()
        g = -disc(rec).mean()
        last = ae.decoder.conv_out.weight
        g_nll = torch.autograd.grad(nll, last, retain_graph=True)[0]
        g_g = torch.autograd.grad(g, last, retain_graph=True)[0]
        d_weight = (g_nll.norm() / (g_g.norm() + 1e-4)).clamp(0, 1e4) * 0.8
        expected_g = nll + d_weight * g + vq_loss(z, z_q)
        assert logs[f"{b}_loss"] == pytest.approx(expected_g.item(), rel=RTOL)
        # discriminator (vqperceptual.py:230-237, hinge :24-28): the batch's second forward,
        # after opt_ae stepped (training_loop.py:684-736), so the updated generator's output
        with torch.no_grad():
            fake = stage.ae[b](x).recon
            real_logits, fake_logits = disc(x), disc(fake)  # separate calls: BatchNorm per batch
        expected_d = 0.5 * ((1 - real_logits).relu().mean() + (1 + fake_logits).relu().mean())
        assert logs[f"{b}_disc"] == pytest.approx(expected_d.item(), rel=RTOL)


def test_lq_codebook_stops_at_its_own_length(batch: dict[str, torch.Tensor]) -> None:
    stage = BranchStage(tiny_config("codebook", steps=3, lq_steps=1), TINY.vqgan, CPU)
    stage.train_step(batch, 0)
    lq = copy.deepcopy(stage.ae["lq"].state_dict())
    logs = stage.train_step(batch, 1)
    assert "lq_loss" not in logs and "hq_loss" in logs
    assert all(torch.equal(v, stage.ae["lq"].state_dict()[k]) for k, v in lq.items())


# -- stage 2 ------------------------------------------------------------------------------
def test_association_step_matches_the_original(batch: dict[str, torch.Tensor]) -> None:
    stage = BranchStage(tiny_config("association"), TINY.vqgan, CPU)
    before = seeded_autoencoders(stage)
    logs = stage.train_step(batch, 0)
    gt, lq = batch["hq"], batch["lq"]
    with torch.no_grad():
        h_pre, l_pre = before["hq"].encode(gt), before["lq"].encode(lq)  # association_stage.py:163-170
        h_post = stage.ae["hq"].encode(gt)  # after opt_ae_HQ's step (optimizer 0 of 4, :391)
    # optimizer 0: HQ objective + CLIP loss (vqperceptual_dual.py:174-176), both encoders' current
    # features; optimizer 2: the LQ one, after the forward is re-run with the updated HQ encoder
    expected_hq = autoencoder_objective(before["hq"], gt) + clip_loss(h_pre, l_pre)
    expected_lq = autoencoder_objective(before["lq"], lq) + clip_loss(h_post, l_pre)
    assert logs["hq_loss"] == pytest.approx(expected_hq.item(), rel=RTOL)
    assert logs["lq_loss"] == pytest.approx(expected_lq.item(), rel=RTOL)
    # association_stage.py:346-389: each branch's whole vqvae is in its optimizer; toggle_optimizer
    # (lightning 1.0.8 lightning.py:1260-1278) keeps the other branch's gradient out
    for b in ("hq", "lq"):
        expected = {n for n, _ in before[b].named_parameters() if not UNREAD.search(n)}
        assert grad_names(stage.ae[b]) == expected
        assert not grad_names(stage.disc[b])


# -- stage 3 ------------------------------------------------------------------------------
def original_stage3_optimizer(name: str) -> bool:
    """daefr.py:552-597: vqvae tensors except names with 'Fixed' (:557), 'decoder',
    'post_quant_conv' or 'quantize' (:561, kept out of normal_params; only normal_params reach
    Adam, :600-602), plus cross_attention, position_emb, feat_emb, ft_layers, idx_pred_layer."""
    if not name.startswith("vqvae."):
        return True
    if "Fixed" in name:
        return False
    return not ("decoder" in name or "post_quant_conv" in name or "quantize" in name)


def test_fusion_step_matches_the_original_and_trains_the_encoders(batch: dict[str, torch.Tensor]) -> None:
    stage = FusionStage(tiny_config("fusion"), TINY, CPU)
    shapes = ((k, tuple(v.shape)) for k, v in stage.model.state_dict().items())
    stage.init_from_official(seeded_state_dict(shapes), source="formula weights")
    model = copy.deepcopy(stage.model)
    logs = stage.train_step(batch, 0)
    vq, gt, lq = model.vqvae, batch["hq"], batch["lq"]
    with torch.no_grad():
        # encode_to_gt (daefr.py:418-422 -> vqvae_arch.py:779-785): Fixed encoder + codebook
        quant_gt, gt_idx = nearest(
            vq.Fixed_quant_conv(vq.Fixed_encoder(gt)), vq.Fixed_quantize.embedding.weight
        )
        # daefr.py:368-376: both associated encoders on the LQ face, MHCA(HQ features, LQ features)
        fused = model.cross_attention(vq.HQ_quant_conv(vq.HQ_encoder(lq)), vq.quant_conv(vq.encoder(lq)))
        logits = model.predict_logits(fused).reshape(-1, TINY.vqgan.codebook_size)  # daefr.py:390-401
        ce = -logits.log_softmax(1)[torch.arange(logits.shape[0]), gt_idx].mean()  # daefr.py:403
        l2 = ((fused - quant_gt) ** 2).mean()  # daefr.py:410
    assert logs["loss"] == pytest.approx((ce + 10 * l2).item(), rel=RTOL)  # daefr.py:433, :450
    names = [n for n, _ in stage.model.named_parameters()]
    expected = {n for n in names if original_stage3_optimizer(n) and not UNREAD.search(n)}
    assert grad_names(stage.model) == expected
    # the step moved the associated encoders and nothing of the ground truth, codebooks or decoder
    after = stage.model.state_dict()
    changed = {
        k.split(".")[1]
        for k, v in model.state_dict().items()
        if k.startswith("vqvae.") and not torch.equal(v, after[k])
    }
    assert changed == {"encoder", "HQ_encoder", "quant_conv", "HQ_quant_conv"}


def test_fresh_stage3_attention_has_the_original_init() -> None:
    # nn.MultiheadAttention (daefr.py:72) zeroes out_proj.bias and in_proj_bias (_reset_parameters)
    stage = FusionStage(tiny_config("fusion"), TINY, CPU)
    for layer in stage.model.ft_layers:
        assert not layer.self_attn.out_proj.bias.any() and not layer.self_attn.in_proj_bias.any()
        assert layer.self_attn.out_proj.weight.abs().sum() > 0


# -- precision ----------------------------------------------------------------------------
def test_amp_keeps_codes_and_ground_truth_in_fp32(batch: dict[str, torch.Tensor]) -> None:
    ae = seed_model_(VQAutoencoder(TINY.vqgan), CONFORMANCE_SALT)
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, TINY.vqgan.code_dim, 16, 16, generator=g) * 0.3
    codebook = ae.quantize.embedding.weight
    _, exact = nearest(feat, codebook)
    with autocast(CPU, "bf16"):
        _, idx = ae.quantize_features(feat)
        _, plain = ae.quantize.quantize(feat)  # the search itself under autocast: bf16 matmul
    assert torch.equal(idx.reshape(-1), exact)
    assert not torch.equal(plain.reshape(-1), exact)  # what the fp32 guard prevents
    net = FusionNet(seed_model_(FusionStage(tiny_config("fusion"), TINY, CPU).model))
    with torch.no_grad():
        ref = net(batch["lq"], batch["hq"])
        with autocast(CPU, "bf16"):
            out = net(batch["lq"], batch["hq"])
    assert torch.equal(out.gt_idx, ref.gt_idx) and out.gt_codes.dtype == torch.float32


# -- non-finite training ------------------------------------------------------------------
def train(faces_dir: Path, out: Path, *extra: str) -> int:
    return main(
        ["codebook", "--data", str(faces_dir), "--out", str(out), "--preset", "tiny", "--batch-size", "1",
         "--perceptual", "none", "--device", "cpu", "--num-workers", "0", "-q", *extra]
    )  # fmt: skip


def test_non_finite_loss_stops_without_touching_the_last_checkpoint(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    assert train(faces_dir, out, "--steps", "1") == 0
    good = hashlib.sha256((out / "last.pt").read_bytes()).hexdigest()
    init = tmp_path / "good.pt"
    init.write_bytes((out / "last.pt").read_bytes())
    real_step = BranchStage.train_step

    def diverging(self: BranchStage, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        logs = real_step(self, batch, step)
        return {**logs, "lq_l1": float("nan")} if step == 1 else logs

    monkeypatch.setattr(BranchStage, "train_step", diverging)
    capsys.readouterr()
    assert train(faces_dir, out, "--steps", "3", "--save-every", "2", "--init", str(init)) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("daefr-train: failed: codebook step 2: non-finite lq_l1")
    assert len(err.splitlines()) == 1 and "was not overwritten" in err, err
    assert hashlib.sha256((out / "last.pt").read_bytes()).hexdigest() == good


def test_non_finite_weights_are_never_saved(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_step = BranchStage.train_step

    def poisoning(self: BranchStage, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        logs = real_step(self, batch, step)  # a finite loss, then an update that overflowed
        with torch.no_grad():
            self.ae["lq"].decoder.conv_out.weight[0, 0, 0, 0] = float("inf")
        return logs

    monkeypatch.setattr(BranchStage, "train_step", poisoning)
    out = tmp_path / "run"
    assert train(faces_dir, out, "--steps", "1") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lq.decoder.conv_out.weight" in err, err
    assert "nothing was written" in err and not (out / "last.pt").exists()
