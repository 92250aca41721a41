"""ONNX Runtime backend for the end-to-end ``daefr`` graph (input ``lq_image``; outputs
``restored``, ``code_idx``), on the CPU or through the CUDA / TensorRT execution providers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from daefr.runtime.backends.base import BackendError, BackendUnavailable, RestorerBase, require_cuda

log = logging.getLogger(__name__)

INPUT_NAME = "lq_image"
OUTPUT_NAMES = ("restored", "code_idx")
ORT_TO_TORCH = {
    "tensor(float)": torch.float32,
    "tensor(float16)": torch.float16,
    "tensor(int64)": torch.int64,
    "tensor(int32)": torch.int32,
}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def default_providers(device: torch.device) -> tuple[str, ...]:
    """CPU on the CPU; the CUDA provider on a GPU (TensorRT only when asked for by name)."""
    return ("CUDAExecutionProvider",) if device.type == "cuda" else ("CPUExecutionProvider",)


class OrtRestorer(RestorerBase):
    """An ``onnxruntime.InferenceSession`` over ``onnx_path``.

    On the CPU, numpy in and out. On a GPU, IO binding: the input is bound from the torch
    tensor's device memory and the outputs are written straight into torch tensors, so no
    host round trip happens inside ``restore``. ``providers`` are tried in order; the session
    must actually run on the first one (ORT's own silent fallback to the CPU is an error here).
    """

    name = "ort"

    def __init__(
        self,
        onnx_path: str | Path,
        device: str | torch.device = "cpu",
        providers: Sequence[str] | None = None,
        threads: int = 0,
        precision: str = "fp32",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendUnavailable(f"ort backend: onnxruntime is not installed ({err})") from err
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise BackendUnavailable(
                f"ort backend: {self.onnx_path}: no such ONNX file (export one with daefr-export)"
            )
        _verify_onnx(self.onnx_path)
        check_onnx_precision(self.name, self.onnx_path, precision)
        self.precision = precision
        device = torch.device(device)
        providers = tuple(providers or default_providers(device))
        if any(p in GPU_PROVIDERS for p in providers):
            # onnxruntime-gpu lists its GPU providers even where no GPU exists: ask torch.
            require_cuda(self.name, device)
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendUnavailable(
                f"ort backend: provider(s) {missing} not in this onnxruntime build "
                f"(available: {ort.get_available_providers()})"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        provider_options = [{"device_id": device.index or 0} if p in GPU_PROVIDERS else {} for p in providers]
        try:
            self.session = ort.InferenceSession(
                str(self.onnx_path),
                sess_options=options,
                providers=list(providers),
                provider_options=provider_options,
            )
        except Exception as err:  # noqa: BLE001 - ORT's pybind errors (InvalidProtobuf, Fail...) are plain Exceptions
            raise BackendError(
                f"{self.onnx_path}: ONNX Runtime cannot load it ({type(err).__name__}: "
                f"{' '.join(str(err).split())[:200]}); export it again with daefr-export"
            ) from None
        if self.session.get_providers()[0] != providers[0]:
            raise BackendUnavailable(
                f"ort backend: {providers[0]} failed to initialise (session runs on {self.session.get_providers()})"
            )
        self._device = device
        self._check_graph()

    def _check_graph(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or any(n not in outputs for n in OUTPUT_NAMES):
            raise BackendError(
                f"{self.onnx_path}: not the end-to-end daefr graph; expected input {INPUT_NAME!r} and outputs "
                f"{list(OUTPUT_NAMES)}, found inputs {list(inputs)} and outputs {list(outputs)}"
            )
        shape = inputs[INPUT_NAME].shape  # [B (symbolic), 3, R, R]
        if len(shape) != 4 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise BackendError(
                f"{self.onnx_path}: {INPUT_NAME} must be (B, 3, R, R) with a static R, got {shape}"
            )
        self._resolution = shape[2]
        self._in_dtype = ORT_TO_TORCH[inputs[INPUT_NAME].type]
        self._out_dtypes = {n: ORT_TO_TORCH[outputs[n].type] for n in OUTPUT_NAMES}
        self._tokens = outputs["code_idx"].shape[1]

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._in_dtype

    @property
    def resolution(self) -> int:
        return self._resolution

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def restore(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """batch (B, 3, R, R) in [-1, 1] -> (restored (B, 3, R, R) float32, code_idx (B, N) int64)."""
        self.check_batch(batch)
        if self._device.type == "cuda":
            return self._restore_bound(batch)
        x = batch.detach().to("cpu", self._in_dtype).contiguous().numpy()
        restored, code_idx = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        return torch.from_numpy(restored).float(), torch.from_numpy(code_idx.astype(np.int64, copy=False))

    def _restore_bound(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch.detach().to(self._device, self._in_dtype).contiguous()
        b, r = x.shape[0], self._resolution
        restored = torch.empty((b, 3, r, r), dtype=self._out_dtypes["restored"], device=self._device)
        code_idx = torch.empty((b, self._tokens), dtype=self._out_dtypes["code_idx"], device=self._device)
        binding = self.session.io_binding()
        idx = self._device.index or 0
        binding.bind_input(INPUT_NAME, "cuda", idx, _np_dtype(x.dtype), tuple(x.shape), x.data_ptr())
        for name, t in (("restored", restored), ("code_idx", code_idx)):
            binding.bind_output(name, "cuda", idx, _np_dtype(t.dtype), tuple(t.shape), t.data_ptr())
        # ORT runs on its own stream: make sure the input copy above has landed first.
        torch.cuda.current_stream(self._device).synchronize()
        self.session.run_with_iobinding(binding)
        return restored.float(), code_idx.long()

    def close(self) -> None:
        self.session = None


def _verify_onnx(path: Path) -> None:
    """An ONNX file beside a daefr-export manifest must match the sha256 recorded there."""
    from daefr.export.manifest import ManifestError, verify_against_manifest

    try:
        verify_against_manifest(path)
    except ManifestError as err:
        raise BackendError(str(err)) from None


def onnx_precision(path: Path) -> str:
    """"fp16" if the ONNX graph holds float16 weights (daefr-export's FP16 variant, float32
    I/O), else "fp32". Reads the graph without its external weight data."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    half = any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    return "fp16" if half else "fp32"


def check_onnx_precision(backend: str, path: Path, precision: str) -> None:
    """PlanError unless the graph at ``path`` computes in ``precision`` (fp16 graphs for
    fp16; fp32 graphs for fp32 and for an inference precision such as OpenVINO's bf16)."""
    from daefr.runtime.plan import PlanError

    want = "fp16" if precision == "fp16" else "fp32"
    try:
        found = onnx_precision(path)
    except Exception as err:  # noqa: BLE001 (onnx raises DecodeError and friends for non-ONNX files)
        raise BackendError(f"{path}: not a readable ONNX file ({type(err).__name__}: {err})") from None
    if found != want:
        raise PlanError(
            f"{backend} backend: {path} is an {found} graph but --precision {precision} needs an {want} one; "
            f"export it with daefr-export{' --precision fp16' if want == 'fp16' else ''} or drop --onnx"
        )


def _np_dtype(dtype: torch.dtype) -> type:
    return {
        torch.float32: np.float32,
        torch.float16: np.float16,
        torch.int64: np.int64,
        torch.int32: np.int32,
    }[dtype]
