"""How decided the code head is: the margin between its best and second-best logit per token.

A code flips under reduced precision when rounding moves two logits past each other, so the
top1-top2 margin says how much of a precision's code agreement is the weights' doing: seeded
random weights have small margins (a pessimistic bound), trained weights larger ones.
"""

from __future__ import annotations

import torch

from daefr.model import DAEFR

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95)


@torch.inference_mode()
def code_logits(model: DAEFR, images: torch.Tensor) -> torch.Tensor:
    """images: (B, 3, R, R) float in [-1, 1] -> (B, N, K) float32 code logits, computed in
    float32 by the model as it is (eval mode, its own device), returned on the CPU."""
    device = next(model.parameters()).device
    images = images.to(device=device, dtype=torch.float32)
    fused = model.fuse(model.encode_hq(images), model.encode_lq(images))  # (B, D, r, r)
    return model.predict_logits(fused).float().cpu()


def code_margins(logits: torch.Tensor) -> torch.Tensor:
    """(B, N, K) -> (B, N) top1 - top2 logit, >= 0, in logit units."""
    top2 = logits.topk(2, dim=-1).values  # (B, N, 2)
    return top2[..., 0] - top2[..., 1]


def relative_margins(logits: torch.Tensor) -> torch.Tensor:
    """(B, N, K) -> (B, N) top1 - top2 over the token's logit spread (std over K): scale-free,
    so weights with larger logits do not look more decided. Reduced-precision rounding error
    grows with the logits' magnitude, so this is the margin that decides whether a code flips."""
    return code_margins(logits) / logits.std(dim=-1).clamp_min(1e-12)


def margin_summary(margins: torch.Tensor) -> dict[str, float]:
    """Quantiles (``p1`` ... ``p95``), mean and token count of a margin tensor of any shape."""
    flat = margins.flatten().double()
    summary = {f"p{round(q * 100)}": torch.quantile(flat, q).item() for q in QUANTILES}
    summary["mean"] = flat.mean().item()
    summary["tokens"] = float(flat.numel())
    return summary
