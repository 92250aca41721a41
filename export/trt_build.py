"""TensorRT engines from the exported ONNX graphs; TensorRT is imported lazily.

Untested on this project's machines: neither the CI machine nor the lent GPU machine has
TensorRT (its wheel downloads from an unreachable index). Every API used here was checked
against the TensorRT 10.x/11 Python documentation:

- networks are **strongly typed** (TensorRT 11: always; 10.x: ``STRONGLY_TYPED`` flag), so
  precision comes from the ONNX and ``precision.POLICY`` is the only place it is decided; the
  weak-typing flags (``BuilderFlag.FP16``, layer precisions) are gone in 11 and not needed on
  10.x either, since the FP16 ONNX already carries its FP32 islands;
- one optimisation profile for the dynamic batch axis (min 1, opt and max from the caller);
- a timing cache file, loaded and saved around each build (specific to GPU, CUDA and TRT
  version, which the cache file name includes);
- build progress through ``IProgressMonitor`` where the bindings have it;
- an engine cache keyed by the ONNX sha256, TensorRT version, GPU name and compute
  capability and every build flag (plugin engines: also the kernel sources and the Triton
  version), so a stale engine is never loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from daefr.atomic import atomic_write_bytes
from daefr.export.manifest import sha256_file

log = logging.getLogger(__name__)

TRT_MISSING = (
    "TensorRT is not installed (pip install 'daefr[trt]' on an NVIDIA machine; "
    "it cannot be installed on this project's CI or lent GPU machines)"
)
NO_GPU = "no NVIDIA GPU is visible (torch.cuda.is_available() is False)"
WORKSPACE_BYTES = 4 << 30


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build; the message names the ONNX file and the reason."""


def trt_unavailable_reason() -> str | None:
    """Why engines cannot be built here, or None when TensorRT and a GPU are present."""
    if importlib.util.find_spec("tensorrt") is None:
        return TRT_MISSING
    if not torch.cuda.is_available():
        return NO_GPU
    return None


def gpu_identity() -> dict[str, str]:
    """Name and compute capability of the current CUDA device (part of the engine key)."""
    major, minor = torch.cuda.get_device_capability()
    return {"gpu": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}


