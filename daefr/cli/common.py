"""Pieces every CLI shares: logging set-up, model construction from flags, exit codes."""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable

import torch

from daefr.checkpoint import load_model
from daefr.config import PRESETS, DAEFRConfig
from daefr.model import DAEFR
from daefr.seeded_weights import seed_model_

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad flags or inputs: printed as one line, exit code 2."""


def int_range(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` for an int within [minimum, maximum]; the message names the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{value}: must be >= {minimum}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value}: must be <= {maximum}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def float_range(
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    open_min: bool = False,
    open_max: bool = False,
) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite float within the bounds (``open_*``: bound excluded)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text}: must be a finite number")
        if minimum is not None and (value < minimum or (open_min and value == minimum)):
            raise argparse.ArgumentTypeError(f"{value}: must be {'>' if open_min else '>='} {minimum}")
        if maximum is not None and (value > maximum or (open_max and value == maximum)):
            raise argparse.ArgumentTypeError(f"{value}: must be {'<' if open_max else '<='} {maximum}")
        return value

    parse.__name__ = "number"
    return parse


def check_device(name: str) -> torch.device:
    """The ``--device`` as a torch device that this machine can compute on (cpu or cuda[:N])."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--device {name!r}: {err}") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"--device {name}: only cpu and cuda[:N] are supported")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {name}: no CUDA device is available on this machine; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def check_impl(impl: str, device: torch.device) -> None:
    """``--impl triton`` needs Triton, and on the CPU its interpreter (TRITON_INTERPRET=1)."""
    if impl != "triton":
        return
    try:
        import triton  # noqa: F401
    except ImportError:
        raise UsageError("--impl triton: Triton is not installed (pip install 'daefr[triton]')") from None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise UsageError(
            "--impl triton on the CPU runs only under Triton's interpreter: set TRITON_INTERPRET=1 "
            "(slow), or use --impl torch"
        )


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
    parser.add_argument("--seed", type=int_range(0, 2**63 - 1), default=0, help="seed for --random-weights")
    parser.add_argument("--preset", default="official", choices=sorted(PRESETS), help="model size")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device"
    )
    parser.add_argument(
        "--impl", default="torch", choices=("torch", "triton"), help="attention/quantizer kernels"
    )


def build_model(args: argparse.Namespace) -> DAEFR:
    """The model the flags ask for, eval mode, on ``args.device``."""
    device = check_device(args.device)
    check_impl(args.impl, device)
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
