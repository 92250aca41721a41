"""Pieces every CLI shares: logging set-up, model construction from flags, exit codes."""

from __future__ import annotations

import argparse
import logging

import torch

from daefr.checkpoint import load_model
from daefr.config import PRESETS, DAEFRConfig
from daefr.model import DAEFR
from daefr.seeded_weights import seed_model_

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad flags or inputs: printed as one line, exit code 2."""


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(format="%(levelname)s %(message)s")  # no-op if the root has handlers
    logging.getLogger("daefr").setLevel(level)


def add_model_flags(parser: argparse.ArgumentParser, weights_required: bool = True) -> None:
    """--ckpt | --random-weights, --seed, --preset, --device, --impl."""
    weights = parser.add_mutually_exclusive_group(required=weights_required)
    weights.add_argument("--ckpt", help="official DAEFR_model.ckpt, a state_dict .pth or .safetensors")
    weights.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random weights (a smoke test: they restore nothing)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-weights")
    parser.add_argument("--preset", default="official", choices=sorted(PRESETS), help="model size")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    parser.add_argument(
        "--impl", default="torch", choices=("torch", "triton"), help="attention/quantizer kernels"
    )


def build_model(args: argparse.Namespace) -> DAEFR:
    """The model the flags ask for, eval mode, on ``args.device``."""
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        raise UsageError(f"--device {args.device!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available on this machine")
    if args.ckpt:
        return load_model(args.ckpt, args.preset, impl=args.impl, device=device)
    logging.getLogger(__name__).warning(
        "using seeded RANDOM weights (seed %d): the output is not a restoration; "
        "pass --ckpt with the official DAEFR checkpoint for real results",
        args.seed,
    )
    return random_model(args.preset, args.seed, impl=args.impl).to(device)


def random_model(preset: str, seed: int, impl: str = "torch") -> DAEFR:
    """The seeded random-weights model every CLI builds for ``--random-weights --seed N``
    (the same N gives the same weights in daefr-restore, -export, -video and -report)."""
    model = DAEFR(DAEFRConfig.from_name(preset), impl=impl)
    return seed_model_(model, salt=f"daefr-random-{seed}").eval()
