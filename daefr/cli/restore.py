"""``daefr-restore``: restore aligned face images (files or folders) with a DAEFR checkpoint."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from daefr.checkpoint import CheckpointError
from daefr.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    add_logging_flags,
    add_model_flags,
    build_model,
    int_range,
    setup_logging,
)
from daefr.cli.plan_flags import add_plan_flags, plan_from_args, sources_from_args
from daefr.cli.ray_flags import add_ray_flags, ray_options_from_args, run_batch, worker_spec_from_args
from daefr.image_io import list_images
from daefr.model import DAEFR
from daefr.outputs import OutputError, check_output_dir, plan_outputs
from daefr.quality.cli import add_quality_flag, plan_with_quality
from daefr.runtime.auto import check_sources
from daefr.runtime.backends import BackendError, BackendUnavailable, PlanError
from daefr.runtime.backends.base import NonFiniteOutput
from daefr.runtime.image_files import restore_face_files, restore_photo_files
from daefr.runtime.plan import PrecisionPlan
from daefr.runtime.ray_pool import RayUsageError
from daefr.runtime.restorers import open_restorer

log = logging.getLogger("daefr.restore")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="daefr-restore",
        description="Restore aligned face images with DAEFR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument("-o", "--out-dir", type=Path, required=True, help="where restored PNGs go")
    add_model_flags(parser, weights_required=False)
    add_plan_flags(parser)
    add_quality_flag(parser)
    parser.add_argument("--batch-size", type=int_range(1), default=4, help="faces per forward pass")
    parser.add_argument(
        "--unaligned",
        action="store_true",
        help="inputs are whole photos: detect every face, align, restore and paste back",
    )
    parser.add_argument(
        "--det-max-side",
        type=int_range(32),
        default=1280,
        help="--unaligned: detect on photos downscaled to this side (raise it for small faces in big photos)",
    )
    add_ray_flags(parser)
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    try:
        args.ray_options = ray_options_from_args(args)
        args.plan = plan_from_args(args)
        args.sources = sources_from_args(args)
        if args.plan.backend != "auto":
            check_sources(args.plan, args.sources)
    except (PlanError, RayUsageError) as err:
        parser.error(str(err))
    return args


def plan_for_weights(args: argparse.Namespace) -> tuple[PrecisionPlan, DAEFR | None]:
    """(the plan, the model) for the weight flags and ``--quality`` (``plan_with_quality``'s
    rules); the photo pipeline has no quality condition yet."""
    if args.quality is not None and args.unaligned and (args.ckpt or args.random_weights):
        raise UsageError("--quality with --unaligned: the photo pipeline has no quality condition yet")
    return plan_with_quality(args, args.plan)


def restore_on_ray(args: argparse.Namespace, outputs: dict[Path, Path]) -> int:
    """--ray: the same restoration spread over Ray actors (daefr.runtime.ray_batch); resumes."""
    from daefr.runtime.ray_batch import restore_images

    def run(progress, on_total):  # noqa: ANN001, ANN202
        sources = replace(args.sources, expected_faces=len(outputs))
        spec = worker_spec_from_args(args, args.plan, sources)
        return restore_images(
            args.ray_options, spec, outputs, args.batch_size, args.unaligned, progress, on_total
        )

    return run_batch("daefr-restore", "photo" if args.unaligned else "face", args.quiet, run)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args)
    paths = list_images(args.inputs)
    missing = [p for p in paths if not p.exists()]
    if missing:
        print(f"daefr-restore: no such file: {missing[0]}", file=sys.stderr)
        return EXIT_USAGE
    if not paths:
        print("daefr-restore: no images found in the given inputs", file=sys.stderr)
        return EXIT_USAGE
    try:  # where every output goes is settled before the model is built
        check_output_dir(args.out_dir, [p for p in args.inputs if p.is_dir()])
        outputs = plan_outputs(paths, args.out_dir)
        if args.ray_options is not None:
            return restore_on_ray(args, outputs)
        with tempfile.TemporaryDirectory(prefix="daefr-restore-") as workdir:
            # Aligned inputs are one face each; photos hold at least one.
            sources = replace(args.sources, expected_faces=len(paths))
            plan, model = plan_for_weights(args)
            restorer, _ = open_restorer(
                plan, sources, lambda: model if model is not None else build_model(args), Path(workdir)
            )
    except (CheckpointError, UsageError, OutputError, PlanError, BackendUnavailable) as err:
        print(f"daefr-restore: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BackendError as err:
        print(f"daefr-restore: {err}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if args.unaligned:
            failures = restore_photo_files(restorer, outputs, args.batch_size, args.det_max_side)
        else:
            failures = restore_face_files(restorer, outputs, args.batch_size)
    except NonFiniteOutput as err:
        print(f"daefr-restore: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:  # disk full or the folder removed mid-run: nothing half-written
        print(f"daefr-restore: writing failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        restorer.close()
    done = len(paths) - len(failures)
    log.info("restored %d of %d images into %s", done, len(paths), args.out_dir)
    if failures:
        print(f"daefr-restore: {len(failures)} of {len(paths)} files failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
