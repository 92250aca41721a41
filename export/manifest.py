"""``manifest.json``: what was exported, from what, with which tools, and how well it matched.

Written atomically beside the artifacts; the runtime (Python and ``daefr-trt-run``) reads it
to find graphs and engines by name and to refuse files whose checksum does not match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from daefr.atomic import atomic_write_text
from daefr.export.graphs import GRAPHS, tensor_specs
from daefr.model import DAEFR

MANIFEST_NAME = "manifest.json"
FORMAT = "daefr-export/1"
NOT_INSTALLED = "not installed"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the artifacts ("not installed" where absent)."""
    return {
        "python": platform.python_version(),
        "daefr": package_version("daefr"),
        "torch": torch.__version__,
        "onnx": package_version("onnx"),
        "onnxruntime": package_version("onnxruntime"),
        "tensorrt": package_version("tensorrt"),
        "polygraphy": package_version("polygraphy"),
        "triton": package_version("triton"),
    }


def git_revision(where: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the source tree (``-dirty`` if modified), or "unknown"."""
    cwd = where or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def tensor_entries(model: DAEFR, names: tuple[str, ...]) -> list[dict[str, Any]]:
    specs = tensor_specs(model)
    return [
        {"name": n, "shape": list(specs[n].shape), "dtype": str(specs[n].dtype).removeprefix("torch.")}
        for n in names
    ]


def artifact_entry(
    model: DAEFR,
    graph: str,
    path: Path,
    *,
    precision: str,
    variant: str,
    parity: dict[str, Any] | None,
) -> dict[str, Any]:
    """One ONNX file: its graph, I/O, checksum and parity (None where ORT cannot run it)."""
    spec = GRAPHS[graph]
    return {
        "graph": graph,
        "precision": precision,
        "variant": variant,
        "file": path.name,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "inputs": tensor_entries(model, spec.inputs),
        "outputs": tensor_entries(model, spec.outputs),
        "parity": parity,
    }


def build_manifest(
    model: DAEFR,
    *,
    preset: str,
    weights: dict[str, Any],
    opset: int,
    exporter: str,
    artifacts: list[dict[str, Any]],
    engines: list[dict[str, Any]],
    engines_not_built: str | None,
) -> dict[str, Any]:
    cfg = model.config
    return {
        "format": FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "preset": preset,
        "resolution": cfg.vqgan.resolution,
        "num_tokens": cfg.num_tokens,
        "codebook_size": cfg.vqgan.codebook_size,
        "code_idx_dtype": "int32",
        "weights": weights,
        "opset": opset,
        "exporter": exporter,
        "versions": tool_versions(),
        "git_revision": git_revision(),
        "artifacts": artifacts,
        "engines": engines,
        "engines_not_built": engines_not_built,
    }


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest
