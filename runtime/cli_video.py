"""``daefr-video IN -o OUT``: restore every face in a video with DAEFR."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from daefr.atomic import atomic_write_text, terminable
from daefr.checkpoint import CheckpointError
from daefr.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_logging_flags,
    add_model_flags,
    build_model,
    check_impl,
    float_range,
    int_range,
    setup_logging,
)
from daefr.cli.plan_flags import add_plan_flags, plan_from_args, sources_from_args
from daefr.cli.ray_flags import add_ray_flags, ray_options_from_args, run_batch, worker_spec_from_args
from daefr.image_io import is_regular_file
from daefr.model import DAEFR
from daefr.outputs import OutputError, check_distinct
from daefr.quality.cli import add_quality_flag, plan_with_quality
from daefr.runtime.auto import check_sources
from daefr.runtime.backends import BackendError, BackendUnavailable, Restorer
from daefr.runtime.face.detector import DetectorUnavailable, RetinaFaceDetector
from daefr.runtime.plan import PlanError, PrecisionPlan
from daefr.runtime.ray_pool import RayUsageError
from daefr.runtime.restorers import open_restorer
from daefr.runtime.segment_join import check_segmented_output
from daefr.runtime.segments import restore_video_segmented
from daefr.runtime.video import ENCODER_PRESETS, VideoOptions, restore_video
from daefr.runtime.video_input import VideoError, check_output_container, expected_frames, probe

log = logging.getLogger("daefr.video")
PROG = "daefr-video"
# A bound on thread counts: 10^8 intra-op threads made ONNX Runtime segfault; no CPU needs more.
MAX_THREADS = 256


def default_detect_workers() -> int:
    """One detection thread per 4 cores, 1 to 4: enough to keep a GPU fed at 720p."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def add_restorer_flags(parser: argparse.ArgumentParser, with_backend: bool = True) -> None:
    """Weights and precision-plan flags shared by daefr-video and daefr-bench."""
    add_model_flags(parser, weights_required=False)
    add_plan_flags(parser, with_backend)


