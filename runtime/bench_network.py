"""``daefr-bench network``: every backend x precision x layout that runs here, side by side in
one run, against eager fp32 NCHW: faces/s, ms per batch (p50/p95), speed ratio, code agreement,
PSNR, and the share of this machine's matmul peak (measured in the same run) each one reaches.

CPUs differ (AMX, AVX512-BF16, AVX2 only) and the CI machine is shared: compare rows of one
run, never across runs.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from daefr.model import DAEFR
from daefr.precision import quality_bar
from daefr.runtime.auto import Sources, unavailable
from daefr.runtime.backends import BackendError, BackendUnavailable, create_restorer, export_onnx
from daefr.runtime.plan import PlanError, PrecisionPlan

log = logging.getLogger(__name__)

OFFICIAL_GMAC_PER_FACE = 453.0  # issue 19; bench_network.macs_per_face counts it for any preset


@dataclass(frozen=True)
class Row:
    backend: str
    precision: str
    variant: str  # the plan's label, e.g. "torch fp32 channels_last"
    batch: int
    faces_per_s: float | None = None
    ms_p50: float | None = None
    ms_p95: float | None = None
    ratio_vs_eager: float | None = None
    code_agreement: float | None = None
    psnr_db: float | None = None
    meets_quality_bar: bool | None = None
    pct_of_peak: float | None = None
    peak_dtype: str | None = None
    setup_s: float | None = None  # build / export / compile of the first call of this batch size
    skipped: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: an infinite PSNR (identical images) becomes "inf", as in daefr-report."""
        out = asdict(self)
        if out["psnr_db"] is not None and math.isinf(out["psnr_db"]):
            out["psnr_db"] = "inf"
        return out


def default_plans(device: str, compile_torch: bool) -> list[PrecisionPlan]:
    """The variants worth comparing on ``device``; the first is the reference (eager fp32 NCHW)."""
    base = PrecisionPlan("torch", device=device)
    plans = [base, replace(base, channels_last=True)]
    if compile_torch:
        plans.append(replace(base, channels_last=True, compile=True))
    if torch.device(device).type == "cuda":
        plans += [replace(base, cuda_graphs=True), replace(base, precision="fp16", channels_last=True),
                  replace(base, precision="bf16", channels_last=True), PrecisionPlan("ort", device=device),
                  PrecisionPlan("ort", "fp16", device=device), PrecisionPlan("trt", device=device),
                  PrecisionPlan("trt", "fp16", device=device)]  # fmt: skip
        return plans
    return plans + [
        PrecisionPlan("ort", device=device),
        PrecisionPlan("openvino", device=device),
        replace(base, precision="bf16", channels_last=True),
        PrecisionPlan("openvino", "bf16", device=device),
        PrecisionPlan("ort", "fp16", device=device),
    ]


def macs_per_face(model: DAEFR) -> float:
    """Multiply-accumulates of one face through the whole network (FLOPs / 2), counted by
    torch's FlopCounterMode on a copy on the meta device (instant, no weights touched)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").requires_grad_(False)
    r = model.config.vqgan.resolution
    counter = FlopCounterMode(display=False)
    with counter:
        meta(torch.empty(1, 3, r, r, device="meta"))
    return counter.get_total_flops() / 2


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, seconds: float = 2.0) -> float:
    """MAC/s of an n x n x n matmul in ``dtype`` on ``device`` (best of repeated timings)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best, spent = math.inf, 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b)
        if a.is_cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return n**3 / best


class FacesError(ValueError):
    """A ``--faces`` folder that cannot be used; the message names it and what to try."""


