"""IQPFR stage 2 (paper Fig. 3b) as a plug-in: quality-conditioned code prediction.

The transformer gets a quality score S as its condition (FiLM, ``daefr.quality.prior``) and
predicts two code sequences, common and HQ+; their targets come from the clean face through
the frozen Z_h path and the two codebooks:

    loss = CE(logits, gt_idx) + CE(plus_logits, gt_plus_idx) + feat_weight * MSE(fused, gt_codes)
           + quality_weight * L_quality

**The condition S of a training face is the NR-IQA score of its target codes as the decoder
renders them**, ``score(decode(gt_idx, gt_plus))``, not of the clean image itself. The paper
scores the clean image x_h; with a faithful autoencoder the two agree, and S then means what
the paper wants: "the codes of targets that score S". When they do not agree, the image's score
teaches the wrong thing. Measured on the seeded random tiny DAEFR of the tests: over the 12
training faces (clean, blurred, noisy copies) the image scores and the decoded targets' scores
correlate at -0.44 (the blurred faces' codes decode to the highest-scoring images), so "high S"
asked for codes that decode *worse*. Conditioning on what the target codes actually decode to
keeps "high S asks for high-scoring codes" true for any decoder; the image score is logged as
``mean_score``, the condition as ``target_score``. ``iqp.quality_range`` is the range of these
conditions (restarted by this stage, not carried over from iqp-codebook's image scores).

**L_quality, in the discrete code space.** At the highest condition trained for
(S_hi = ``iqp.quality_range[1]``), codes are *sampled* from the two predicted categorical
distributions (M = 4 sequences per face), decoded (no gradient) and scored by the NR-IQA
scorer. BRISQUE is not differentiable, and the paper optimises over discrete codes rather than
continuous latents (to avoid over-optimising the scorer), so the gradient is the
score-function (REINFORCE) estimator with a leave-one-out baseline (the mean score of the
face's other M - 1 samples, Kool et al. 2019):

    L_quality = -mean_{m,b}[(score_mb - mean_{m' != m} score_m'b) * sum_n log p(code_mbn | S_hi)]

so the gradient reaches only the logits (the transformer, FiLM and heads), never the image, and
needs nothing of the scorer but its value. A differentiable scorer is used the same way.

Trained: MHCA, the transformer (``FUSION_PREFIXES``), ``iqp.cond`` and ``iqp.plus_pred_layer``;
the encoders, codebooks, decoder and ``iqp.fuse`` stay frozen (the plug-in does not retrain
DAEFR's encoders).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from daefr.training.assemble import FUSION_PREFIXES
from daefr.training.autoencoder import nearest_code_fp32
from daefr.training.branches import to_floats
from daefr.training.iqp_common import IQPStage

TRAINED_PREFIXES: tuple[str, ...] = (*FUSION_PREFIXES, "iqp.cond.", "iqp.plus_pred_layer.")
# Code sequences sampled per face for L_quality; the others' mean is each one's baseline.
QUALITY_SAMPLES = 4


def quality_policy_loss(
    logits: torch.Tensor,
    plus_logits: torch.Tensor,
    decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score: Callable[[torch.Tensor], torch.Tensor],
    samples: int = QUALITY_SAMPLES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE with a leave-one-out baseline (see the module docstring).

    logits (B, N, K), plus_logits (B, N, K+); ``decode(idx, plus_idx) -> images``;
    ``score(images) -> scores``. Returns (loss, the sampled codes' scores (samples, B)).
    """
    log_p = F.log_softmax(logits.float(), -1)  # (B, N, K)
    log_pp = F.log_softmax(plus_logits.float(), -1)  # (B, N, K+)
    b, n, k = log_p.shape
    with torch.no_grad():
        idx = torch.multinomial(log_p.exp().reshape(b * n, k), samples, replacement=True)  # (BN, M)
        plus_idx = torch.multinomial(log_pp.exp().reshape(b * n, -1), samples, replacement=True)
        idx = idx.reshape(b, n, samples).permute(2, 0, 1)  # (M, B, N)
        plus_idx = plus_idx.reshape(b, n, samples).permute(2, 0, 1)
        rewards = torch.stack([score(decode(idx[m], plus_idx[m])) for m in range(samples)])  # (M, B)
        baseline = (rewards.sum(0, keepdim=True) - rewards) / (samples - 1)  # the other samples' mean
        advantage = rewards - baseline  # (M, B)
    log_prob = log_p.unsqueeze(0).expand(samples, -1, -1, -1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
    log_prob = log_prob + log_pp.unsqueeze(0).expand(samples, -1, -1, -1).gather(
        -1, plus_idx.unsqueeze(-1)
    ).squeeze(-1)  # (M, B, N): log p of each sampled code
    loss = -(advantage * log_prob.sum(-1)).mean()  # log p of the whole sampled sequence
    return loss, rewards


class IQPFusionStage(IQPStage):
    init_stages = ("iqp-codebook", "iqp-fusion")
    name = "iqp_fusion"

    def trains(self, name: str) -> bool:
        return name.startswith(TRAINED_PREFIXES)

    def _heads(self, fused: torch.Tensor, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.model.transformer_features(fused, quality)  # (B, N, C)
        return self.model.idx_pred_layer(x), self.model.iqp.plus_pred_layer(x)

    def _decode(self, idx: torch.Tensor, plus_idx: torch.Tensor) -> torch.Tensor:
        return self.model.decode_features(self.model.lookup_dual(idx, plus_idx)).clamp(-1, 1)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        lq, hq = batch["lq"], batch["hq"]
        model, vq = self.model, self.model.vqvae
        with torch.no_grad():
            z = vq.Fixed_quant_conv(vq.Fixed_encoder(hq))
            gt_idx = nearest_code_fp32(vq.Fixed_quantize, z)  # (B, N)
            gt_plus = nearest_code_fp32(model.iqp.hq_plus_quantize, z)
            gt_codes = model.lookup(gt_idx)
        image_scores = self.score(hq)  # (B,) the clean face's own quality (logged)
        scores = self.score(self._decode(gt_idx, gt_plus))  # (B,) the condition (module docstring)
        self.note_range(scores)
        fused = model.fuse(model.encode_hq(lq), model.encode_lq(lq))  # (B, D, r, r)
        logits, plus_logits = self._heads(fused, scores)
        k, kp = logits.shape[-1], plus_logits.shape[-1]
        ce = F.cross_entropy(logits.reshape(-1, k).float(), gt_idx.reshape(-1))
        ce_plus = F.cross_entropy(plus_logits.reshape(-1, kp).float(), gt_plus.reshape(-1))
        feat = F.mse_loss(fused.float(), gt_codes.float())
        loss = ce + ce_plus + self.cfg.loss.feat_weight * feat
        logs = {
            "ce": ce,
            "ce_plus": ce_plus,
            "feat_mse": feat,
            "mean_score": image_scores.mean(),
            "target_score": scores.mean(),
        }
        if self.cfg.loss.quality_weight > 0:
            s_hi = model.iqp.quality_range[1].expand(lq.shape[0])  # (B,)
            hi_logits, hi_plus = self._heads(fused, s_hi)
            q_loss, rewards = quality_policy_loss(hi_logits, hi_plus, self._decode, self.score)
            loss = loss + self.cfg.loss.quality_weight * q_loss
            logs.update(
                quality_loss=q_loss, sampled_score=rewards.mean(), sampled_best=rewards.max(0).values.mean()
            )
        self.step_optimizer(loss)
        accuracy = (logits.argmax(-1) == gt_idx).float().mean()
        return to_floats({"loss": loss, **logs, "code_accuracy": accuracy})
