"""Collect everything ``daefr-report`` shows into one JSON-ready dict (and the images)."""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from daefr.model import DAEFR
from daefr.precision import quality_bar
from daefr.quality.scorer import QualityScorer
from daefr.runtime.report.faces import ReportFace, report_faces, to_batch
from daefr.runtime.report.measure import Measurement, measure, stage_inputs
from daefr.runtime.report.quality import CONDITIONED_SKIP, output_score, quality_sweep
from daefr.runtime.report.variants import Variant, eager_variants, ort_variants, trt_variants
from daefr.versions import package_versions

log = logging.getLogger(__name__)

# The report's bars are the fp16 row of the one table (daefr.precision.QUALITY_BARS).
CODE_AGREEMENT_BAR = quality_bar("fp16").code_agreement
PSNR_BAR_DB = quality_bar("fp16").psnr_db
REFERENCE = "eager fp32"


@dataclass(frozen=True)
class ReportConfig:
    faces: int = 4
    batches: tuple[int, ...] = (1, 4, 8, 16, 32)
    repeats: int = 10
    seed: int = 0
    engine_dirs: dict[str, Path | None] = field(default_factory=dict)
    precision: str | None = None  # only eager fp32 (the reference) and this precision's variants
    scorer: QualityScorer | None = None  # NR-IQA of each output (the quality column); None: none

    def __post_init__(self) -> None:
        if self.faces < 1:
            raise ValueError(f"invalid config: faces={self.faces}; must be >= 1")
        if not self.batches or min(self.batches) < 1:
            raise ValueError(f"invalid config: batches={self.batches}; need sizes >= 1")
        if self.repeats < 1:
            raise ValueError(f"invalid config: repeats={self.repeats}; must be >= 1")


@dataclass
class ReportData:
    summary: dict  # what report.json holds
    faces: list[ReportFace]
    outputs: dict[str, torch.Tensor]  # variant -> restored (F, 3, R, R) float32
    codes: dict[str, torch.Tensor]  # variant -> code_idx (F, N) int64


def environment() -> dict[str, object]:
    env: dict[str, object] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        **package_versions(),
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = {
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda,
            "driver": _nvidia_driver(),
        }
    return env


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def git_revision() -> str | None:
    repo = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def quality_verdict(variant: Variant, measurement: Measurement) -> dict[str, object] | None:
    """The reduced-precision quality bars of ``daefr.precision.QUALITY_BARS`` (code agreement
    and PSNR vs eager fp32) for the variant's precision; None for fp32 variants."""
    precision = variant.precision.split("+")[0]
    if precision == "fp32":
        return None
    acc, bar = measurement.accuracy, quality_bar(precision)
    return {
        "code_agreement_pass": acc.code_agreement >= bar.code_agreement,
        "psnr_pass": acc.psnr_db >= bar.psnr_db,
    }


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _skipped_exports(device: torch.device) -> list[Variant]:
    """The ORT and TensorRT rows of a plain model, skipped (a conditioned report says why)."""
    label = "ort cuda" if device.type == "cuda" else "ort cpu"
    names = [(f"{label} fp32", "ort", "fp32"), (f"{label} fp16", "ort", "fp16"),
             ("trt fp16", "trt", "fp16"), ("trt fp16 + plugins", "trt", "fp16+plugins")]  # fmt: skip
    return [Variant(n, b, p, str(device), skipped=CONDITIONED_SKIP) for n, b, p in names]


def collect(
    model: DAEFR, preset: str, weights: dict[str, str], device: torch.device, cfg: ReportConfig
) -> ReportData:
    """Run every variant on the same faces and gather the numbers."""
    resolution = model.config.vqgan.resolution
    faces = report_faces(resolution, cfg.faces, cfg.seed)
    batch = to_batch([f.degraded for f in faces])
    with tempfile.TemporaryDirectory(prefix="daefr-report-") as work:
        conditioned = model.config.quality is not None
        if conditioned:  # the exported graphs have no quality input: they would drop S
            exported = _skipped_exports(device)
        else:
            exported = [*ort_variants(model, device, Path(work)), *trt_variants(device, cfg.engine_dirs)]
        variants = [*eager_variants(model, device), *exported]
        reference = variants[0]
        if cfg.precision is not None:
            variants = [reference, *[v for v in variants[1:] if v.precision.split("+")[0] == cfg.precision]]
        ref_restored, ref_codes = reference.restorer.restore(batch.to(device))
        ref_restored, ref_codes = ref_restored.float().cpu(), ref_codes.long().cpu()
        # The per-graph breakdown is of the plain graphs: not what a conditioned model runs.
        stages = None if conditioned else stage_inputs(reference.run_graph, batch)
        rows, outputs, codes = [], {}, {}
        for variant in variants:
            row: dict[str, object] = {
                "name": variant.name, "backend": variant.backend, "precision": variant.precision,
                "device": variant.device, "status": "skipped" if variant.skipped else "ran", "reason": variant.skipped,
            }  # fmt: skip
            if variant.skipped is None:
                log.info("measuring %s", variant.name)
                m = measure(variant, batch, (ref_restored, ref_codes), stages, cfg.batches, cfg.repeats)
                outputs[variant.name], codes[variant.name] = m.restored, m.codes
                row.update(
                    accuracy={k: _json_float(v) for k, v in m.accuracy.to_dict().items()},
                    latency_ms=m.latency_ms,
                    throughput_faces_per_s={str(b): v for b, v in m.throughput.items()},
                    peak_memory_mb=m.peak_memory_mb if variant.backend == "torch" else None,
                    build_seconds=variant.build_seconds,
                    artifact_mb=None if variant.artifact_bytes is None else variant.artifact_bytes / 2**20,
                    graph_error=m.graph_error,
                    graph_ms=m.graph_ms,
                    quality_bars=quality_verdict(variant, m),
                    nr_iqa=None if cfg.scorer is None else output_score(cfg.scorer, m.restored),
                )
            else:
                log.info("skipped %s: %s", variant.name, variant.skipped)
            rows.append(row)
            variant.close()
        quality = None
        if conditioned:
            quality = {
                "condition": model.iqp.default_quality,
                "trained_range": [float(v) for v in model.iqp.quality_range],
                "sweep": None if cfg.scorer is None else quality_sweep(model, cfg.scorer, batch.to(device)),
            }
    summary = {
        "title": "DAEFR accuracy vs speed",
        "reference": REFERENCE,
        "preset": preset,
        "resolution": resolution,
        "weights": weights,
        "environment": environment(),
        "git_revision": git_revision(),
        "faces": [{"name": f.name, "degradation": f.params} for f in faces],
        "quality_bars": {"code_agreement_min": CODE_AGREEMENT_BAR, "psnr_min_db": PSNR_BAR_DB},
        "settings": {"batches": list(cfg.batches), "repeats": cfg.repeats, "seed": cfg.seed},
        "variants": rows,
        "nr_iqa_scorer": None if cfg.scorer is None else cfg.scorer.name,
        "quality_condition": quality,
    }
    return ReportData(summary, faces, outputs, codes)