def add_encoder_preset_flag(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    parser.add_argument(
        "--encoder-preset",
        choices=ENCODER_PRESETS,
        default=default,
        help="x264/x265 speed preset (default: the encoder's, medium); faster presets cost bitrate",
    )


def check_restorer_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``args.plan``, the one precision plan the flags ask for; parser.error (exit 2) with one
    line if the flags cannot make one, or a named backend lacks what it needs."""
    try:
        args.plan = plan_from_args(args)
        sources = sources_from_args(args)
        if args.plan.backend != "auto":
            check_sources(args.plan, sources)
        if sources.weights:
            check_impl(args.impl, torch.device(args.plan.device))
    except (PlanError, UsageError) as err:
        parser.error(str(err))


def build_restorer(
    args: argparse.Namespace,
    plan: PrecisionPlan,
    workdir: Path,
    expected_faces: int | None = None,
    model: DAEFR | None = None,
) -> tuple[Restorer, PrecisionPlan]:
    """(the restorer ``plan`` names, the plan with auto resolved); ``workdir`` holds an ONNX
    exported on the fly. ``expected_faces`` (None: unknown) lets auto weigh an export's cost;
    ``model``: one already built (``plan_with_quality``), else built from the flags if needed."""
    sources = replace(sources_from_args(args), expected_faces=expected_faces)
    return open_restorer(plan, sources, lambda: model if model is not None else build_model(args), workdir)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Restore every face in a video with DAEFR (frame count, rate and audio kept).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "input",
        type=Path,
        nargs="+",
        help="input video, or several videos / folders of them (then -o is a folder)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="output video (container from the suffix), or folder"
    )
    add_restorer_flags(parser)
    add_quality_flag(parser)
    parser.add_argument("--batch-size", type=int, default=4, help="faces per restore call, across frames")
    parser.add_argument("--smooth", action="store_true", help="smooth landmarks across frames (less jitter)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--codec", default="libx264", help="video encoder (ffv1 or libx264rgb for lossless)")
    parser.add_argument(
        "--crf", type=int, default=18, help="quality of libx264/libx265 (0-51, lower is better)"
    )
    add_encoder_preset_flag(parser)
    parser.add_argument(
        "--det-threshold",
        type=float_range(0, 1, open_min=True, open_max=True),
        default=0.9,
        help="face detection score threshold",
    )
    parser.add_argument(
        "--det-max-side", type=int_range(32), default=640, help="detect on frames downscaled to this side"
    )
    parser.add_argument(
        "--detect-workers",
        type=int_range(1, MAX_THREADS),
        default=default_detect_workers(),
        help="face-detection threads (frames are reordered after them)",
    )
    parser.add_argument(
        "--queue", type=int, default=8, help="frames each stage may run ahead (memory and latency bound)"
    )
    parser.add_argument("--stats", type=Path, help="latency/throughput JSON (default: OUTPUT.stats.json)")
    parser.add_argument(
        "--segments",
        type=int_range(1),
        help="restore in up to N segments split at keyframes, joined by remuxing (in this process, or "
        "spread over the actors with --ray; fewer where the clip has fewer keyframes)",
    )
    add_ray_flags(parser)
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    check_restorer_flags(parser, args)
    try:
        args.ray_options = ray_options_from_args(args)
        args.options = VideoOptions(
            batch_size=args.batch_size,
            smooth=args.smooth,
            max_frames=args.max_frames,
            codec=args.codec,
            crf=args.crf,
            encoder_preset=args.encoder_preset,
            queue_frames=args.queue,
            detect_workers=args.detect_workers,
        )
    except (ValueError, RayUsageError) as err:
        parser.error(str(err))
    # Several videos, a folder, or --ray: the batch path (daefr.runtime.ray_batch), which resumes.
    args.batch = args.ray_options is not None or len(args.input) > 1 or args.input[0].is_dir()
    if args.batch:
        if args.stats is not None and (len(args.input) > 1 or args.input[0].is_dir()):
            parser.error("--stats: with several videos each output's stats go beside it (OUTPUT.stats.json)")
        return args
    args.input = args.input[0]
    args.stats = args.stats or args.output.with_suffix(".stats.json")
    try:  # where the run writes is settled before anything is decoded or built
        check_output_container(args.output)
        if args.segments is not None:
            check_segmented_output(args.output, args.codec)
        check_distinct({"--output": args.output, "--stats": args.stats}, inputs=[args.input])
    except (VideoError, OutputError) as err:
        parser.error(str(err))
    return args


def run_video_batch(args: argparse.Namespace) -> int:
    """Several videos (or --ray): one after the other here, or spread over Ray actors."""
    from daefr.runtime.ray_batch import restore_videos
    from daefr.runtime.video_batch import plan_video_outputs, video_items

    try:
        items, unreadable = video_items(
            plan_video_outputs(args.input, args.output, args.stats), args.max_frames
        )
    except OutputError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USAGE

    def run(progress, on_total):  # noqa: ANN001, ANN202
        spec = worker_spec_from_args(
            args, args.plan, sources_from_args(args), det_threshold=args.det_threshold
        )
        result = restore_videos(
            args.ray_options, spec, items, args.options, progress, on_total, args.segments
        )
        result.total += len(unreadable)
        result.failures = unreadable + result.failures
        return result

    return run_batch(PROG, "frame", args.quiet, run, item="video")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args)
    if args.batch:
        return run_video_batch(args)
    if not is_regular_file(args.input):
        what = "not a regular file (a folder, FIFO or device)" if args.input.exists() else "no such file"
        print(f"{PROG}: {args.input}: {what}", file=sys.stderr)
        return EXIT_USAGE
    try:  # probe first: a corrupt input fails before any model is built
        total = expected_frames(probe(args.input))
    except VideoError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_FAILED
    try:
        detector = RetinaFaceDetector(score_threshold=args.det_threshold, max_side=args.det_max_side)
        # terminable: SIGTERM/SIGHUP while an ONNX is exported unwinds and removes the workdir
        with terminable(), tempfile.TemporaryDirectory(prefix="daefr-video-") as workdir:
            # One face per frame at least where faces are (frames without any cost no network time).
            faces = min(total, args.max_frames) if (total and args.max_frames) else total or None
            plan, model = plan_with_quality(args, args.plan)
            restorer, plan = build_restorer(args, plan, Path(workdir), faces, model)
    except (BackendUnavailable, DetectorUnavailable, CheckpointError, UsageError, PlanError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_FAILED
    if args.max_frames and total:
        total = min(total, args.max_frames)
    try:
        with tqdm(total=total, unit="frame", desc="restoring", disable=True if args.quiet else None) as bar:
            if args.segments is not None:
                stats = restore_video_segmented(
                    args.input, args.output, restorer, detector, args.options, args.segments, bar.update
                )
            else:
                stats = restore_video(
                    args.input, args.output, restorer, detector, args.options, progress=bar.update
                )
    except (VideoError, BackendError) as err:  # BackendError: NaN/Inf faces, a failed engine run
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        restorer.close()
    report = stats.to_dict()
    report["plan"] = plan.to_dict()
    report["weights"] = (
        f"RANDOM (seed {args.seed}): not a restoration"
        if args.random_weights
        else str(args.ckpt or args.onnx or args.engine_dir)
    )
    stats_path = args.stats
    atomic_write_text(stats_path, json.dumps(report, indent=2) + "\n")
    lat = stats.latency_ms
    log.info(
        "%d frames, %.1f frames/s; latency p50 %.1f ms, p95 %.1f ms, p99 %.1f ms; stats in %s",
        stats.frames, stats.fps, lat.get("p50", 0), lat.get("p95", 0), lat.get("p99", 0), stats_path,
    )  # fmt: skip
    if stats.code_stability is not None:
        log.info(
            "temporal stability: %.1f %% of codes unchanged between adjacent one-face frames (%d pairs)",
            100 * stats.code_stability, stats.code_stability_pairs,
        )  # fmt: skip
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
