"""Package versions stamped into every artifact and report (manifest, benchmarks, report).

One lookup for all of them, so a package that is absent reads the same ("not installed")
everywhere and a new backend's package is added in one place.
"""

from __future__ import annotations

import importlib.metadata
import platform

NOT_INSTALLED = "not installed"

# What shapes exported artifacts (the manifest records these).
EXPORT_PACKAGES = ("daefr", "torch", "onnx", "onnxruntime", "tensorrt", "polygraphy", "triton")
# What shapes a run's speed or output (benchmarks and the report record these).
RUNTIME_PACKAGES = (
    "daefr", "torch", "triton", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "tensorrt",
    "av", "numpy", "opencv-python", "ray",
)  # fmt: skip


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def package_versions(names: tuple[str, ...] = RUNTIME_PACKAGES) -> dict[str, str]:
    """{"python": ..., name: version or "not installed"} for each of ``names``."""
    return {"python": platform.python_version(), **{name: package_version(name) for name in names}}
