"""Every tolerance the kernel tests use, in one place, each with the measurement behind it.

Discrete outputs are checked exactly where the answer is unambiguous (fp32, well-separated
codes or logits) and by a near-tie rule elsewhere; float outputs by flash-attention's rule:
the kernel's error against an fp64 reference is at most ERROR_RATIO times the error of plain
PyTorch in the same dtype, plus a small floor where both errors are a few ulps.
"""

from __future__ import annotations

import torch

# -- float outputs (attention output, code-head logits) -------------------------------------
ERROR_RATIO = 2.0
# fp32: both errors are a few ulps (measured 5e-8 .. 5e-7 for unit-variance attention inputs,
# 1e-6 .. 3e-6 for logits at C = 512), where a 2x ratio is a coin toss; the floor is ~10 ulps
# of the output scale. Half types: no floor, the rule alone (plain fp16 attention: ~1e-3).
ATTENTION_ERROR_FLOOR: dict[torch.dtype, float] = {
    torch.float32: 1e-6,
    torch.float16: 0.0,
    torch.bfloat16: 0.0,
}
LOGITS_ERROR_FLOOR: dict[torch.dtype, float] = {
    torch.float32: 1e-5,
    torch.float16: 0.0,
    torch.bfloat16: 0.0,
}

# -- nearest code ---------------------------------------------------------------------------
# dist[idx] <= dist.min() + eps with dist in fp64 from the (rounded) inputs and
# eps = NEAREST_CODE_DIST_RTOL * (|z|^2 + max |c|^2), the size of the terms that cancel.
# Half inputs are exact in fp32, so the kernel's only error is fp32 accumulation over D
# (<= D * 6e-8 relative, 1.5e-5 at D = 256); a wrong code is off by O(1) relative.
NEAREST_CODE_DIST_RTOL: dict[torch.dtype, float] = {
    torch.float32: 1e-5,
    torch.float16: 1e-4,
    torch.bfloat16: 1e-4,
}

# -- code head ------------------------------------------------------------------------------
# logit_ref[idx] >= logit_ref.max() - eps with logit_ref in fp64 from the rounded inputs.
# The kernel rounds the LayerNorm output to the input dtype (as PyTorch does): measured max
# logit error 2.7e-3 in fp16 at C = 512 with O(1) logits; bf16 has 8x coarser rounding.
CODE_HEAD_LOGIT_EPS: dict[torch.dtype, float] = {
    torch.float32: 1e-4,
    torch.float16: 1e-2,
    torch.bfloat16: 8e-2,
}
# fp32 indices must equal the fp64 argmax on every row whose top-2 logit gap exceeds this
# (fp32 logit error measured <= 3e-6 at C = 512).
CODE_HEAD_FP32_MARGIN = 1e-4

# -- whole model (tiny preset, fp32): impl="triton" vs impl="torch" --------------------------
# Code indices must be equal; restored images differ by summation order only (measured
# 7e-6 with |restored| <= 3.4).
MODEL_RESTORED_ATOL = 1e-4
