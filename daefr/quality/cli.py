"""``--quality S`` for the CLIs: the flag, and the model it needs (parsing stays in each CLI).

A conditioned (IQPFR) checkpoint is recognised by its ``iqp.*`` keys and runs at ``--quality``
(default: the highest S it was trained for). ``--quality`` with a plain DAEFR checkpoint or
``--random-weights`` is a usage error (exit 2), never silently ignored.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import replace

import torch

from daefr.checkpoint import read_state_dict
from daefr.cli.common import UsageError, build_model, check_device
from daefr.model import DAEFR
from daefr.quality.checkpoint import model_from_state
from daefr.runtime.plan import PrecisionPlan

log = logging.getLogger(__name__)
NEEDS_CHECKPOINT = "--quality needs --ckpt with an IQPFR checkpoint (iqpfr.pt)"


def quality_value(text: str) -> float:
    """An argparse type: S in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"{text}: the quality S must be in [0, 1]")
    return value


def add_quality_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quality",
        type=quality_value,
        default=None,
        metavar="S",
        help="IQPFR-conditioned checkpoints only: target NR-IQA quality in [0, 1] "
        "(default: the highest the model was trained for)",
    )


def build_model_with_quality(args: argparse.Namespace, build_plain) -> DAEFR:
    """The model of ``--ckpt`` (plain or conditioned) or ``build_plain(args)`` for other weights;
    UsageError when ``--quality`` is given for a model that has no quality condition."""
    if args.quality is not None and not args.ckpt:  # before building: no RANDOM-weights warning first
        if getattr(args, "random_weights", False):
            raise UsageError(_plain_model_error("--random-weights"))
        raise UsageError(NEEDS_CHECKPOINT)
    if args.ckpt:
        state = read_state_dict(args.ckpt)
        model = model_from_state(
            state, args.preset, args.impl, check_device(args.device), source=str(args.ckpt)
        )
    else:
        model = build_plain(args)
    if args.quality is not None and model.config.quality is None:
        raise UsageError(_plain_model_error(args.ckpt or "--random-weights"))
    return model


def _plain_model_error(what: object) -> str:
    return (
        f"--quality: {what} is a plain DAEFR model, which has no quality condition; "
        "drop --quality or pass an IQPFR checkpoint (iqpfr.pt from daefr-train iqp-fusion)"
    )


def warn_outside_trained_range(model: DAEFR, quality: float | None) -> None:
    """S outside the range the model was trained on is allowed (it extrapolates) but said."""
    if quality is None or model.config.quality is None:
        return
    lo, hi = (float(v) for v in model.iqp.quality_range)
    if not lo - 1e-6 <= quality <= hi + 1e-6:
        log.warning(
            "--quality %g is outside the range this model was trained on [%.3f, %.3f]: "
            "it extrapolates the condition", quality, lo, hi,
        )  # fmt: skip


def quality_tensor(
    model: DAEFR, quality: float | None, batch: int, device: torch.device
) -> torch.Tensor | None:
    """(B,) S for a conditioned model (None for a plain one, or to use the model's default)."""
    if model.config.quality is None or quality is None:
        return None
    return torch.full((batch,), quality, dtype=torch.float32, device=device)


def plan_with_quality(args: argparse.Namespace, plan: PrecisionPlan) -> tuple[PrecisionPlan, DAEFR | None]:
    """(the plan, the model or None to build it lazily) for the weight flags and ``--quality``.

    An IQPFR-conditioned ``--ckpt`` runs on the torch backend at ``--quality`` (no exported
    end-to-end graph carries the quality input, so another backend would silently drop it:
    a named other backend is a UsageError). ``--quality`` with anything but a conditioned
    checkpoint is a UsageError. The same rules as daefr-restore's, for daefr-video and
    daefr-serve (whose torch backend calls ``model(image)``: ``iqp.run_quality`` carries S).
    """
    if not (args.ckpt or args.random_weights):
        if args.quality is not None:
            raise UsageError(NEEDS_CHECKPOINT)
        return plan, None
    model = build_model_with_quality(args, build_model)
    if model.config.quality is None:
        return plan, model
    if plan.backend not in ("auto", "torch"):
        raise UsageError(
            f"--backend {plan.backend}: an IQPFR-conditioned checkpoint runs on the torch backend only "
            "(no exported graph carries its quality input yet)"
        )
    warn_outside_trained_range(model, args.quality)
    model.iqp.run_quality = args.quality
    return replace(plan, backend="torch"), model
