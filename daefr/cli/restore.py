"""``daefr-restore``: restore aligned face images (files or folders) with a DAEFR checkpoint."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from tqdm import tqdm

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
from daefr.image_io import ImageReadError, list_images, read_rgb, rgb_to_tensor, tensor_to_rgb, write_rgb
from daefr.quality.cli import add_quality_flag, build_model_with_quality, quality_tensor

log = logging.getLogger("daefr.restore")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="daefr-restore",
        description="Restore aligned face images with DAEFR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    parser.add_argument("-o", "--out-dir", type=Path, required=True, help="where restored PNGs go")
    add_model_flags(parser)
    add_quality_flag(parser)
    parser.add_argument("--batch-size", type=int, default=4, help="faces per forward pass")
    parser.add_argument(
        "--unaligned",
        action="store_true",
        help="inputs are whole photos: detect every face, align, restore and paste back",
    )
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    return args


def restore_files(
    model: torch.nn.Module, paths: list[Path], out_dir: Path, batch_size: int, quality: float | None = None
) -> list[str]:
    """Restore every readable file; returns one message per file that failed."""
    resolution = model.config.vqgan.resolution
    device = next(model.parameters()).device
    failures: list[str] = []
    progress = tqdm(total=len(paths), unit="face", desc="restoring", disable=None)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        names, images = [], []
        for path in chunk:
            try:
                images.append(rgb_to_tensor(read_rgb(path), resolution, name=str(path)))
                names.append(path)
            except ImageReadError as err:
                failures.append(str(err))
                log.error("skipped %s", err)
        if images:
            with torch.inference_mode():
                batch = torch.stack(images).to(device)
                result = model(batch, quality_tensor(model, quality, len(images), device))
            for path, restored in zip(names, result.restored, strict=True):
                write_rgb(out_dir / f"{path.stem}.png", tensor_to_rgb(restored))
        progress.update(len(chunk))
    progress.close()
    return failures


def restore_photos(model: torch.nn.Module, paths: list[Path], out_dir: Path, batch_size: int) -> list[str]:
    """Whole photos: every detected face restored and pasted back; one message per failure."""
    from daefr.runtime.backends import create_restorer
    from daefr.runtime.face.detector import RetinaFaceDetector
    from daefr.runtime.photo import restore_photo

    detector = RetinaFaceDetector()
    restorer = create_restorer("torch", model=model, device=next(model.parameters()).device)
    failures: list[str] = []
    for path in tqdm(paths, unit="photo", desc="restoring", disable=None):
        try:
            rgb = read_rgb(path)
        except ImageReadError as err:
            failures.append(str(err))
            log.error("skipped %s", err)
            continue
        write_rgb(out_dir / f"{path.stem}.png", restore_photo(rgb, restorer, detector, batch_size))
    return failures


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
    try:
        if args.quality is not None and args.unaligned:
            raise UsageError("--quality with --unaligned: the photo pipeline has no quality condition yet")
        model = build_model_with_quality(args, build_model)
    except (CheckpointError, UsageError) as err:
        print(f"daefr-restore: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.unaligned:
        failures = restore_photos(model, paths, args.out_dir, args.batch_size)
    else:
        failures = restore_files(model, paths, args.out_dir, args.batch_size, args.quality)
    done = len(paths) - len(failures)
    log.info("restored %d of %d images into %s", done, len(paths), args.out_dir)
    if failures:
        print(f"daefr-restore: {len(failures)} of {len(paths)} files failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
