"""``daefr-train STAGE --data DIR``: train one of DAEFR's three stages.

    daefr-train codebook    --data faces/ --perceptual lpips_vgg.pth --out runs/codebook
    daefr-train association --data faces/ --perceptual lpips_vgg.pth --init runs/codebook/last.pt --out runs/association
    daefr-train fusion      --data faces/ --init runs/association/last.pt --out runs/fusion
    torchrun --nproc-per-node 8 -m daefr.cli.train codebook ...   (one process per GPU)
    daefr-train iqp-codebook --data faces/ --init runs/fusion/last.pt --quality-scorer brisque --out runs/iqp-codebook
    daefr-train iqp-fusion   --data faces/ --init runs/iqp-codebook/last.pt --quality-scorer brisque --out runs/iqp-fusion

The two iqp-* stages add IQPFR's image-quality prior as a plug-in (``daefr.quality``); the
last writes ``iqpfr.pt``, for ``daefr-restore --quality S``.

The fusion stage writes ``daefr.pt``, loadable by ``daefr.load_model``. Defaults train what the
original code trains (``daefr.training.config``) with the paper's recipe; ``--recipe released``
takes the public configs' batch, lr and lengths. Exit 0 ok, 1 when training fails (a non-finite
loss or weight: the last good checkpoint is kept), 2 on usage errors (flags, data, checkpoints).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import torch
from tqdm import tqdm

from daefr.checkpoint import CheckpointError
from daefr.cli.common import float_range, int_range
from daefr.config import PRESETS
from daefr.quality.scorer import QualityScorer, ScorerError, build_scorer
from daefr.training.assemble import AssemblyError
from daefr.training.branches import BranchStageError
from daefr.training.config import (
    AMP_MODES,
    CODEBOOK_FORMS,
    IQP_STAGES,
    RECIPE_NAMES,
    RECIPES,
    STAGES,
    TrainConfig,
    stage_config,
)
from daefr.training.data import DataError, list_images
from daefr.training.distributed import shutdown
from daefr.training.fusion import FINAL_NAME, FusionStageError
from daefr.training.iqp_common import IQP_FINAL_NAME, IQPStageError
from daefr.training.loop import CHECKPOINT_NAME, TrainingError
from daefr.training.losses import PerceptualWeightsError, load_perceptual
from daefr.training.runner import train
from daefr.training.state import TrainingCheckpointError

PROG = "daefr-train"
NEEDS_INIT = ("association", "fusion", *IQP_STAGES)
NEEDS_PERCEPTUAL = ("codebook", "association")
MAX_SEED = 2**32 - 1
MAX_WORKERS = 128


class UsageError(ValueError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (``daefr-train: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (those flags' help says what happens without them)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Train a DAEFR stage: codebook -> association -> fusion. Defaults train what "
        "the original code trains, with the paper's batch, lr and lengths (--recipe paper).",
        formatter_class=_Defaults,
    )
    p.add_argument("stage", choices=STAGES, help="which stage to train")
    p.add_argument("--data", type=Path, required=True, help="folder of (aligned) face images")
    p.add_argument("--preset", choices=sorted(PRESETS), default="official", help="model size")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: runs/STAGE)")
    p.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default="paper",
        help="batch, lr and steps: 'paper' (8 GPUs x 4, lr 1.44e-4, 700K/400K/70K/100K steps) or "
        "'released' (the public configs: 4 GPUs, batch 3/2/2, their epochs as steps)",
    )
    p.add_argument("--steps", type=int_range(1), default=None, help="total steps (default: the recipe's)")
    p.add_argument(
        "--lq-steps",
        type=int_range(1),
        default=None,
        help="codebook stage: steps of the LQ branch (default: the recipe's, or --steps when given)",
    )
    p.add_argument(
        "--batch-size", type=int_range(1), default=None, help="per process (default: the recipe's)"
    )
    p.add_argument(
        "--base-lr",
        type=float_range(0, open_min=True),
        default=None,
        help="lr = base-lr x batch x processes (default: the recipe's 4.5e-6)",
    )
    p.add_argument("--init", type=Path, default=None, help="previous stage's checkpoint to start from")
    p.add_argument("--resume", type=Path, default=None, help="this stage's checkpoint to continue")
    p.add_argument(
        "--perceptual",
        default=None,
        metavar="PATH|none",
        help="LPIPS-VGG weights (torch.save(lpips.LPIPS(net='vgg').state_dict(), PATH)), or 'none' "
        "to train without the perceptual loss; required by the codebook and association stages",
    )
    p.add_argument(
        "--perceptual-dropout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="LPIPS heads' Dropout(0.5) on while training, as in the original",
    )
    p.add_argument(
        "--codebook-loss",
        choices=CODEBOOK_FORMS,
        default="original",
        help="'original': weight 1 on the commitment term, beta on the codebook term (the code "
        "that made the released weights); 'paper': Eq. 2 as printed",
    )
    p.add_argument(
        "--freeze-encoders",
        action="store_true",
        help="fusion stage: train only MHCA + transformer (the paper's text) instead of the "
        "original's encoders + MHCA + transformer",
    )
    p.add_argument(
        "--quality-scorer",
        default=None,
        metavar="brisque|PATH",
        help="iqp stages: the NR-IQA scorer, 'brisque' (offline) or QualityNet weights; required there",
    )
    p.add_argument(
        "--quality-threshold",
        type=float_range(0, 1, open_min=True, open_max=True),
        default=None,
        help="iqp stages: S_thr, faces scoring above it teach the HQ+ codebook (default 0.8)",
    )
    p.add_argument(
        "--quality-weight",
        type=float_range(0),
        default=None,
        help="iqp-fusion: weight of the discrete-code quality loss (default 1; 0 turns it off)",
    )
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument(
        "--amp",
        choices=AMP_MODES,
        default="off",
        help="mixed precision on CUDA; codes, targets and losses stay fp32",
    )
    p.add_argument(
        "--seed", type=int_range(0, MAX_SEED), default=0, help="seed of weights, data order and degradations"
    )
    p.add_argument(
        "--disc-start",
        type=int_range(0),
        default=None,
        help="step at which the GAN loss starts (stage default)",
    )
    p.add_argument("--impl", choices=("torch", "triton"), default="torch", help="nearest-code search")
    p.add_argument("--num-workers", type=int_range(0, MAX_WORKERS), default=4, help="data loader processes")
    p.add_argument("--log-every", type=int_range(1), default=50, help="log a summary line every N steps")
    p.add_argument(
        "--save-every", type=int_range(1), default=5000, help="checkpoint every N steps (and at the end)"
    )
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
    if args.lq_steps is not None and args.stage != "codebook":
        raise UsageError("--lq-steps: only the codebook stage has an LQ branch of its own length")
    if args.freeze_encoders and args.stage != "fusion":
        raise UsageError("--freeze-encoders: only the fusion stage trains the associated encoders")
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
    if args.stage in ("fusion", *IQP_STAGES) and args.disc_start is not None:
        raise UsageError(f"--disc-start: the {args.stage} stage has no discriminator")
    if args.stage in IQP_STAGES and args.quality_scorer is None:
        raise UsageError(f"the {args.stage} stage needs --quality-scorer brisque (or NR-IQA weights)")
    for flag in ("quality_scorer", "quality_threshold"):
        if args.stage not in IQP_STAGES and getattr(args, flag) is not None:
            raise UsageError(
                f"--{flag.replace('_', '-')}: only the iqp-codebook and iqp-fusion stages use it"
            )
    if args.stage != "iqp-fusion" and args.quality_weight is not None:
        raise UsageError("--quality-weight: only the iqp-fusion stage has the quality loss")


def _config(args: argparse.Namespace, amp: str, loss: dict[str, object]) -> TrainConfig:
    """The TrainConfig of the flags: the recipe's batch, lr and steps unless given."""
    steps = args.steps or RECIPES[args.recipe].steps[args.stage]
    if args.lq_steps is not None and args.lq_steps > steps:
        raise UsageError(f"--lq-steps {args.lq_steps}: must be <= the {steps} steps of the run (--steps)")
    overrides: dict[str, object] = {}
    for flag in ("steps", "lq_steps", "batch_size", "base_lr"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.stage == "fusion":
        overrides["freeze_encoders"] = args.freeze_encoders
    if args.quality_threshold is not None:
        overrides["quality_threshold"] = args.quality_threshold
    if args.quality_weight is not None:
        loss["quality_weight"] = args.quality_weight
    if args.stage in NEEDS_PERCEPTUAL:
        loss.update(codebook_form=args.codebook_loss, perceptual_dropout=args.perceptual_dropout)
    return stage_config(
        args.stage,
        loss=loss,
        recipe=args.recipe,
        preset=args.preset,
        seed=args.seed,
        amp=amp,
        impl=args.impl,
        num_workers=args.num_workers,
        log_every=args.log_every,
        save_every=args.save_every,
        **overrides,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a one-line usage error (2)
        return int(exit_.code or 0)
    level = logging.DEBUG if args.verbose else logging.ERROR if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _check(args)
        device = _device(args.device)
        amp = args.amp
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
        cfg = _config(args, amp, loss)
        cfg.learning_rate(int(os.environ.get("WORLD_SIZE", "1")))  # ValueError if unusable
        scorer: QualityScorer | None = None
        if args.quality_scorer is not None:
            scorer = build_scorer(args.quality_scorer)
    except (UsageError, DataError, PerceptualWeightsError, ScorerError, ValueError) as err:
        _error(err)
        return 2
    out = args.out or Path("runs") / args.stage
    try:
        _check_outputs(args, out)
    except UsageError as err:
        _error(err)
        return 2
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
            scorer=scorer,
        )
    except (
        TrainingCheckpointError,
        CheckpointError,
        DataError,
        AssemblyError,
        BranchStageError,
        FusionStageError,
        IQPStageError,
    ) as err:
        _error(err)
        return 2
    except TrainingError as err:
        _error(err, "failed")
        return 1
    except KeyboardInterrupt:
        _error(f"interrupted; {out / CHECKPOINT_NAME} holds the last completed save, if any", "stopped")
        return 130
    finally:
        bar.close()
        shutdown()
    if result.final is not None:
        logging.getLogger(PROG).info("final DAEFR weights: %s", result.final)
    return 0


def _error(err: Exception, kind: str = "error") -> None:
    """One line on stderr, whatever the message holds (torch's own errors span lines)."""
    print(f"{PROG}: {kind}: {' '.join(str(err).split())}", file=sys.stderr)


def _check_outputs(args: argparse.Namespace, out: Path) -> None:
    """The output folder exists (made now) and is writable, and no output is an input:
    ``--init`` and ``--perceptual`` must not be this run's last.pt, daefr.pt or log.jsonl
    (``--resume`` continues its own last.pt, so it may)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot make this folder ({err.strerror}); choose another") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: not writable; choose another folder")
    names = (CHECKPOINT_NAME, FINAL_NAME, IQP_FINAL_NAME, "log.jsonl")
    outputs = {(out / name).resolve() for name in names}
    for flag in ("init", "perceptual", "quality_scorer"):
        value = getattr(args, flag)
        if value is not None and str(value).lower() != "none" and Path(value).resolve() in outputs:
            raise UsageError(
                f"--{flag.replace('_', '-')} {value}: this run writes that file; copy it or choose another --out"
            )


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    raise SystemExit(main())
