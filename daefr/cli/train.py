"""``daefr-train STAGE --data DIR``: train one of DAEFR's three stages.

    daefr-train codebook    --data faces/ --perceptual lpips_vgg.pth --out runs/codebook
    daefr-train association --data faces/ --perceptual lpips_vgg.pth --init runs/codebook/last.pt --out runs/association
    daefr-train fusion      --data faces/ --init runs/association/last.pt --out runs/fusion
    torchrun --nproc-per-node 8 -m daefr.cli.train codebook ...   (one process per GPU)

The fusion stage writes ``daefr.pt``, loadable by ``daefr.load_model``. Exit 0 ok, 1 when
training fails (e.g. a non-finite loss), 2 on usage errors (flags, data, checkpoints).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from daefr.checkpoint import CheckpointError
from daefr.config import PRESETS
from daefr.training.assemble import AssemblyError
from daefr.training.branches import BranchStageError
from daefr.training.config import STAGE_DEFAULTS, STAGES, stage_config
from daefr.training.data import DataError, list_images
from daefr.training.distributed import shutdown
from daefr.training.fusion import FusionStageError
from daefr.training.loop import TrainingError
from daefr.training.losses import PerceptualWeightsError, load_perceptual
from daefr.training.precision import default_amp
from daefr.training.runner import train
from daefr.training.state import TrainingCheckpointError

PROG = "daefr-train"
NEEDS_INIT = ("association", "fusion")
NEEDS_PERCEPTUAL = ("codebook", "association")


class UsageError(ValueError):
    pass


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train a DAEFR stage: codebook -> association -> fusion.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("stage", choices=STAGES, help="which stage to train")
    p.add_argument("--data", type=Path, required=True, help="folder of (aligned) face images")
    p.add_argument("--preset", choices=sorted(PRESETS), default="official", help="model size")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/STAGE)")
    p.add_argument("--steps", type=int, default=None, help="total steps (default: the paper's for the stage)")
    p.add_argument("--batch-size", type=int, default=4, help="per process; lr = base-lr x batch x processes")
    p.add_argument("--base-lr", type=float, default=4.5e-6, help="4.5e-6 x 4 x 8 GPUs = the paper's 1.44e-4")
    p.add_argument("--init", type=Path, default=None, help="previous stage's checkpoint to start from")
    p.add_argument("--resume", type=Path, default=None, help="this stage's checkpoint to continue")
    p.add_argument(
        "--perceptual",
        default=None,
        metavar="PATH|none",
        help="LPIPS-VGG weights (torch.save(lpips.LPIPS(net='vgg').state_dict(), PATH)), or 'none' "
        "to train without the perceptual loss; required by the codebook and association stages",
    )
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument(
        "--amp", choices=("auto", "off", "bf16", "fp16"), default="auto", help="mixed precision (CUDA)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of weights, data order and degradations")
    p.add_argument(
        "--disc-start", type=int, default=None, help="step at which the GAN loss starts (stage default)"
    )
    p.add_argument("--impl", choices=("torch", "triton"), default="torch", help="nearest-code search")
    p.add_argument("--num-workers", type=int, default=4, help="data loader processes")
    p.add_argument("--log-every", type=int, default=50, help="log a summary line every N steps")
    p.add_argument("--save-every", type=int, default=5000, help="checkpoint every N steps (and at the end)")
    verbosity = p.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    verbosity.add_argument("-q", "--quiet", action="store_true", help="errors only, no progress bar")
    return p


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type not in ("cuda", "cpu"):
        raise UsageError(f"--device {name}: only cuda and cpu are supported")
    return device


def _check(args: argparse.Namespace) -> None:
    for flag in ("steps", "batch_size", "num_workers", "log_every", "save_every", "disc_start"):
        value = getattr(args, flag)
        minimum = 0 if flag in ("num_workers", "disc_start") else 1
        if value is not None and value < minimum:
            raise UsageError(f"--{flag.replace('_', '-')} {value}: must be >= {minimum}")
    if args.base_lr <= 0:
        raise UsageError(f"--base-lr {args.base_lr}: must be > 0")
    if not list_images(args.data):
        raise UsageError(f"--data {args.data}: no images in this folder")
    if args.init is not None and args.resume is not None:
        raise UsageError(
            "give --init (start from the previous stage) or --resume (continue this one), not both"
        )
    if args.stage in NEEDS_INIT and args.init is None and args.resume is None:
        raise UsageError(f"the {args.stage} stage starts from a previous checkpoint: pass --init PATH")
    for flag in ("init", "resume"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            raise UsageError(f"--{flag} {path}: no such file")
    if args.stage in NEEDS_PERCEPTUAL and args.perceptual is None:
        raise UsageError(
            f"the {args.stage} stage needs --perceptual PATH (LPIPS-VGG weights) or --perceptual none"
        )
    if args.stage not in NEEDS_PERCEPTUAL and args.perceptual is not None:
        raise UsageError(f"--perceptual: the {args.stage} stage has no perceptual loss")
    if args.stage == "fusion" and args.disc_start is not None:
        raise UsageError("--disc-start: the fusion stage has no discriminator")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _check(args)
        device = _device(args.device)
        amp = default_amp(device) if args.amp == "auto" else args.amp
        if device.type == "cpu" and amp != "off":
            raise UsageError(f"--amp {amp}: mixed precision needs CUDA; use --amp off on the CPU")
        perceptual = None
        loss: dict[str, object] = {}
        if args.perceptual is not None and args.perceptual.lower() == "none":
            loss["perceptual_weight"] = 0.0
        elif args.perceptual is not None:
            perceptual = load_perceptual(args.perceptual)
        if args.disc_start is not None:
            loss["disc_start"] = args.disc_start
        cfg = stage_config(
            args.stage,
            loss=loss,
            preset=args.preset,
            steps=args.steps or STAGE_DEFAULTS[args.stage].steps,
            batch_size=args.batch_size,
            base_lr=args.base_lr,
            seed=args.seed,
            amp=amp,
            impl=args.impl,
            num_workers=args.num_workers,
            log_every=args.log_every,
            save_every=args.save_every,
        )
    except (UsageError, DataError, PerceptualWeightsError, ValueError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    out = args.out or Path("runs") / args.stage
    bar = tqdm(total=cfg.steps, desc=cfg.stage, unit="step", disable=args.quiet or _rank() != 0)

    def on_step(step: int, logs: dict[str, float]) -> None:
        bar.n = step
        bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
        bar.refresh()

    try:
        result = train(
            cfg,
            args.data,
            out,
            device=device,
            init=args.init,
            resume_from=args.resume,
            perceptual=perceptual,
            on_step=on_step,
        )
    except (
        TrainingCheckpointError,
        CheckpointError,
        DataError,
        AssemblyError,
        BranchStageError,
        FusionStageError,
    ) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"{PROG}: failed: {err}", file=sys.stderr)
        return 1
    finally:
        bar.close()
        shutdown()
    if result.final is not None:
        logging.getLogger(PROG).info("final DAEFR weights: %s", result.final)
    return 0


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    raise SystemExit(main())
