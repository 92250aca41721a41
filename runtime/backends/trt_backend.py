"""TensorRT backend: the engines ``daefr-export`` writes, run through the TensorRT Python API.

``import tensorrt`` happens only inside ``TrtRestorer`` so this module imports anywhere.
An engine only runs on the TensorRT version and GPU architecture it was built for; the
manifest beside it records both, and a mismatch (or an engine file that changed since the
manifest was written) is a ``BackendError`` that says to rebuild, never a silent wrong answer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from daefr.export.manifest import (
    FORMAT,
    MANIFEST_NAME,
    ManifestError,
    check_entry,
    read_manifest,
    verified_file,
)
from daefr.runtime.backends.base import BackendError, BackendUnavailable, RestorerBase, require_cuda
from daefr.runtime.backends.ort_backend import INPUT_NAME, OUTPUT_NAMES

log = logging.getLogger(__name__)

GRAPH = "daefr"
TRT_MISSING = "TensorRT is not installed (pip install 'daefr[trt]' on a machine with an NVIDIA GPU)"


def select_engine(
    engine_dir: Path,
    manifest: dict,
    *,
    trt_version: str,
    compute_capability: str,
    precision: str = "fp32",
    plugins: bool = False,
    graph: str = GRAPH,
) -> dict:
    """The manifest entry of the ``graph`` engine in ``precision`` ("fp32" | "fp16"; entries
    carry ``fp16: bool``) with or without ``plugins`` that can run here.

    Entries come from ``daefr.export.trt_build.EngineResult.manifest_entry``. An engine built
    for another TensorRT version or GPU architecture, or whose file no longer matches its
    sha256, is a ``BackendError`` that says to rebuild.
    """
    where = engine_dir / MANIFEST_NAME
    rebuild = f"rebuild the engines with daefr-export into {engine_dir}"
    if manifest.get("format") != FORMAT:
        raise BackendError(f"{where}: format {manifest.get('format')!r}, expected {FORMAT!r}; {rebuild}")
    wanted = f"{graph} {precision} engine (plugins={plugins})"
    fp16 = precision == "fp16"
    candidates = [
        e for e in manifest.get("engines", [])
        if e.get("graph") == graph and bool(e.get("fp16")) == fp16 and bool(e.get("plugins")) == plugins
    ]  # fmt: skip
    if not candidates:
        built = sorted({("fp16" if e.get("fp16") else "fp32") + (" + plugins" if e.get("plugins") else "")
                        for e in manifest.get("engines", []) if e.get("graph") == graph})  # fmt: skip
        if built:
            raise BackendError(
                f"{where}: lists no {wanted}, only {', '.join(built)}; pass the matching --precision/--plugins "
                f"or {rebuild}{' --precision fp16' if fp16 else ''}{' --plugins' if plugins else ''}"
            )
    if not candidates:
        why = manifest.get("engines_not_built")
        raise BackendError(
            f"{where}: lists no {wanted}" + (f" (export said: {why})" if why else "") + f"; {rebuild}"
        )
    runnable = [
        e for e in candidates if e.get("tensorrt") == trt_version and str(e.get("compute_capability")) == compute_capability
    ]  # fmt: skip
    if not runnable:
        e = candidates[0]
        raise BackendError(
            f"{where}: the {wanted} was built for TensorRT {e.get('tensorrt')} on compute capability "
            f"{e.get('compute_capability')}; this is TensorRT {trt_version} on {compute_capability}; {rebuild}"
        )
    entry = runnable[0]
    try:
        check_entry(where, "engines", manifest["engines"].index(entry), entry)
        verified_file(engine_dir, entry)
    except (ManifestError, KeyError) as err:
        raise BackendError(f"{err}; {rebuild}") from None
    return entry


class TrtRestorer(RestorerBase):
    """One deserialised engine, one execution context and one CUDA stream per instance: give
    each worker thread its own ``TrtRestorer``. Host batches go through a pinned staging
    buffer so the upload is asynchronous; outputs stay on the GPU.
    """

    name = "trt"

    def __init__(
        self,
        engine_dir: str | Path,
        device: str | torch.device = "cuda",
        precision: str = "fp32",
        plugins: bool = False,
    ) -> None:
        try:
            import tensorrt as trt
        except ImportError as err:
            raise BackendUnavailable(f"trt backend: {TRT_MISSING}") from err
        device = torch.device(device)
        require_cuda(self.name, device)
        self.engine_dir = Path(engine_dir)
        manifest_path = self.engine_dir / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BackendUnavailable(
                f"trt backend: {manifest_path}: no manifest (build engines with daefr-export)"
            )
        major, minor = torch.cuda.get_device_capability(device)
        try:
            manifest = read_manifest(self.engine_dir)
        except ManifestError as err:
            raise BackendError(str(err)) from None
        entry = select_engine(
            self.engine_dir,
            manifest,
            trt_version=trt.__version__,
            compute_capability=f"{major}.{minor}",
            precision=precision,
            plugins=plugins,
        )
        # No plugin registration here: an AOT plugin's PTX is inside the engine, which "does not
        # require any Python modules or definitions to be present at runtime" (NVIDIA/TensorRT
        # v11.1 samples/python/quickly_deployable_plugins/README.md); registering would only
        # import Triton.
        self.precision, self.plugins = precision, plugins
        self._trt = trt
        self._device = device
        self.stream = torch.cuda.Stream(device)
        logger = trt.Logger(trt.Logger.WARNING)
        # No TensorRT call takes a device (IRuntime::deserializeCudaEngine, createExecutionContext,
        # enqueueV3 in NVIDIA/TensorRT v11.1 include/NvInferRuntime.h), so TensorRT can only use
        # the CUDA device current in this thread: every TensorRT call runs under `device`, so that
        # cuda:1 puts the engine, its context and its launches on GPU 1, not on GPU 0.
        with torch.cuda.device(device):
            self.runtime = trt.Runtime(logger)
            self.engine = self.runtime.deserialize_cuda_engine((self.engine_dir / entry["file"]).read_bytes())
            if self.engine is None:
                raise BackendError(
                    f"{self.engine_dir / entry['file']}: TensorRT could not deserialise it; rebuild"
                )
            self.context = self.engine.create_execution_context()
        self._check_io()
        self._staging: torch.Tensor | None = None
        # AOT plugins leak CUDA modules on every input-shape change in TensorRT 11.1 and 11.2.1
        # (NVIDIA/TensorRT#4849, open): plugin engines always run at the profile's maximum
        # batch, padded, so the shape never changes within a context.
        self._fixed_batch = plugins

    def _check_io(self) -> None:
        trt = self._trt
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        if sorted(names) != sorted((INPUT_NAME, *OUTPUT_NAMES)):
            raise BackendError(
                f"{self.engine_dir}: engine tensors {names}, expected {[INPUT_NAME, *OUTPUT_NAMES]}"
            )
        to_torch = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                    trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64}  # fmt: skip
        self._dtypes = {n: to_torch[self.engine.get_tensor_dtype(n)] for n in names}
        _, _, max_shape = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self._max_batch, self._resolution = int(max_shape[0]), int(max_shape[2])

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtypes[INPUT_NAME]

    @property
    def resolution(self) -> int:
        return self._resolution

    def restore(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """batch (B, 3, R, R) in [-1, 1] -> (restored (B, 3, R, R) float32, code_idx (B, N) int64) on the GPU.
        Batches above the engine profile's maximum run in chunks; plugin engines pad every chunk
        to that maximum (one input shape per context, see ``__init__``)."""
        self.check_batch(batch)
        parts = [self._run_chunk(chunk) for chunk in batch.split(self._max_batch)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _run_chunk(self, chunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = chunk.shape[0]
        if not self._fixed_batch or b == self._max_batch:
            return self._run(chunk)
        padding = chunk.new_zeros((self._max_batch - b, *chunk.shape[1:]))
        restored, codes = self._run(torch.cat([chunk, padding]))
        return restored[:b], codes[:b]

    def _upload(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if x.device.type == "cuda":
            return x.to(self._device).contiguous()
        n = x.numel()
        if self._staging is None or self._staging.numel() < n:
            self._staging = torch.empty(n, dtype=self.dtype, pin_memory=True)
        staged = self._staging[:n].view(x.shape)
        staged.copy_(x)
        return staged.to(self._device, non_blocking=True)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        self.stream.wait_stream(torch.cuda.current_stream(self._device))  # x may come from that stream
        with torch.cuda.device(self._device), torch.cuda.stream(self.stream):
            x_dev = self._upload(x)
            if not self.context.set_input_shape(INPUT_NAME, tuple(x_dev.shape)):
                raise BackendError(
                    f"{self.engine_dir}: the engine refuses input shape {tuple(x_dev.shape)} for {INPUT_NAME} "
                    f"(profile max batch {self._max_batch}, resolution {self._resolution}); rebuild with that profile"
                )
            r, n_tokens = self._resolution, self.context.get_tensor_shape("code_idx")[1]
            out = {
                "restored": torch.empty((b, 3, r, r), dtype=self._dtypes["restored"], device=self._device),
                "code_idx": torch.empty((b, n_tokens), dtype=self._dtypes["code_idx"], device=self._device),
            }
            self.context.set_tensor_address(INPUT_NAME, x_dev.data_ptr())
            for name, t in out.items():
                self.context.set_tensor_address(name, t.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError(f"{self.engine_dir}: TensorRT execution failed for batch {b}")
        self.stream.synchronize()
        return out["restored"].float(), out["code_idx"].long()

    def close(self) -> None:
        self.context = self.engine = self.runtime = None
        self._staging = None
