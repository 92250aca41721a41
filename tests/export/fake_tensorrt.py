"""A stand-in for the parts of ``tensorrt`` that the engine build and the TRT backend call.

TensorRT cannot be installed here. This reproduces only behaviour read from TensorRT's own
source (NVIDIA/TensorRT v11.1 ``python/src/infer/pyCore.cpp`` and ``include/NvInfer*.h``):

- ``IExecutionContext.set_input_shape`` returns a bool (False for a shape outside the profile)
  instead of raising; so does ``execute_async_v3``;
- ``IBuilderConfig.create_timing_cache`` returns the C++ pointer as is, so None when
  TensorRT cannot make a cache (``netconfig_create_timing_cache``), and ``set_timing_cache``
  takes ``ITimingCache const&``: None is a TypeError from pybind11;
- no call takes a CUDA device: the stand-in records the device that is current (through the
  test's ``torch.cuda.device`` stand-in) when each call is made.
"""

from __future__ import annotations

import ctypes
import sys
import types
from contextlib import contextmanager

CURRENT_DEVICE: list[object] = [None]  # set by the test's torch.cuda.device stand-in
CALLS: list[tuple[str, object]] = []  # (call, device current at that call)


def _record(call: str) -> None:
    CALLS.append((call, CURRENT_DEVICE[0]))


class DataType:
    FLOAT, HALF, INT32, INT64 = "FLOAT", "HALF", "INT32", "INT64"


class Logger:
    WARNING = 2

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


class FakeEngine:
    def __init__(self, resolution: int, tokens: int, max_batch: int) -> None:
        self.resolution, self.tokens, self.max_batch = resolution, tokens, max_batch
        self.names = ["lq_image", "restored", "code_idx"]
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_dtype(self, name: str) -> str:
        return DataType.INT32 if name == "code_idx" else DataType.FLOAT

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        r = self.resolution
        return (1, 3, r, r), (1, 3, r, r), (self.max_batch, 3, r, r)

    def create_execution_context(self) -> FakeContext:
        _record("create_execution_context")
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.shape, self.addresses = engine, None, {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        _record("set_input_shape")
        r = self.engine.resolution
        ok = len(shape) == 4 and 1 <= shape[0] <= self.engine.max_batch and tuple(shape[1:]) == (3, r, r)
        if ok:
            self.shape = tuple(shape)
        return ok

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (self.shape[0], self.engine.tokens)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        """Writes zeros into both outputs (float32 restored, int32 code_idx), as an engine writes
        every output element: the backend's non-finite check must see defined values."""
        _record("execute_async_v3")
        b, r = self.shape[0], self.engine.resolution
        sizes = {"restored": b * 3 * r * r * 4, "code_idx": b * self.engine.tokens * 4}
        for name, nbytes in sizes.items():
            if self.addresses.get(name):  # host memory in these tests (no GPU)
                ctypes.memset(self.addresses[name], 0, nbytes)
        return True


class Runtime:
    ENGINE = FakeEngine(64, 256, 4)

    def __init__(self, logger: Logger) -> None:
        _record("Runtime")

    def deserialize_cuda_engine(self, blob: bytes) -> FakeEngine | None:
        _record("deserialize_cuda_engine")
        return self.ENGINE if blob.startswith(b"engine") else None


class TimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> bytes:
        return b"timing:" + self.blob


class BuilderConfig:
    """Timing-cache calls only. ``cache_ok(blob)`` decides what create_timing_cache returns."""

    def __init__(self, creates: bool = True, accepts: bool = True) -> None:
        self.creates, self.accepts, self.attached = creates, accepts, None

    def create_timing_cache(self, blob: bytes) -> TimingCache | None:
        return TimingCache(bytes(blob)) if self.creates and not bytes(blob).startswith(b"corrupt") else None

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(cache, TimingCache):
            raise TypeError("set_timing_cache(): incompatible function arguments")  # pybind11 on None
        if not self.accepts and cache.blob:
            return False
        self.attached = cache
        return True

    def get_timing_cache(self) -> TimingCache | None:
        return self.attached


# ---- the engine build (``export.trt_build.build_engine``) -------------------------------------
# Only what the build calls. The network's inputs are read from the ONNX file itself (its
# symbolic dims as -1, as TensorRT's parser reports a dynamic axis); profiles are recorded.

PROFILES: list[dict[str, tuple[tuple[int, ...], ...]]] = []  # one dict per added profile


class MemoryPoolType:
    WORKSPACE = 0


class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED = 0


class _Tensor:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, shape


class _Network:
    def __init__(self) -> None:
        self.inputs: list[_Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, i: int) -> _Tensor:
        return self.inputs[i]


class OnnxParser:
    def __init__(self, network: _Network, logger: Logger) -> None:
        self.network, self.num_errors = network, 0

    def parse_from_file(self, path: str) -> bool:
        import onnx

        graph = onnx.load(path, load_external_data=False).graph
        for value in graph.input:
            dims = value.type.tensor_type.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
            self.network.inputs.append(_Tensor(value.name, shape))
        return True


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        if not (
            len(lo) == len(opt) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, opt, hi, strict=True))
        ):
            raise ValueError(f"set_shape({name}): need min <= opt <= max per dim, got {lo} {opt} {hi}")
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class _BuildConfig(BuilderConfig):
    def set_memory_pool_limit(self, pool: int, size: int) -> None:
        self.workspace = size

    def add_optimization_profile(self, profile: _Profile) -> int:
        PROFILES.append(dict(profile.shapes))
        return len(PROFILES) - 1


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int) -> _Network:
        return _Network()

    def create_builder_config(self) -> _BuildConfig:
        return _BuildConfig()

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: _Network, config: _BuildConfig) -> bytes:
        _record("build_serialized_network")
        return b"engine:" + ",".join(t.name for t in network.inputs).encode()


@contextmanager
def installed(monkeypatch, version: str = "11.1.0.106") -> types.ModuleType:  # noqa: ANN001
    """Put the stand-in under ``tensorrt`` for the test's duration."""
    CALLS.clear()
    PROFILES.clear()
    trt = sys.modules[__name__]
    monkeypatch.setattr(trt, "__version__", version, raising=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    yield trt
