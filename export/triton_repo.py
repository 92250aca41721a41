"""``daefr-export --triton-repo DIR``: a model repository the standard ``tritonserver`` loads.

DIR/daefr/config.pbtxt + 1/model.onnx       the end-to-end ONNX (``onnxruntime_onnx``), with
                                            ONNX Runtime's TensorRT accelerator in FP16 on request
DIR/<graph>_trt/config.pbtxt + 1/model.plan one per TensorRT engine in the manifest (``tensorrt_plan``)

Tensor names, dtypes and dims come from ``manifest.json``; ``max_batch_size`` is the engine
profile's max (``--max-batch`` for the ONNX model); dynamic batching with preferred sizes and a
queue delay; an instance group. Each model directory is written to a temporary sibling and
renamed into place, so other models in DIR are left alone and no half-written model appears.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

END_TO_END = "daefr"
# Triton's DataType names (model_config.proto) for the dtypes a manifest lists.
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64"}
KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}


class TritonRepoError(RuntimeError):
    """The manifest cannot be turned into a repository (missing file, unknown dtype)."""


@dataclass(frozen=True)
class RepoOptions:
    """How every model of the repository batches and runs.

    max_batch_size: the ONNX model's limit (engines use their profile's max).
    preferred_batch_sizes: the batcher's targets, each within 1..max_batch_size.
    queue_delay_us: how long a request may wait for others to grow a batch.
    instances / kind: the instance group (``gpu``: one set per visible GPU; ``cpu``).
    ort_trt_fp16: run the ONNX model through ONNX Runtime's TensorRT accelerator in FP16.
    """

    max_batch_size: int = 8
    preferred_batch_sizes: tuple[int, ...] = (8,)
    queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "gpu"
    ort_trt_fp16: bool = False

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"RepoOptions.max_batch_size={self.max_batch_size}: must be >= 1")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad or not self.preferred_batch_sizes:
            raise ValueError(f"RepoOptions.preferred_batch_sizes={self.preferred_batch_sizes}: "
                             f"need one or more sizes in 1..{self.max_batch_size}")  # fmt: skip
        if self.queue_delay_us < 0:
            raise ValueError(f"RepoOptions.queue_delay_us={self.queue_delay_us}: must be >= 0")
        if self.instances < 1:
            raise ValueError(f"RepoOptions.instances={self.instances}: must be >= 1")
        if self.kind not in KINDS:
            raise ValueError(f"RepoOptions.kind={self.kind!r}: choose one of {sorted(KINDS)}")
        if self.ort_trt_fp16 and self.kind != "gpu":
            raise ValueError("RepoOptions.ort_trt_fp16: the TensorRT accelerator needs kind='gpu'")


def preferred_sizes(opt: int, max_batch: int) -> tuple[int, ...]:
    """The batcher's targets: the engine profile's optimum and its max (one if they agree)."""
    return tuple(sorted({opt, max_batch}))


def _tensor_block(kind: str, tensors: Sequence[dict[str, Any]], where: str) -> str:
    entries = []
    for t in tensors:
        if t["dtype"] not in TRITON_DTYPES:
            raise TritonRepoError(f"{where}: tensor {t['name']} has dtype {t['dtype']}; "
                                  f"Triton types known here: {sorted(TRITON_DTYPES)}")  # fmt: skip
        shape = t["shape"]
        if not shape or shape[0] != "batch":
            raise TritonRepoError(f"{where}: tensor {t['name']} shape {shape} has no leading batch axis")
        dims = ", ".join(str(int(d)) for d in shape[1:])  # Triton adds the batch axis itself
        entries.append(
            f'  {{\n    name: "{t["name"]}"\n    data_type: {TRITON_DTYPES[t["dtype"]]}\n    dims: [ {dims} ]\n  }}'
        )
    return f"{kind} [\n" + ",\n".join(entries) + "\n]\n"


def model_config_text(
    name: str,
    platform: str,
    inputs: Sequence[dict[str, Any]],
    outputs: Sequence[dict[str, Any]],
    max_batch_size: int,
    preferred: Sequence[int],
    options: RepoOptions,
    where: str,
) -> str:
    """One ``config.pbtxt`` (protobuf text of Triton's ``ModelConfig``)."""
    text = f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch_size}\n'
    text += _tensor_block("input", inputs, where) + _tensor_block("output", outputs, where)
    sizes = ", ".join(str(b) for b in preferred)
    text += ("dynamic_batching {\n"
             f"  preferred_batch_size: [ {sizes} ]\n"
             f"  max_queue_delay_microseconds: {options.queue_delay_us}\n}}\n")  # fmt: skip
    text += (
        f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {KINDS[options.kind]}\n  }}\n]\n"
    )
    if platform == "onnxruntime_onnx" and options.ort_trt_fp16:
        text += ("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n"
                 '      {\n        name: "tensorrt"\n'
                 '        parameters { key: "precision_mode" value: "FP16" }\n'
                 '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }\n'
                 "      }\n    ]\n  }\n}\n")  # fmt: skip
    return text


