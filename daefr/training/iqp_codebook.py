"""IQPFR stage 1 (paper Fig. 3a) as a plug-in: the HQ+ codebook.

The common codebook (DAEFR's stage-1 ``Fixed_quantize``), the HQ encoder that makes Z_h
(``Fixed_encoder`` + ``Fixed_quant_conv``) and the decoder stay frozen, so the plain model
inside is unchanged. Per batch, the clean faces are scored (NR-IQA); **only faces scoring
above S_thr** go through the HQ+ path, the others are not used at all (no forward, no
gradient), so the HQ+ codebook learns only from them:

    z = Z_h(x_h)                        (no grad)     c = common[nearest(common, z)]
    p = hqplus[nearest(hqplus, z)]      (grad to the chosen HQ+ entries)
    x_rec = decoder(fuse([c, p]))
    loss = L1(x_rec, x_h) + codebook_weight * ||sg(z) - p||^2

Trained: ``iqp.hq_plus_quantize`` and ``iqp.fuse`` (the decoder's input learns to use the HQ+
half). A step whose batch holds no face above S_thr changes nothing and logs ``loss`` 0 and
``hq_plus_images`` 0. Logged per step: ``hq_plus_images`` (faces that taught HQ+) and
``hq_plus_min_score`` (the lowest score among them; 1 when none), so the log shows that no
face at or below S_thr ever reached the HQ+ codebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from daefr.training.autoencoder import nearest_code_fp32
from daefr.training.branches import to_floats
from daefr.training.iqp_common import IQPStage
from daefr.training.loop import TrainingError

TRAINED_PREFIXES: tuple[str, ...] = ("iqp.hq_plus_quantize.", "iqp.fuse.")


class IQPCodebookStage(IQPStage):
    init_stages = ("fusion", "iqp-codebook")
    accepts_plain = True
    name = "iqp_codebook"

    hq_plus_total = 0  # faces that taught HQ+ in this process's run
    best_score = 0.0

    def trains(self, name: str) -> bool:
        return name.startswith(TRAINED_PREFIXES)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        hq = batch["hq"]
        scores = self.score(hq)  # (B,)
        self.note_range(scores)
        keep = scores > self.model.iqp.threshold  # (B,) the faces that may teach HQ+
        logs: dict[str, torch.Tensor] = {
            "mean_score": scores.mean(),
            "hq_plus_images": keep.sum(),
            "hq_plus_min_score": scores[keep].min() if keep.any() else torch.ones(()),
        }
        self.hq_plus_total += int(keep.sum())
        self.best_score = max(self.best_score, float(scores.max()))
        if step + 1 == self.cfg.steps and self.hq_plus_total == 0:
            raise TrainingError(
                f"iqp-codebook: no face seen in this run scored above S_thr {self.cfg.quality_threshold} "
                f"(best {self.best_score:.3f}), so the HQ+ codebook learned nothing; lower --quality-threshold"
            )
        if not keep.any():
            return to_floats({"loss": torch.zeros(()), **logs})
        model, vq = self.model, self.model.vqvae
        best = hq[keep]  # (B+, 3, R, R)
        with torch.no_grad():
            z = vq.Fixed_quant_conv(vq.Fixed_encoder(best))  # (B+, D, r, r)
            common = model.lookup(nearest_code_fp32(vq.Fixed_quantize, z))
        plus_idx = nearest_code_fp32(model.iqp.hq_plus_quantize, z)  # (B+, N)
        plus = model.codes_to_features(model.iqp.hq_plus_quantize.embedding(plus_idx))  # (B+, D, r, r)
        rec = model.decode_features(model.iqp.fuse_codes(common, plus))
        rec_loss = F.l1_loss(rec, best)
        codebook = F.mse_loss(plus, z)
        loss = rec_loss + self.cfg.loss.codebook_weight * codebook
        self.step_optimizer(loss)
        return to_floats({"loss": loss, "rec_l1": rec_loss, "codebook": codebook, **logs})
