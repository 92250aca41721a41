"""The tiny IQPFR run on the CPU: iqp-codebook -> iqp-fusion on a seeded random tiny DAEFR,
then the NR-IQA (BRISQUE) score of the output on held-out degraded faces for several S.

    .venv/bin/python scripts/iqp_tiny.py --out reports/cpu/iqp_tiny [--codebook-steps N --fusion-steps M]

Writes OUT.json (settings, training curves, score-vs-S table) and OUT.txt. The weights are a
seeded random DAEFR, not trained faces: the run shows the mechanism, not restoration quality.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from daefr import DAEFR, DAEFRConfig
from daefr.atomic import write_report
from daefr.cli.common import float_range, int_range
from daefr.cli.train import main as train_main
from daefr.quality.checkpoint import load_conditioned_model
from daefr.quality.demo_data import held_out_degraded, write_training_faces
from daefr.quality.scorer import build_scorer
from daefr.quality.sweep import score_sweep
from daefr.seeded_weights import seed_model_
from daefr.training.metrics import read_log

COMMON = "--preset tiny --batch-size 2 --device cpu --num-workers 0 -q --quality-scorer brisque".split()


def train_daefr(root: Path, faces: Path, steps: int, timings: dict) -> Path:
    """A tiny DAEFR trained here: codebook (HQ branch ``steps``, LQ 1) -> association 1 -> fusion 20."""
    plain = "--preset tiny --batch-size 2 --device cpu --num-workers 0 -q --base-lr 2e-4".split()
    init: list[str] = []
    for stage, extra in (
        (
            "codebook",
            ["--steps", str(steps), "--lq-steps", "1", "--perceptual", "none", "--disc-start", "100000"],
        ),
        ("association", ["--steps", "1", "--perceptual", "none"]),
        ("fusion", ["--steps", "20"]),
    ):
        tic = time.perf_counter()
        out = root / stage
        if train_main([stage, "--data", str(faces), "--out", str(out), *init, *extra, *plain]) != 0:
            raise SystemExit(f"{stage} failed")
        timings[stage] = round(time.perf_counter() - tic, 1)
        init = ["--init", str(out / "last.pt")]
    return root / "fusion" / "last.pt"


def run(
    root: Path, codebook_steps: int, fusion_steps: int, threshold: float, lr: float, daefr_steps: int
) -> dict:
    faces = root / "faces"
    write_training_faces(faces)
    timings: dict[str, float] = {}
    if daefr_steps > 0:
        init = train_daefr(root, faces, daefr_steps, timings)
        origin = f"tiny DAEFR trained here (codebook {daefr_steps} steps, association 1, fusion 20)"
    else:
        init = root / "plain.pt"
        model = seed_model_(DAEFR(DAEFRConfig.from_name("tiny", training_modules=True)), "iqp-tiny")
        torch.save(model.state_dict(), init)
        origin = "seeded random tiny DAEFR (salt iqp-tiny)"
    flags = [*COMMON, "--quality-threshold", str(threshold), "--base-lr", str(lr)]
    for stage, start, steps in (
        ("iqp-codebook", init, codebook_steps),
        ("iqp-fusion", root / "iqp-codebook" / "last.pt", fusion_steps),
    ):
        tic = time.perf_counter()
        code = train_main(
            [
                stage,
                "--data",
                str(faces),
                "--out",
                str(root / stage),
                "--init",
                str(start),
                "--steps",
                str(steps),
                "--save-every",
                str(steps),
                *flags,
            ]
        )
        if code != 0:
            raise SystemExit(f"{stage} failed with exit {code}")
        timings[stage] = round(time.perf_counter() - tic, 1)
    model = load_conditioned_model(root / "iqp-fusion" / "iqpfr.pt", "tiny")
    lo, hi = (float(v) for v in model.iqp.quality_range)
    qualities = sorted({0.0, round(lo, 4), round((lo + hi) / 2, 4), round(hi, 4), 1.0})
    rows = score_sweep(model, build_scorer("brisque"), held_out_degraded(), qualities)
    return {
        "settings": {
            "codebook_steps": codebook_steps,
            "fusion_steps": fusion_steps,
            "threshold": threshold,
            "base_lr": lr,
            "batch_size": 2,
            "init": origin,
            "scorer": "brisque 0.2.0, score = clip(1 - raw/100, 0, 1)",
            "training_faces": len(list(faces.iterdir())),
            "held_out_faces": 4,
        },
        "trained_quality_range": [lo, hi],
        "curves": {s: read_log(root / s / "log.jsonl") for s in ("iqp-codebook", "iqp-fusion")},
        "sweep": [r.__dict__ for r in rows],
        "seconds": timings,
        "cpu": _cpu(),
        "torch": torch.__version__,
    }


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def text(report: dict) -> str:
    s = report["settings"]
    lines = [
        f"Tiny IQPFR run (CPU: {report['cpu']}, torch {report['torch']}); {s['init']}",
        f"iqp-codebook {s['codebook_steps']} steps, iqp-fusion {s['fusion_steps']} steps, batch 2, "
        f"S_thr {s['threshold']}, {s['training_faces']} training faces; seconds {report['seconds']}",
        f"trained S range: {report['trained_quality_range'][0]:.4f} .. {report['trained_quality_range'][1]:.4f}",
        "",
        "training curve (iqp-fusion): step  loss  ce  ce_plus  condition_S  sampled_score  best_of_4",
        "(condition_S: the batch's mean condition, the NR-IQA score of its decoded target codes)",
    ]
    for r in report["curves"]["iqp-fusion"]:
        lines.append(
            f"  {r['step']:4d}  {r['loss']:.3f}  {r['ce']:.3f}  {r['ce_plus']:.3f}  "
            f"{r.get('target_score', float('nan')):.3f}  "
            f"{r.get('sampled_score', float('nan')):.3f}  {r.get('sampled_best', float('nan')):.3f}"
        )
    lines += [
        "",
        "score vs S on 4 held-out degraded faces (BRISQUE score, higher is better)",
        "     S    mean     min     max  codes changed vs first row",
    ]
    for r in report["sweep"]:
        lines.append(
            f"  {r['quality']:.4f}  {r['mean']:.4f}  {r['min']:.4f}  {r['max']:.4f}  {r['codes_changed']:.3f}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="OUT.json and OUT.txt are written")
    p.add_argument("--codebook-steps", type=int_range(1), default=20)
    p.add_argument("--fusion-steps", type=int_range(1), default=60)
    p.add_argument("--threshold", type=float_range(0, 1, open_min=True, open_max=True), default=0.6)
    p.add_argument("--base-lr", type=float_range(0, 1, open_min=True), default=2e-4)
    p.add_argument(
        "--daefr-steps", type=int_range(0), default=0, help="train a tiny DAEFR first (0: seeded random)"
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = run(
            Path(tmp), args.codebook_steps, args.fusion_steps, args.threshold, args.base_lr, args.daefr_steps
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out.with_suffix(".json"), text(report), report)
    write_report(args.out.with_suffix(".txt"), text(report), report)
    print(text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
