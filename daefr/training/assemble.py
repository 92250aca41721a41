"""Stage outputs -> one ``DAEFR`` state_dict in the official key layout (877 tensors with
``training_modules``), as the original ``init_from_ckpt_two`` of the final stage builds it.

Sources, each a ``VQAutoencoder`` state_dict (``encoder.*``, ``quant_conv.*``,
``quantize.*``, ``post_quant_conv.*``, ``decoder.*``):

- ``fixed_hq``: the stage-1 (codebook) HQ autoencoder, never trained after stage 1. Its
  encoder, quant_conv and codebook give the ground-truth codes of stage 3 (``Fixed_*``); its
  codebook is the one inference looks codes up in (``Fixed_quantize``), so its decoder and
  post_quant_conv are the ones that decode them.
- ``hq``: the stage-2 (association) HQ branch: the associated HQ encoder ``E_H^A``.
- ``lq``: the stage-2 LQ branch: the associated LQ encoder ``E_L^A`` (``vqvae.encoder``).

The associated branches' decoders are dropped: the official model has one decoder, the
stage-1 HQ one, frozen with its codebook in stage 3 (paper Sec. 3.3). Everything else
(``position_emb``, ``cross_attention``, ``feat_emb``, ``ft_layers``, ``idx_pred_layer``) is
trained in stage 3 and copied under its own name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch

from daefr.checkpoint import load_weights_into
from daefr.config import DAEFRConfig
from daefr.model import DAEFR

# (official prefix, source, source prefix); read top to bottom, the whole mapping.
OFFICIAL_FROM_BRANCHES: tuple[tuple[str, str, str], ...] = (
    ("vqvae.Fixed_encoder.", "fixed_hq", "encoder."),
    ("vqvae.Fixed_quant_conv.", "fixed_hq", "quant_conv."),
    ("vqvae.Fixed_quantize.", "fixed_hq", "quantize."),
    ("vqvae.post_quant_conv.", "fixed_hq", "post_quant_conv."),
    ("vqvae.decoder.", "fixed_hq", "decoder."),
    ("vqvae.HQ_encoder.", "hq", "encoder."),
    ("vqvae.HQ_quant_conv.", "hq", "quant_conv."),
    ("vqvae.HQ_quantize.", "hq", "quantize."),
    ("vqvae.encoder.", "lq", "encoder."),
    ("vqvae.quant_conv.", "lq", "quant_conv."),
    ("vqvae.LQ_quantize.", "lq", "quantize."),
)
# Source tensors the official model has no place for.
DROPPED_FROM_BRANCHES: tuple[tuple[str, str], ...] = (
    ("hq", "post_quant_conv."),
    ("hq", "decoder."),
    ("lq", "post_quant_conv."),
    ("lq", "decoder."),
)
FUSION_PREFIXES: tuple[str, ...] = (
    "position_emb",
    "cross_attention.",
    "feat_emb.",
    "ft_layers.",
    "idx_pred_layer.",
)


class AssemblyError(ValueError):
    """Stage outputs that do not fit the official layout; lists the offending keys."""


def assemble_official_state_dict(
    fixed_hq: Mapping[str, torch.Tensor],
    hq: Mapping[str, torch.Tensor],
    lq: Mapping[str, torch.Tensor],
    fusion: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """-> {official key: tensor}. ``fusion`` holds the stage-3 tensors under their official
    names. Every source key must be mapped or dropped by the tables above."""
    sources = {"fixed_hq": fixed_hq, "hq": hq, "lq": lq}
    out: dict[str, torch.Tensor] = {}
    used: set[tuple[str, str]] = set()
    for official, source, prefix in OFFICIAL_FROM_BRANCHES:
        for key, value in sources[source].items():
            if key.startswith(prefix):
                out[official + key[len(prefix) :]] = value
                used.add((source, key))
    for source, prefix in DROPPED_FROM_BRANCHES:
        used.update((source, k) for k in sources[source] if k.startswith(prefix))
    unknown = [f"{s}:{k}" for s, state in sources.items() for k in state if (s, k) not in used]
    not_fusion = [k for k in fusion if not k.startswith(FUSION_PREFIXES)]
    if unknown or not_fusion:
        raise AssemblyError(f"keys with no place in the official layout: {(unknown + not_fusion)[:8]}")
    out.update(fusion)
    return out


def fusion_state(model: DAEFR) -> dict[str, torch.Tensor]:
    """The stage-3 tensors of ``model`` (official names)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(FUSION_PREFIXES)}


def daefr_from_branches(
    config: DAEFRConfig,
    fixed_hq: Mapping[str, torch.Tensor],
    hq: Mapping[str, torch.Tensor],
    lq: Mapping[str, torch.Tensor],
    fusion: Mapping[str, torch.Tensor] | None = None,
) -> DAEFR:
    """A ``DAEFR`` with ``training_modules`` whose weights come from the stage outputs, loaded
    strictly; ``fusion=None`` keeps the fresh initialisation of the stage-3 modules."""
    model = DAEFR(replace(config, training_modules=True))
    state = assemble_official_state_dict(fixed_hq, hq, lq, fusion_state(model) if fusion is None else fusion)
    load_weights_into(model, state, source="assembled stage outputs")
    return model