def _write_model(repo: Path, name: str, config: str, artifact: Path, filename: str) -> Path:
    """DIR/name/{config.pbtxt, 1/filename}, replacing an older DIR/name in one rename."""
    if not artifact.is_file():
        raise TritonRepoError(f"{artifact}: listed in the manifest but missing; re-run daefr-export")
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
    try:
        (tmp / "1").mkdir()
        shutil.copyfile(artifact, tmp / "1" / filename)
        (tmp / "config.pbtxt").write_text(config)
        final = repo / name
        old = None
        if final.exists():
            old = repo / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_repo(
    export_dir: Path, repo: Path, options: RepoOptions, opt_batch: int | None = None
) -> list[Path]:
    """The model directories for ``export_dir``'s manifest, written under ``repo``."""
    export_dir, repo = Path(export_dir), Path(repo)
    if repo.exists() and not repo.is_dir():
        raise TritonRepoError(f"--triton-repo {repo}: exists and is not a directory")
    from daefr.export.manifest import read_manifest  # torch: only when a repository is written

    manifest = read_manifest(export_dir)
    by_graph = {
        a["graph"]: a
        for a in manifest["artifacts"]
        if a["variant"] == "standard" and a["precision"] == "fp32"
    }
    written = []
    e2e = by_graph.get(END_TO_END)
    if e2e is not None:
        cfg = model_config_text(END_TO_END, "onnxruntime_onnx", e2e["inputs"], e2e["outputs"],
                                options.max_batch_size, options.preferred_batch_sizes, options,
                                e2e["file"])  # fmt: skip
        written.append(_write_model(repo, END_TO_END, cfg, export_dir / e2e["file"], "model.onnx"))
    for engine in manifest.get("engines") or []:
        if engine.get("plugins"):
            log.warning("skipping %s: a plugin engine needs its plugin library loaded into tritonserver",
                        engine["file"])  # fmt: skip
            continue
        tensors = by_graph.get(engine["graph"]) or next(
            (a for a in manifest["artifacts"] if a["graph"] == engine["graph"]), None
        )
        if tensors is None:
            raise TritonRepoError(f"{engine['file']}: the manifest lists no ONNX of graph {engine['graph']}")
        profile = engine["profile"]
        name = f"{engine['graph']}_trt"
        cfg = model_config_text(name, "tensorrt_plan", tensors["inputs"], tensors["outputs"], profile["max"],
                                preferred_sizes(profile["opt"], profile["max"]), options, engine["file"])  # fmt: skip
        written.append(_write_model(repo, name, cfg, export_dir / engine["file"], "model.plan"))
    if not written:
        raise TritonRepoError(f"{export_dir}: no end-to-end ONNX and no engines to serve; "
                              f"export with --only {END_TO_END}")  # fmt: skip
    for path in written:
        log.info("triton model %s", path)
    return written


# ---- the daefr-export flags (kept here so export/cli.py only calls two functions) -------------


def _at_least(minimum: int):  # noqa: ANN202
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {minimum}")
        return value

    return parse


def add_triton_repo_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Triton model repository")
    g.add_argument(
        "--triton-repo", type=Path, help="also write a Triton Inference Server model repository here"
    )
    g.add_argument("--triton-queue-delay-us", type=_at_least(0), default=2000, help="dynamic batcher delay")
    g.add_argument("--triton-instances", type=_at_least(1), default=1, help="model instances per device")
    g.add_argument("--triton-kind", choices=sorted(KINDS), default="gpu", help="instance group kind")
    g.add_argument("--triton-ort-trt-fp16", action="store_true",
                   help="run the ONNX model through ONNX Runtime's TensorRT accelerator in FP16")  # fmt: skip


def options_from_args(args: argparse.Namespace) -> RepoOptions | None:
    """The repository options of the daefr-export flags (None without ``--triton-repo``);
    ValueError names the bad flag. ``--max-batch``/``--opt-batch`` size the ONNX model."""
    if args.triton_repo is None:
        return None
    if args.triton_repo.exists() and not args.triton_repo.is_dir():
        raise ValueError(f"--triton-repo {args.triton_repo}: exists and is not a directory")
    return RepoOptions(
        max_batch_size=args.max_batch,
        preferred_batch_sizes=preferred_sizes(args.opt_batch, args.max_batch),
        queue_delay_us=args.triton_queue_delay_us,
        instances=args.triton_instances,
        kind=args.triton_kind,
        ort_trt_fp16=args.triton_ort_trt_fp16,
    )