@dataclass(frozen=True)
class EngineSpec:
    """What one engine is built from and with; every field is part of its cache key."""

    graph: str
    onnx_sha256: str
    min_batch: int
    opt_batch: int
    max_batch: int
    fp16: bool
    plugins: bool
    workspace_bytes: int = WORKSPACE_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(
                f"batch profile must satisfy 1 <= min <= opt <= max, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )


def plugin_code_digest() -> str:
    """sha256 over the Triton version and the sources compiled into plugin engines (the ONNX
    of a plugin graph names the kernels but does not contain them)."""
    import triton

    from daefr.export import plugin_kernels, trt_plugin_defs
    from daefr.kernels import _launch, attention, head

    digest = hashlib.sha256(triton.__version__.encode())
    for module in (plugin_kernels, trt_plugin_defs, attention, head, _launch):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def plugin_target_key() -> dict[str, int]:
    """The PTX ISA version, arch and shared-memory limit the AOT kernels are compiled for
    (``plugin_kernels.resolve_target``): an engine built for a newer driver's PTX must not be
    reused where the driver JITs only older PTX."""
    from daefr.export.plugin_kernels import resolve_target

    return asdict(resolve_target())


def engine_key(spec: EngineSpec, trt_version: str, gpu: Mapping[str, str]) -> str:
    """sha256 over the spec, the TensorRT version and the GPU (and for plugin engines the
    kernel sources and Triton version): equal keys, same engine."""
    payload = {"spec": asdict(spec), "tensorrt": trt_version, **gpu}
    if spec.plugins:
        payload["plugin_code"] = plugin_code_digest()
        payload["plugin_target"] = plugin_target_key()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class EngineResult:
    path: Path
    key: str
    cached: bool
    seconds: float

    def manifest_entry(self, spec: EngineSpec, trt_version: str, gpu: Mapping[str, str]) -> dict[str, Any]:
        return {
            "graph": spec.graph,
            "file": self.path.name,
            "bytes": self.path.stat().st_size,
            "sha256": sha256_file(self.path),
            "key": self.key,
            "tensorrt": trt_version,
            **gpu,
            "fp16": spec.fp16,
            "plugins": spec.plugins,
            "profile": {"min": spec.min_batch, "opt": spec.opt_batch, "max": spec.max_batch},
            "onnx_sha256": spec.onnx_sha256,
        }


def _progress_monitor(trt: Any) -> Any | None:
    """A logging IProgressMonitor (TensorRT >= 10), or None on bindings without it."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class LogProgress(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            log.debug(
                "TensorRT phase %s (%d steps)%s",
                phase_name,
                num_steps,
                f" in {parent_phase}" if parent_phase else "",
            )

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            log.debug("TensorRT phase %s done", phase_name)

    return LogProgress()


def build_engine(
    onnx_path: Path, spec: EngineSpec, out_dir: Path, timing_cache: Path | None = None
) -> EngineResult:
    """Build (or reuse) the engine for ``onnx_path``; written atomically as
    ``{graph}.{key[:16]}.engine`` in ``out_dir``. ``spec.plugins`` registers our AOT plugins
    first (``plugins.register_plugins``)."""
    import tensorrt as trt

    if spec.plugins:
        from daefr.export.trt_plugin_defs import PluginSupportError, require_aot_plugins

        try:
            require_aot_plugins(trt)
        except PluginSupportError as err:
            raise EngineBuildError(f"{onnx_path}: {err}") from None
    gpu = gpu_identity()
    key = engine_key(spec, trt.__version__, gpu)
    path = Path(out_dir) / f"{spec.graph}.{key[:16]}.engine"
    if path.is_file():
        log.info("engine %s: cached (key %s)", path.name, key[:16])
        return EngineResult(path, key, True, 0.0)
    if sha256_file(onnx_path) != spec.onnx_sha256:
        raise EngineBuildError(f"{onnx_path}: sha256 differs from the spec; re-export before building")
    if spec.plugins:
        from daefr.export.plugins import register_plugins

        register_plugins()
    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:  # 11: strongly typed always, the flag is deprecated
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    if spec.plugins and hasattr(trt.NetworkDefinitionCreationFlag, "PREFER_AOT_PYTHON_PLUGINS"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if hasattr(trt, "OnnxParserFlag") and hasattr(trt.OnnxParserFlag, "NATIVE_INSTANCENORM"):
        parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT could not parse it: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(network, spec, onnx_path).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    attach_timing_cache(config, timing_cache)
    monitor = _progress_monitor(trt)
    if monitor is not None:
        config.progress_monitor = monitor

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT build failed (see the TensorRT log above)")
    atomic_write_bytes(path, bytes(serialized))
    used_cache = config.get_timing_cache() if timing_cache is not None else None
    if used_cache is not None:
        atomic_write_bytes(timing_cache, bytes(used_cache.serialize()))
    return EngineResult(path, key, False, time.perf_counter() - start)


Shape = tuple[int, ...]


def profile_shapes(network: Any, spec: EngineSpec, onnx_path: Path) -> dict[str, tuple[Shape, Shape, Shape]]:
    """{input name: (min, opt, max) shape}: every input's batch axis (dim 0, dynamic in the
    ONNX) runs over the spec's min/opt/max, the other dims are the ONNX's own. Holds for any
    rank: ``lq_image`` (B, 3, R, R), and the conditioned graph's ``quality`` (B,) next to its
    ``fused_feat`` (B, D, r, r), so every input of one engine takes the same batch."""
    shapes: dict[str, tuple[Shape, Shape, Shape]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(int(d) for d in tensor.shape)
        if not dims or dims[0] != -1 or any(d < 1 for d in dims[1:]):
            raise EngineBuildError(
                f"{onnx_path}: input {tensor.name} has shape {dims}; an engine needs a dynamic batch "
                "axis first and fixed other dims (re-export with daefr-export)"
            )
        rest = dims[1:]
        shapes[tensor.name] = tuple((b, *rest) for b in (spec.min_batch, spec.opt_batch, spec.max_batch))
    return shapes


def attach_timing_cache(config: Any, timing_cache: Path | None) -> bool:
    """Attach the timing cache file (or a fresh cache) to ``config``; True when one is attached.

    ``IBuilderConfig::createTimingCache`` returns a pointer (NVIDIA/TensorRT v11.1
    ``include/NvInfer.h``; bound as-is in ``python/src/infer/pyCore.cpp``
    ``netconfig_create_timing_cache``), so the Python call can give None, and
    ``set_timing_cache`` takes a reference (None would raise a TypeError): a file that does
    not load or does not match falls back to a fresh cache, and if even that fails the build
    goes on without one.
    """
    blob = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    if blob:
        cache = config.create_timing_cache(blob)
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return True
        log.warning(
            "%s: cannot be used on this GPU/TensorRT (corrupt or foreign); building with a fresh cache",
            timing_cache,
        )
    cache = config.create_timing_cache(b"")
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return True
    log.warning("TensorRT could not create a timing cache: building without one")
    return False


def timing_cache_path(out_dir: Path) -> Path:
    """One timing cache per TensorRT version and GPU model (it is invalid across either)."""
    import tensorrt as trt

    gpu = gpu_identity()
    model = re.sub(r"[^A-Za-z0-9]+", "-", gpu["gpu"]).strip("-")
    tag = f"{trt.__version__}-sm{gpu['compute_capability'].replace('.', '')}-{model}"
    return Path(out_dir) / f"timing-{tag}.cache"
