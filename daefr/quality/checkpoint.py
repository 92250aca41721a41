"""Conditioned (IQPFR) checkpoints: the plain DAEFR keys plus the ``iqp.*`` keys of
``QualityPrior`` (:data:`IQP_KEYS`), loaded strictly like every other DAEFR checkpoint.

The quality config is read from the file itself (K+ from the HQ+ codebook's shape, S_thr from
the ``iqp.threshold`` buffer, the embedding width from ``iqp.cond.0.weight``), so a conditioned
checkpoint needs no side file; the rest of the model comes from the preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import torch

from daefr.checkpoint import CheckpointError, load_weights_into, read_state_dict
from daefr.config import DAEFRConfig, QualityConfig
from daefr.model import DAEFR
from daefr.ops import Impl

IQP_PREFIX = "iqp."
# The conditioned part's tensors, in registration order (after all plain DAEFR keys).
IQP_KEYS: tuple[str, ...] = (
    "iqp.threshold",
    "iqp.quality_range",
    "iqp.hq_plus_quantize.embedding.weight",
    "iqp.cond.0.weight",
    "iqp.cond.0.bias",
    "iqp.cond.2.weight",
    "iqp.cond.2.bias",
    "iqp.plus_pred_layer.0.weight",
    "iqp.plus_pred_layer.0.bias",
    "iqp.plus_pred_layer.1.weight",
    "iqp.fuse.weight",
    "iqp.fuse.bias",
)


def is_conditioned(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith(IQP_PREFIX) for k in state)


def quality_config_of(state: Mapping[str, torch.Tensor], source: str = "state_dict") -> QualityConfig:
    """The QualityConfig a conditioned state_dict was made with; CheckpointError if it is not one."""
    needed = ("iqp.hq_plus_quantize.embedding.weight", "iqp.threshold", "iqp.cond.0.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(
            f"{source}: not a quality-conditioned (IQPFR) checkpoint (no {', '.join(missing)}); "
            "--quality needs weights from daefr-train iqp-fusion"
        )
    try:
        return QualityConfig(
            hq_plus_size=int(state["iqp.hq_plus_quantize.embedding.weight"].shape[0]),
            threshold=round(float(state["iqp.threshold"]), 6),  # stored as float32
            embed_dim=int(state["iqp.cond.0.weight"].shape[1]),
        )
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(
            f"{source}: its iqp.* tensors do not describe a quality config ({err})"
        ) from err


def load_conditioned_model(
    path: str | Path,
    config: DAEFRConfig | str = "official",
    impl: Impl = "torch",
    device: str | torch.device = "cpu",
) -> DAEFR:
    """A quality-conditioned DAEFR from ``path`` (strict: plain keys + :data:`IQP_KEYS`), eval mode."""
    return model_from_state(read_state_dict(path), config, impl, device, source=str(path), conditioned=True)


def model_from_state(
    state: Mapping[str, torch.Tensor],
    config: DAEFRConfig | str,
    impl: Impl = "torch",
    device: str | torch.device = "cpu",
    *,
    source: str,
    conditioned: bool | None = None,
) -> DAEFR:
    """A plain or conditioned DAEFR for ``state`` (``conditioned=None``: whichever it holds)."""
    if isinstance(config, str):
        config = DAEFRConfig.from_name(config)
    if conditioned is None:
        conditioned = is_conditioned(state)
    if conditioned:
        config = replace(config, quality=quality_config_of(state, source))
    model = DAEFR(config, impl=impl)
    load_weights_into(model, state, source=source)
    return model.eval().to(device)
