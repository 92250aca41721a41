"""The exported graphs: one small tensor-in/tensor-out module per graph boundary.

Each module wraps a ``DAEFR`` and calls its stage methods, so the exported network is the
reference network (no copy). Tensor names are API (listed in the manifest, checked by tests):

    lq_encoder   lq_image (B, 3, R, R) float32 in [-1, 1]   -> lq_feat (B, D, r, r)
    hq_encoder   lq_image                                   -> hq_feat (B, D, r, r)
    mhca         hq_feat, lq_feat                           -> fused_feat (B, D, r, r)
    transformer  fused_feat                                 -> code_idx (B, N) int32
    decoder      code_idx (B, N) int32                      -> restored (B, 3, R, R)
    daefr        lq_image                                   -> restored, code_idx

The batch axis is dynamic; R (512 for "official", 64 for "tiny"), r = R / 2**(levels-1),
N = r*r, D and K are fixed by the preset.

``code_idx`` is **int32** in every graph: ONNX ArgMax yields int64 and the graph casts it,
because TensorRT works in int32 (int64 tensors are narrowed or rejected by its ONNX parser)
and K <= 2**31 always. The eager model keeps int64; the comparison in ``parity`` casts the
eager indices and stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from daefr.model import DAEFR

CODE_IDX_DTYPE = torch.int32


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. ``shape`` uses ``"batch"`` for the dynamic axis."""

    name: str
    shape: tuple[int | str, ...]
    dtype: torch.dtype


class LQEncoder(nn.Module):
    """lq_image (B, 3, R, R) -> lq_feat (B, D, r, r)."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq_image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_lq(lq_image)


class HQEncoder(nn.Module):
    """lq_image (B, 3, R, R) -> hq_feat (B, D, r, r): the HQ branch encodes the degraded face."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, lq_image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_hq(lq_image)


class MHCA(nn.Module):
    """hq_feat, lq_feat (B, D, r, r) -> fused_feat (B, D, r, r)."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, hq_feat: torch.Tensor, lq_feat: torch.Tensor) -> torch.Tensor:
        return self.model.fuse(hq_feat, lq_feat)


class Transformer(nn.Module):
    """fused_feat (B, D, r, r) -> code_idx (B, N) int32 [, logits (B, N, K) float32].

    The code head is LayerNorm + Linear + ArgMax over logits, which is what
    ``DAEFR.predict_codes`` computes with ``impl="torch"`` (argmax of the same logits).
    """

    def __init__(self, model: DAEFR, with_logits: bool = False) -> None:
        super().__init__()
        self.model = model
        self.with_logits = with_logits

    def forward(self, fused_feat: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = self.model.predict_logits(fused_feat)  # (B, N, K)
        code_idx = logits.argmax(dim=-1).to(CODE_IDX_DTYPE)  # (B, N)
        return (code_idx, logits) if self.with_logits else code_idx


class Decoder(nn.Module):
    """code_idx (B, N) int32 -> restored (B, 3, R, R), the codebook gather inside."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, code_idx: torch.Tensor) -> torch.Tensor:
        codebook = self.model.vqvae.Fixed_quantize.embedding.weight  # (K, D)
        codes = F.embedding(code_idx, codebook)  # (B, N, D): a Gather in ONNX, int32 indices
        return self.model.decode_features(self.model.codes_to_features(codes))


class EndToEnd(nn.Module):
    """lq_image (B, 3, R, R) -> restored (B, 3, R, R), code_idx (B, N) int32."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model
        self.transformer = Transformer(model)
        self.decoder = Decoder(model)

    def forward(self, lq_image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.model.fuse(self.model.encode_hq(lq_image), self.model.encode_lq(lq_image))
        code_idx = self.transformer(fused)
        return self.decoder(code_idx), code_idx


@dataclass(frozen=True)
class GraphSpec:
    """What one exported graph is: its module and its named inputs and outputs."""

    name: str
    module: type[nn.Module]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    doc: str


GRAPHS: dict[str, GraphSpec] = {
    spec.name: spec
    for spec in (
        GraphSpec("lq_encoder", LQEncoder, ("lq_image",), ("lq_feat",), "LQ encoder + quant_conv"),
        GraphSpec("hq_encoder", HQEncoder, ("lq_image",), ("hq_feat",), "HQ encoder + HQ_quant_conv"),
        GraphSpec("mhca", MHCA, ("hq_feat", "lq_feat"), ("fused_feat",), "multi-head cross-attention"),
        GraphSpec("transformer", Transformer, ("fused_feat",), ("code_idx",), "code prediction"),
        GraphSpec("decoder", Decoder, ("code_idx",), ("restored",), "codebook gather + HQ decoder"),
        GraphSpec("daefr", EndToEnd, ("lq_image",), ("restored", "code_idx"), "end to end"),
    )
}


def tensor_specs(model: DAEFR) -> dict[str, TensorSpec]:
    """Shapes and dtypes of every named tensor for ``model``'s preset."""
    cfg = model.config
    r, big_r, d = cfg.vqgan.latent_size, cfg.vqgan.resolution, cfg.vqgan.code_dim
    feat = ("batch", d, r, r)
    return {
        "lq_image": TensorSpec("lq_image", ("batch", 3, big_r, big_r), torch.float32),
        "lq_feat": TensorSpec("lq_feat", feat, torch.float32),
        "hq_feat": TensorSpec("hq_feat", feat, torch.float32),
        "fused_feat": TensorSpec("fused_feat", feat, torch.float32),
        "code_idx": TensorSpec("code_idx", ("batch", cfg.num_tokens), CODE_IDX_DTYPE),
        "restored": TensorSpec("restored", ("batch", 3, big_r, big_r), torch.float32),
    }


def check_graph_name(name: str) -> GraphSpec:
    try:
        return GRAPHS[name]
    except KeyError:
        raise ValueError(f"unknown graph {name!r}; choose from {', '.join(GRAPHS)}") from None


def build_graph(model: DAEFR, name: str) -> nn.Module:
    """The eval-mode module of graph ``name`` over ``model`` (shares its weights)."""
    return check_graph_name(name).module(model).eval()


def example_inputs(model: DAEFR, name: str, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Synthetic inputs of graph ``name`` with the right shapes and dtypes, for tracing.

    Cheap on purpose (no forward pass); parity uses real stage outputs instead.
    """
    specs = tensor_specs(model)
    g = torch.Generator().manual_seed(seed)
    inputs = []
    for input_name in check_graph_name(name).inputs:
        shape = (batch, *specs[input_name].shape[1:])
        if input_name == "code_idx":
            k = model.config.vqgan.codebook_size
            inputs.append(torch.randint(0, k, shape, generator=g, dtype=CODE_IDX_DTYPE))
        elif input_name == "lq_image":
            inputs.append(torch.rand(shape, generator=g) * 2 - 1)
        else:
            inputs.append(torch.randn(shape, generator=g))
    return tuple(inputs)
