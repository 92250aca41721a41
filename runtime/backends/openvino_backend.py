"""OpenVINO backend over the end-to-end ``daefr`` ONNX (input ``lq_image``; outputs
``restored``, ``code_idx``) on the CPU, in fp32 or bf16 *inference precision*.

The graph is always the fp32 export: OpenVINO's CPU plugin lowers each layer to bf16 itself
when asked (``INFERENCE_PRECISION_HINT``), keeping what it cannot run in bf16 in fp32. fp32 is
asked for explicitly, because on CPUs with AVX512-BF16 or AMX OpenVINO's default inference
precision is bf16: leaving the hint out would silently change the codes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from daefr.runtime.backends.base import BackendError, BackendUnavailable, RestorerBase
from daefr.runtime.backends.ort_backend import INPUT_NAME, OUTPUT_NAMES, check_onnx_precision

log = logging.getLogger(__name__)

OPENVINO_MISSING = "OpenVINO is not installed (pip install 'daefr[openvino]')"
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoRestorer(RestorerBase):
    """An OpenVINO compiled model of ``onnx_path`` on the CPU; numpy in and out.

    ``threads``: ``INFERENCE_NUM_THREADS`` (0 = OpenVINO's default, all cores). One infer
    request per instance: give each worker thread its own restorer.
    """

    name = "openvino"

    def __init__(self, onnx_path: str | Path, precision: str = "fp32", threads: int = 0) -> None:
        try:
            import openvino as ov
        except ImportError as err:
            raise BackendUnavailable(f"openvino backend: {OPENVINO_MISSING} ({err})") from err
        if precision not in INFERENCE_PRECISION:
            raise BackendUnavailable(
                f"openvino backend: inference precision {precision} is not offered; use fp32 or bf16"
            )
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise BackendUnavailable(
                f"openvino backend: {self.onnx_path}: no such ONNX file (export one with daefr-export)"
            )
        check_onnx_precision(self.name, self.onnx_path, precision)
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise BackendUnavailable(
                "openvino backend: this CPU has no bf16 support (neither AVX512-BF16 nor AMX); use fp32"
            )
        try:
            model = core.read_model(str(self.onnx_path))
        except RuntimeError as err:
            raise BackendError(f"{self.onnx_path}: OpenVINO could not read it ({str(err).splitlines()[0]})") from None
        config = {"INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.precision = precision
        self._check_graph(model)
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        log.info("openvino: %s on CPU, inference precision %s", self.onnx_path.name, got)

    def _check_graph(self, model) -> None:  # noqa: ANN001 (an openvino.Model)
        inputs = {n for p in model.inputs for n in p.get_names()}
        outputs = {n for p in model.outputs for n in p.get_names()}
        if INPUT_NAME not in inputs or any(n not in outputs for n in OUTPUT_NAMES):
            raise BackendError(
                f"{self.onnx_path}: not the end-to-end daefr graph; expected input {INPUT_NAME!r} and outputs "
                f"{list(OUTPUT_NAMES)}, found inputs {sorted(inputs)} and outputs {sorted(outputs)}"
            )
        shape = model.input(INPUT_NAME).get_partial_shape()  # [?, 3, R, R]
        if shape.rank.get_length() != 4 or not shape[2].is_static or shape[2] != shape[3]:
            raise BackendError(f"{self.onnx_path}: {INPUT_NAME} must be (B, 3, R, R) with a static R, got {shape}")
        self._resolution = shape[2].get_length()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32  # the graph's I/O; compute precision is self.precision

    @property
    def resolution(self) -> int:
        return self._resolution

    def restore(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """batch (B, 3, R, R) in [-1, 1] -> (restored (B, 3, R, R) float32, code_idx (B, N) int64)."""
        self.check_batch(batch)
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        self.request.infer({INPUT_NAME: x})
        # Copies: the request's output buffers are reused by the next call.
        restored = np.array(self.request.get_tensor("restored").data, dtype=np.float32)
        code_idx = np.array(self.request.get_tensor("code_idx").data).astype(np.int64, copy=False)
        return torch.from_numpy(restored), torch.from_numpy(code_idx)

    def close(self) -> None:
        self.request = self.compiled = None
