"""``manifest.json``: what was exported, from what, with which tools, and how well it matched.

Written atomically beside the artifacts; the runtime (Python and ``daefr-trt-run``) reads it
to find graphs and engines by name and to refuse files whose checksum does not match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import torch

from daefr.atomic import atomic_write_text
from daefr.export.graphs import GRAPHS, tensor_specs
from daefr.model import DAEFR
from daefr.versions import EXPORT_PACKAGES, package_versions

MANIFEST_NAME = "manifest.json"
FORMAT = "daefr-export/1"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of everything that shapes the artifacts ("not installed" where absent)."""
    return {**package_versions(EXPORT_PACKAGES), "torch": torch.__version__}


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


class ManifestError(ValueError):
    """A manifest that is unreadable or malformed, or an artifact that disagrees with it."""


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def invalidate_manifest(out_dir: Path) -> None:
    """Remove the old manifest before any of its files is rewritten: an interrupted re-export
    then leaves no manifest (the runtime says to export) rather than one whose hashes lie."""
    (Path(out_dir) / MANIFEST_NAME).unlink(missing_ok=True)


_HEX = frozenset("0123456789abcdef")


def check_entry(where: Path, section: str, i: int, entry: Any) -> None:
    """ManifestError unless ``entry`` has a plain ``file`` name and a 64-hex ``sha256``."""
    name = f"{where}: {section}[{i}]"
    if not isinstance(entry, dict):
        raise ManifestError(f"{name} is a {type(entry).__name__}, not an object")
    file, digest = entry.get("file"), entry.get("sha256")
    if not isinstance(file, str) or not file:
        raise ManifestError(f"{name}: 'file' is missing or not a string")
    if Path(file).name != file or file in (".", ".."):
        raise ManifestError(f"{name}: file {file!r} is not a plain file name inside {where.parent}")
    if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
        raise ManifestError(f"{name} ({file}): 'sha256' is missing or not 64 hex digits")
    for key in ("graph",):
        if key in entry and not isinstance(entry[key], str):
            raise ManifestError(f"{name} ({file}): {key!r} is not a string")


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest of ``out_dir``, checked: format, and every artifact/engine entry with a
    plain ``file`` name inside the folder and a sha256. ``ManifestError`` (one line) otherwise."""
    path = Path(out_dir) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest (export with daefr-export)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ManifestError(f"{path}: not a readable manifest ({type(err).__name__}: {err})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path}: not a JSON object")
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for section in ("artifacts", "engines"):
        entries = manifest.get(section, [])
        if not isinstance(entries, list):
            raise ManifestError(f"{path}: {section!r} is not a list")
        for i, entry in enumerate(entries):
            check_entry(path, section, i, entry)
    return manifest


def verified_file(out_dir: Path, entry: dict[str, Any]) -> Path:
    """The file of a (checked) manifest entry, after checking it is there, a regular file
    inside ``out_dir`` and has the recorded sha256."""
    out_dir = Path(out_dir)
    where = out_dir / MANIFEST_NAME
    path = out_dir / entry["file"]
    if path.resolve().parent != out_dir.resolve():
        raise ManifestError(f"{where}: {entry['file']} resolves outside {out_dir} ({path.resolve()})")
    if not path.is_file():
        raise ManifestError(f"{where}: lists {entry['file']}, which is missing or not a file; export again")
    if sha256_file(path) != entry["sha256"]:
        raise ManifestError(
            f"{path}: does not match the sha256 in {where} (modified, damaged, or a stale or foreign file); export again"
        )
    return path


def verify_against_manifest(path: Path) -> dict[str, Any] | None:
    """If a manifest beside ``path`` lists it, check the file against it (``ManifestError`` on
    a mismatch) and return its entry; None when there is no manifest beside it."""
    path = Path(path)
    if not (path.parent / MANIFEST_NAME).is_file():
        return None
    manifest = read_manifest(path.parent)
    for entry in manifest.get("artifacts", []) + manifest.get("engines", []):
        if entry["file"] == path.name:
            verified_file(path.parent, entry)
            return entry
    raise ManifestError(
        f"{path}: not listed in {path.parent / MANIFEST_NAME}; a file beside a manifest must be one "
        "of its artifacts (export again, or move the file elsewhere)"
    )
