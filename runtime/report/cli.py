"""``daefr-report``: run every available backend and precision on the same degraded faces and
write ``report.json`` and a self-contained ``report.html``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from daefr.atomic import atomic_write_text
from daefr.checkpoint import CheckpointError
from daefr.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_logging_flags,
    add_model_flags,
    build_model,
    setup_logging,
)
from daefr.cli.plan_flags import add_precision_flags, precision_from_args
from daefr.outputs import OutputError, check_output_dir
from daefr.quality.cli import add_quality_flag, build_model_with_quality
from daefr.quality.scorer import ScorerError, build_scorer
from daefr.runtime.plan import PlanError
from daefr.runtime.report.build import ReportConfig, collect
from daefr.runtime.report.html import render

log = logging.getLogger("daefr.report")


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="daefr-report",
        description="Accuracy against eager fp32 versus speed, for every backend and precision available here.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_model_flags(parser)
    add_precision_flags(parser)
    add_quality_flag(parser)
    parser.add_argument(
        "--quality-scorer",
        default="brisque",
        help="NR-IQA of each variant's output (the quality column): 'brisque', QualityNet weights, or 'none'",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for report.json and report.html")
    parser.add_argument("--faces", type=int, default=4, help="degraded faces to compare on")
    parser.add_argument("--batches", type=_batches, default=(1, 4, 8, 16, 32), help="throughput batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per measurement")
    parser.add_argument("--engine-dir", type=Path, help="TensorRT fp16 engines from daefr-export --fp16")
    parser.add_argument(
        "--plugin-engine-dir", type=Path, help="TensorRT engines from daefr-export --fp16 --plugins"
    )
    parser.add_argument(
        "--require-pass", action="store_true", help="exit 1 if an fp16 variant misses a quality bar"
    )
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    if args.faces < 1 or args.repeats < 1:
        parser.error("--faces and --repeats must be >= 1")
    try:
        precision_from_args(args)
    except PlanError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args)
    try:  # the output folder is checked before the (minutes of) measuring
        check_output_dir(args.out, [p for p in (args.engine_dir, args.plugin_engine_dir) if p])
        model = build_model_with_quality(args, build_model)
        if model.config.quality is not None:
            model.iqp.run_quality = args.quality
        scorer = None if args.quality_scorer.lower() == "none" else build_scorer(args.quality_scorer)
    except (CheckpointError, UsageError, OutputError, ScorerError) as err:
        print(f"daefr-report: {err}", file=sys.stderr)
        return EXIT_USAGE
    weights = (
        {"kind": "checkpoint", "source": str(args.ckpt)}
        if args.ckpt
        else {"kind": "random", "source": f"seeded random weights (seed {args.seed})"}
    )
    cfg = ReportConfig(
        faces=args.faces,
        batches=args.batches,
        repeats=args.repeats,
        seed=args.seed,
        engine_dirs={"trt fp16": args.engine_dir, "trt fp16 + plugins": args.plugin_engine_dir},
        precision=precision_from_args(args) if (args.precision or args.fp16) else None,
        scorer=scorer,
    )
    data = collect(model, args.preset, weights, next(model.parameters()).device, cfg)
    page = render(data)
    atomic_write_text(args.out / "report.json", json.dumps(data.summary, indent=1))
    atomic_write_text(args.out / "report.html", page)
    failed = []
    for row in data.summary["variants"]:
        bars = row.get("quality_bars")
        if bars:
            verdict = "PASS" if all(bars.values()) else "FAIL"
            acc = row["accuracy"]
            caveat = (
                "; random weights: the bars are meant for real ones" if weights["kind"] == "random" else ""
            )
            print(
                f"{row['name']}: {verdict} (codes {100 * acc['code_agreement']:.2f} %, "
                f"PSNR {acc['psnr_db']:.1f} dB{caveat})"
            )
            if verdict == "FAIL":
                failed.append(row["name"])
    condition = data.summary["quality_condition"]
    for r in (condition or {}).get("sweep") or []:
        print(f"S={r['quality']:.4f}: {data.summary['nr_iqa_scorer']} score of the output {r['mean']:.4f}")
    print(f"report: {args.out / 'report.html'}")
    return EXIT_FAILED if failed and args.require_pass else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
