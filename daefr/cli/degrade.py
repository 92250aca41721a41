"""``daefr-degrade IN_DIR -o OUT_DIR``: write a degraded copy of every image of a folder
(paper Eq. 8), e.g. to build a synthetic evaluation set.

Each output is a PNG named after its input; the parameters drawn for each file go to
``OUT_DIR/degradation.json``. A file's randomness depends only on ``--seed`` and its name,
so adding files to the folder does not change the others. Exit 0 ok, 1 if any image could
not be read or written, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from daefr.atomic import atomic_path, atomic_write_text
from daefr.cli.common import int_range
from daefr.degradation import STAGE_DEGRADATIONS, random_degrade, to_uint8
from daefr.image_io import ImageReadError, images_in_folder, read_image
from daefr.outputs import OutputError, check_output_dir, check_output_file, plan_outputs

log = logging.getLogger("daefr.degrade")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daefr-degrade",
        description="Write degraded copies of a folder of faces (DAEFR paper, Eq. 8).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("in_dir", type=Path, help="folder of input images")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder (PNG files)")
    parser.add_argument("--seed", type=int_range(0, 2**32 - 1), default=0, help="random seed")
    parser.add_argument(
        "--stage",
        choices=sorted(STAGE_DEGRADATIONS),
        default="fusion",
        help="whose parameter ranges to use (fusion: sigma [0.1,15], r [0.8,30], q [30,100])",
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="log every file")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors only, no progress bar")
    return parser


def file_rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    if not args.in_dir.is_dir():
        print(f"daefr-degrade: error: {args.in_dir}: no such folder", file=sys.stderr)
        return 2
    paths = images_in_folder(args.in_dir)
    if not paths:
        print(f"daefr-degrade: error: {args.in_dir}: no images to degrade", file=sys.stderr)
        return 2
    meta_path = args.out / "degradation.json"
    try:  # every output is settled before the first image is read
        check_output_dir(args.out, [args.in_dir])
        outputs = plan_outputs(paths, args.out)
        check_output_file(meta_path, paths, what="the parameters file")
    except OutputError as err:
        print(f"daefr-degrade: error: {err}", file=sys.stderr)
        return 2

    cfg = STAGE_DEGRADATIONS[args.stage]
    records: dict[str, dict[str, object]] = {}
    failed = 0
    for path in tqdm(paths, desc="degrade", unit="img", disable=args.quiet):
        try:
            image = read_image(path).astype(np.float32) / 255.0
            result = random_degrade(image, cfg, file_rng(args.seed, path.name))
            target = outputs[path]
            with atomic_path(target) as tmp:
                Image.fromarray(to_uint8(result.image)).save(tmp, format="PNG")
        except (ImageReadError, OSError) as err:
            log.error("%s", err)
            failed += 1
            continue
        records[path.name] = {"output": target.name, **result.params.to_dict()}
        log.debug("%s -> %s %s", path.name, target, result.params)
    meta = {"seed": args.seed, "stage": args.stage, "files": records}
    atomic_write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    log.info("wrote %d degraded images to %s (%d failed)", len(records), args.out, failed)
    if failed:
        print(f"daefr-degrade: {failed} of {len(paths)} files failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