def faces_from_folder(folder: str | Path, resolution: int) -> torch.Tensor:
    """The aligned faces in ``folder`` (R x R images, sorted by name) -> (F, 3, R, R) float32 in
    [-1, 1]. FacesError if the folder is missing or empty, an image unreadable or of another size."""
    from daefr.image_io import ImageReadError, images_in_folder, read_image

    folder = Path(folder)
    if not folder.is_dir():
        raise FacesError(f"--faces {folder}: not a folder; pass a folder of aligned {resolution}x{resolution} faces")
    paths = images_in_folder(folder)
    if not paths:
        raise FacesError(f"--faces {folder}: no images in it")
    faces = []
    for path in paths:
        try:
            rgb = read_image(path)
        except ImageReadError as err:
            raise FacesError(f"--faces: {err}") from err
        if rgb.shape[:2] != (resolution, resolution):
            raise FacesError(
                f"--faces: {path} is {rgb.shape[1]}x{rgb.shape[0]}, the preset takes {resolution}x{resolution} faces"
            )
        faces.append(rgb)
    return torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (F, 3, R, R)


def cycled(faces: torch.Tensor, batch: int) -> torch.Tensor:
    """(F, 3, R, R) -> (batch, 3, R, R): the faces in order, repeated as needed."""
    return faces[torch.arange(batch) % faces.shape[0]]


