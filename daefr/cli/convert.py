"""``daefr-convert``: official checkpoint -> safetensors with the inference tensors only."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from daefr.checkpoint import CheckpointError, load_model, save_safetensors
from daefr.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_logging_flags, setup_logging
from daefr.config import PRESETS
from daefr.outputs import OutputError, check_output_file

log = logging.getLogger("daefr.convert")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="daefr-convert",
        description="Convert a DAEFR checkpoint to a safetensors file of the inference tensors.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("ckpt", type=Path, help="DAEFR_model.ckpt, a state_dict .pth or .safetensors")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the .safetensors to write")
    parser.add_argument("--preset", default="official", choices=sorted(PRESETS))
    parser.add_argument("--fp16", action="store_true", help="store float16 tensors (half the size)")
    add_logging_flags(parser)
    args = parser.parse_args(argv)
    setup_logging(args)
    if args.output.suffix != ".safetensors":
        print(f"daefr-convert: {args.output}: the output must end in .safetensors", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_output_file(args.output, [args.ckpt])
        model = load_model(args.ckpt, args.preset)
    except (CheckpointError, OutputError) as err:
        print(f"daefr-convert: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        count = save_safetensors(model, args.output, half=args.fp16)
    except CheckpointError as err:
        print(f"daefr-convert: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:
        print(f"daefr-convert: {args.output}: writing failed ({err})", file=sys.stderr)
        return EXIT_FAILED
    size_mb = args.output.stat().st_size / 2**20
    log.info("wrote %d tensors to %s (%.1f MiB)", count, args.output, size_mb)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
