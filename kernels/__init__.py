"""Fused Triton kernels for DAEFR's hot paths (installed as ``daefr.kernels``).

Three ops, one file each (kernel, launcher, ``*_ref``), registered as torch custom ops under
``daefr::`` so ``torch.compile`` and ``torch.export`` trace models that call them:

- ``nearest_code(z, codebook)``: squared-L2 argmin over a codebook + gather (``quantize.py``)
- ``code_head(x, ln_weight, ln_bias, eps, proj_weight, codebook)``: LayerNorm + Linear + argmax
  + gather (``head.py``); ``code_head_with_logits`` also returns the logits
- ``fused_attention(q, k, v)``: softmax(q k^T / sqrt(Dh)) v with an online softmax
  (``attention.py``)

Importing this package needs neither Triton nor a GPU: the kernel modules are imported on
the first call, which raises ``RuntimeError`` if Triton is missing. Without a GPU the kernels
run on CPU tensors only under ``TRITON_INTERPRET=1``, set before the first call.
"""

from __future__ import annotations

import torch

__all__ = ["code_head", "code_head_with_logits", "fused_attention", "nearest_code"]

TRITON_MISSING = "Triton is not installed: pip install daefr[triton]"


def triton_missing(err: ImportError) -> RuntimeError:
    """The error for a kernel call without Triton; re-raises any other import failure."""
    if err.name is None or err.name.split(".")[0] != "triton":
        raise err
    return RuntimeError(TRITON_MISSING)


# The wrappers import their op module with plain import statements (not importlib) so that
# torch.compile can trace through them without a graph break.


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z: (M, D), codebook: (K, D) -> (idx (M,) int64, codes (M, D) in codebook dtype)."""
    try:
        from daefr.kernels.quantize import nearest_code as op
    except ImportError as err:
        raise triton_missing(err) from err
    return op(z, codebook)


def code_head(
    x: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    proj_weight: torch.Tensor,
    codebook: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x: (M, C); ln_*: (C,); proj_weight: (K, C); codebook: (K, D) -> (idx (M,), codes (M, D))."""
    idx, codes, _ = _head_op()(x, ln_weight, ln_bias, float(eps), proj_weight, codebook, False)
    return idx, codes


def code_head_with_logits(
    x: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    proj_weight: torch.Tensor,
    codebook: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As ``code_head``, also returning the logits (M, K) in x's dtype (training, parity)."""
    return _head_op()(x, ln_weight, ln_bias, float(eps), proj_weight, codebook, True)


def _head_op():  # noqa: ANN202 (a torch custom op)
    try:
        from daefr.kernels.head import code_head as op
    except ImportError as err:
        raise triton_missing(err) from err
    return op


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: (B, H, Nq, Dh); k, v: (B, H, Nk, Dh), any strides -> (B, H, Nq, Dh) contiguous."""
    try:
        from daefr.kernels.attention import fused_attention as op
    except ImportError as err:
        raise triton_missing(err) from err
    return op(q, k, v)
