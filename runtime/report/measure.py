"""Run each variant on the same faces: outputs, accuracy, per-graph error, timing, memory."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from daefr.runtime.report.metrics import Accuracy, accuracy, relative_error
from daefr.runtime.report.variants import STAGE_GRAPHS, Variant

log = logging.getLogger(__name__)


@dataclass
class Measurement:
    """What the report shows for one variant that ran."""

    accuracy: Accuracy
    restored: torch.Tensor  # (F, 3, R, R) float32 CPU, for the image grid
    codes: torch.Tensor  # (F, N) int64 CPU
    latency_ms: dict[str, float]  # p50/p95/p99 at batch 1
    throughput: dict[int, float]  # batch -> faces/s
    peak_memory_mb: float | None
    graph_error: dict[str, float] = field(
        default_factory=dict
    )  # graph -> relative error (or 1 - code agreement)
    graph_ms: dict[str, float] = field(default_factory=dict)  # graph -> ms per face at batch 1


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def timed(fn, device: str, repeats: int) -> list[float]:  # noqa: ANN001 (any callable)
    """Seconds per call, after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def restore_all(variant: Variant, faces: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    restored, codes = [], []
    for start in range(0, len(faces), batch):
        out, idx = variant.restorer.restore(faces[start : start + batch].to(variant.restorer.device))
        restored.append(out.float().cpu())
        codes.append(idx.long().cpu())
    return torch.cat(restored), torch.cat(codes)


def stage_inputs(run_graph, faces: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:  # noqa: ANN001
    """Each graph's inputs and outputs when the reference runs ``faces`` through the stages."""
    (lq,) = run_graph("lq_encoder", (faces,))
    (hq,) = run_graph("hq_encoder", (faces,))
    (fused,) = run_graph("mhca", (hq, lq))
    (codes,) = run_graph("transformer", (fused,))
    (restored,) = run_graph("decoder", (codes,))
    return {
        "lq_encoder": ((faces,), (lq,)),
        "hq_encoder": ((faces,), (hq,)),
        "mhca": ((hq, lq), (fused,)),
        "transformer": ((fused,), (codes,)),
        "decoder": ((codes,), (restored,)),
    }


def graph_breakdown(
    variant: Variant, reference: dict, device: str, repeats: int
) -> tuple[dict[str, float], dict[str, float]]:
    """Feed every graph the reference's inputs, so each error is the error that graph adds."""
    errors, times = {}, {}
    for graph in STAGE_GRAPHS:
        inputs, expected = reference[graph]
        (got,) = variant.run_graph(graph, inputs)
        if graph == "transformer":
            errors[graph] = 1.0 - (got.long().cpu() == expected[0].long().cpu()).double().mean().item()
        else:
            errors[graph] = relative_error(expected[0], got)
        one = tuple(t[:1] for t in inputs)
        times[graph] = 1000 * statistics.median(
            timed(lambda one=one, graph=graph: variant.run_graph(graph, one), device, repeats)
        )
    return errors, times


def measure(
    variant: Variant,
    faces: torch.Tensor,
    reference: tuple[torch.Tensor, torch.Tensor],
    reference_stages: dict | None,
    batches: Sequence[int],
    repeats: int,
) -> Measurement:
    """Accuracy against ``reference`` (eager fp32 outputs for ``faces``) and speed."""
    device = variant.device
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    restored, codes = restore_all(variant, faces, max(batches))
    acc = accuracy(reference[0], reference[1], restored, codes)
    single = faces[:1].to(variant.restorer.device)
    latencies = timed(lambda: variant.restorer.restore(single), device, repeats)
    latency_ms = {f"p{q}": 1000 * percentile(latencies, q) for q in (50, 95, 99)}
    throughput = {}
    for batch in batches:
        group = faces[torch.arange(batch) % len(faces)].to(variant.restorer.device)
        seconds = statistics.median(
            timed(lambda group=group: variant.restorer.restore(group), device, max(1, repeats // 2))
        )
        throughput[batch] = batch / seconds
        log.info("%s: batch %d -> %.2f faces/s", variant.name, batch, throughput[batch])
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    measurement = Measurement(acc, restored, codes, latency_ms, throughput, peak)
    if variant.run_graph is not None and reference_stages is not None:
        measurement.graph_error, measurement.graph_ms = graph_breakdown(
            variant, reference_stages, device, repeats
        )
    return measurement
