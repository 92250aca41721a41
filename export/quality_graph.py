"""The quality-conditioned transformer graph of an IQPFR model, exported to ONNX.

    transformer_quality   fused_feat (B, D, r, r) float32, quality (B,) float32 in [0, 1]
                          -> code_idx (B, N) int32, plus_idx (B, N) int32

The same steps as the other graphs (``onnx_export``): eval -> trace with a dynamic batch ->
full checker -> strict shape inference -> atomic file; parity on ONNX Runtime: the codes must
equal eager's for every S tried (the conditioning is a per-sample FiLM, so S may differ
within a batch). ``build_quality_engine`` makes its TensorRT engine, whose one profile gives
``quality`` (B,) the same min/opt/max batch as ``fused_feat``. Outside [0, 1] the graph computes something but the eager model refuses it:
the range is checked by the caller, as for ``lq_image``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from daefr.atomic import atomic_path
from daefr.export.graphs import CODE_IDX_DTYPE, GraphSpec
from daefr.export.manifest import sha256_file
from daefr.export.onnx_export import DEFAULT_OPSET, EXPORT_BATCH, ExportError, _trace, check_opset
from daefr.export.parity import OnnxRunner
from daefr.model import DAEFR


class ConditionedTransformer(nn.Module):
    """fused_feat (B, D, r, r), quality (B,) -> code_idx, plus_idx (B, N) int32 (argmax heads)."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        if model.config.quality is None:
            raise ValueError("the transformer_quality graph needs an IQPFR-conditioned model")
        self.model = model

    def forward(self, fused_feat: torch.Tensor, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.model.transformer_features(fused_feat, quality)  # (B, N, C)
        code_idx = self.model.idx_pred_layer(x).argmax(-1).to(CODE_IDX_DTYPE)  # (B, N)
        plus_idx = self.model.iqp.plus_pred_layer(x).argmax(-1).to(CODE_IDX_DTYPE)
        return code_idx, plus_idx


SPEC = GraphSpec(
    "transformer_quality",
    ConditionedTransformer,
    ("fused_feat", "quality"),
    ("code_idx", "plus_idx"),
    "quality-conditioned code prediction (IQPFR)",
)


def example_inputs(
    model: DAEFR, batch: int = EXPORT_BATCH, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    r = cfg.vqgan.latent_size
    fused = torch.randn(batch, cfg.vqgan.code_dim, r, r, generator=g)
    return fused, torch.rand(batch, generator=g)


def export_quality_transformer(model: DAEFR, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write the ``transformer_quality`` graph of a float32 CPU model to ``path``."""
    check_opset(opset, dynamo=False)
    path = Path(path)
    module = ConditionedTransformer(model).eval()
    with atomic_path(path) as tmp:
        try:
            _trace(module, SPEC, example_inputs(model), tmp, opset, dynamo=False)
            onnx_model = onnx.load(str(tmp))
            onnx.checker.check_model(onnx_model, full_check=True)
            got = ([i.name for i in onnx_model.graph.input], [o.name for o in onnx_model.graph.output])
            if got != (list(SPEC.inputs), list(SPEC.outputs)):
                raise ExportError(
                    f"graph transformer_quality: names {got}, expected {SPEC.inputs}, {SPEC.outputs}"
                )
            onnx_model = onnx.shape_inference.infer_shapes(onnx_model, strict_mode=True)
            onnx.helper.set_model_props(onnx_model, {"daefr.graph": SPEC.name, "daefr.precision": "fp32"})
            onnx.save(onnx_model, str(tmp))
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, RuntimeError) as err:
            raise ExportError(f"export of graph transformer_quality to {path} failed: {err}") from err
    return path


def quality_parity(
    model: DAEFR, path: str | Path, fused_feat: torch.Tensor, qualities: list[float]
) -> dict[float, float]:
    """Fraction of (common + HQ+) codes where ONNX Runtime equals eager, per S (1.0 = all)."""
    runner = OnnxRunner(Path(path))
    module = ConditionedTransformer(model).eval()
    agreement: dict[float, float] = {}
    for s in qualities:
        quality = torch.full((fused_feat.shape[0],), float(s))
        with torch.no_grad():
            want = [t.numpy() for t in module(fused_feat, quality)]
        got = runner.infer({"fused_feat": fused_feat.numpy(), "quality": quality.numpy()})
        same = [np.asarray(got[n]) == w for n, w in zip(SPEC.outputs, want, strict=True)]
        agreement[float(s)] = float(np.concatenate([m.ravel() for m in same]).mean())
    return agreement


def build_quality_engine(
    model: DAEFR,
    out_dir: str | Path,
    opt_batch: int,
    max_batch: int,
    timing_cache: Path | None = None,
):  # -> trt_build.EngineResult (TensorRT imported lazily, inside build_engine)
    """Export ``transformer_quality`` into ``out_dir`` and build (or reuse) its fp32 engine:
    batch profile 1 / ``opt_batch`` / ``max_batch`` on both inputs."""
    from daefr.export.trt_build import EngineSpec, build_engine

    path = export_quality_transformer(model, Path(out_dir) / f"{SPEC.name}.onnx")
    spec = EngineSpec(SPEC.name, sha256_file(path), 1, opt_batch, max_batch, fp16=False, plugins=False)
    return build_engine(path, spec, Path(out_dir), timing_cache)