def psnr_db(got: torch.Tensor, want: torch.Tensor) -> float:
    """PSNR of images in [-1, 1] (peak-to-peak 2)."""
    mse = torch.mean((got.double() - want.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(4.0 / mse)


def _timed_call(restorer, batch: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:  # noqa: ANN001
    t0 = time.perf_counter()
    restored, code_idx = restorer.restore(batch)
    if restored.is_cuda:
        torch.cuda.synchronize(restored.device)
    return time.perf_counter() - t0, restored, code_idx


def why_not(plan: PrecisionPlan, sources: Sources) -> str | None:
    """Why ``plan`` cannot run here (its backend is missing, or cannot take its precision), or None."""
    why = None if plan.backend == "torch" else unavailable(plan.backend, plan, sources)
    if why is None:
        try:
            plan.check_backend(plan.backend)
        except PlanError as err:
            why = str(err)
    return why


def measure(
    model: DAEFR,
    plans: Sequence[PrecisionPlan],
    batches: Sequence[int],
    iters: int,
    workdir: Path,
    images: Callable[[int], torch.Tensor],
) -> list[Row]:
    """One row per (plan, batch); the first plan is the reference every row is compared with.
    ``pct_of_peak`` is left for ``with_peak_share``.

    Every restorer is built and warmed up first; then the timed calls go round the variants
    (variant 1, 2, ..., 1, 2, ...) so a change in the machine's load during the run (other
    jobs share these cores) slows every variant alike instead of whichever ran at that moment.
    """
    sources = Sources(weights=True)
    exported: dict[bool, Path] = {}
    built: list[tuple[PrecisionPlan, object, float]] = []
    skipped: dict[str, str] = {}
    try:
        for plan in plans:
            why = why_not(plan, sources)
            t0 = time.perf_counter()
            if why is None:
                try:
                    onnx = None
                    if plan.backend in ("ort", "openvino"):  # one export per graph precision, shared
                        fp16 = plan.backend == "ort" and plan.precision == "fp16"
                        if fp16 not in exported:
                            path = workdir / f"daefr{'.fp16' if fp16 else ''}.onnx"
                            exported[fp16] = export_onnx(model, path, fp16=fp16)
                        onnx = exported[fp16]
                    restorer = create_restorer(plan, model=copy.deepcopy(model), onnx=onnx, workdir=workdir)
                    built.append((plan, restorer, time.perf_counter() - t0))
                except (BackendUnavailable, BackendError, PlanError) as err:
                    why = str(err)
            if why is not None:
                skipped[plan.label()] = why
                log.info("%s: skipped (%s)", plan.label(), why)
        rows: dict[tuple[str, int], Row] = {}
        for b in batches:
            rows.update(_measure_batch(built, b, iters, images(b)))
    finally:
        for _, restorer, _ in built:
            restorer.close()
    return [
        Row(p.backend, p.precision, p.label(), b, skipped=skipped[p.label()]) if p.label() in skipped
        else rows[(p.label(), b)]
        for p in plans for b in batches
    ]  # fmt: skip


def _measure_batch(built, b: int, iters: int, batch: torch.Tensor) -> dict[tuple[str, int], Row]:  # noqa: ANN001
    first = {}
    for plan, restorer, build_s in built:  # warm-up: compile / capture / autotune for this size
        seconds, restored, code_idx = _timed_call(restorer, batch)
        first[plan.label()] = (build_s + seconds, restored.cpu(), code_idx.cpu())
        log.info("%s batch %d: warmed up in %.1f s", plan.label(), b, seconds)
    times: dict[str, list[float]] = {plan.label(): [] for plan, _, _ in built}
    for _ in range(iters):
        for plan, restorer, _ in built:
            times[plan.label()].append(_timed_call(restorer, batch)[0])
    ref_plan = built[0][0]
    _, ref_restored, ref_codes = first[ref_plan.label()]
    ref_speed = b * iters / sum(times[ref_plan.label()])
    rows = {}
    for plan, _, _ in built:
        setup, restored, code_idx = first[plan.label()]
        faces_per_s = b * iters / sum(times[plan.label()])
        agreement = (code_idx == ref_codes).double().mean().item()
        psnr = psnr_db(restored, ref_restored)
        bar = quality_bar(plan.precision)
        # ORT's CPU fp16 kernels compute in fp32 (no fp16 matmul peak on these CPUs).
        peak_dtype = "fp32" if plan.precision == "fp16" and plan.device_type == "cpu" else plan.precision
        ms = np.asarray(times[plan.label()]) * 1e3
        rows[(plan.label(), b)] = Row(
            plan.backend, plan.precision, plan.label(), b,
            faces_per_s=faces_per_s, ms_p50=float(np.percentile(ms, 50)), ms_p95=float(np.percentile(ms, 95)),
            ratio_vs_eager=faces_per_s / ref_speed, code_agreement=agreement, psnr_db=psnr,
            meets_quality_bar=agreement >= bar.code_agreement and psnr >= bar.psnr_db,
            peak_dtype=peak_dtype, setup_s=setup,
        )  # fmt: skip
        log.info(
            "%s batch %d: %.3f faces/s (x%.2f), codes %.2f %%, PSNR %.1f dB",
            plan.label(), b, faces_per_s, faces_per_s / ref_speed, 100 * agreement, psnr,
        )  # fmt: skip
    return rows


def with_peak_share(rows: Sequence[Row], macs: float, peaks: dict[str, float]) -> list[Row]:
    """Each measured row with ``pct_of_peak``: its MAC/s over the matmul peak of its dtype."""
    return [
        r if r.skipped else replace(r, pct_of_peak=100 * r.faces_per_s * macs / peaks[r.peak_dtype]) for r in rows
    ]


def format_rows(rows: Sequence[Row], macs: float, peaks: dict[str, float]) -> str:
    head = (
        f"{'variant':34} {'batch':>5} {'faces/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'x eager':>8} "
        f"{'codes %':>8} {'PSNR dB':>8} {'% peak':>7} {'bar':>4}"
    )
    lines = [
        f"network: {macs / 1e9:.1f} GMAC per face; matmul peak "
        + ", ".join(f"{k} {v / 1e9:.0f} GMAC/s" for k, v in peaks.items()),
        head,
    ]
    for r in rows:
        if r.skipped:
            lines.append(f"{r.variant:34} {r.batch:5d} skipped: {r.skipped}")
            continue
        lines.append(
            f"{r.variant:34} {r.batch:5d} {r.faces_per_s:9.3f} {r.ms_p50:9.1f} {r.ms_p95:9.1f} "
            f"{r.ratio_vs_eager:8.2f} {100 * r.code_agreement:8.2f} {r.psnr_db:8.1f} {r.pct_of_peak:7.1f} "
            f"{'ok' if r.meets_quality_bar else 'MISS':>4}"
        )
    return "\n".join(lines)
