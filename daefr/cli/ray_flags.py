"""``--ray [ADDRESS]``, ``--ray-actors``, ``--retries``: their parsing, and the CLI edge of a batch
run (progress bar, summary, exit code) shared by daefr-restore and daefr-video."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from tqdm import tqdm

from daefr.checkpoint import CheckpointError
from daefr.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError, int_range
from daefr.runtime.auto import Sources
from daefr.runtime.backends import BackendError, BackendUnavailable, PlanError
from daefr.runtime.plan import PrecisionPlan
from daefr.runtime.ray_batch import BatchResult, RayOptions, WorkerFailed
from daefr.runtime.ray_jobs import ModelSpec, WorkerSpec
from daefr.runtime.ray_pool import MAX_ACTORS, MAX_RETRIES, RayUnavailable, RayUsageError

log = logging.getLogger("daefr.ray")
DEFAULT_RETRIES = 2


class _RayAddress(argparse.Action):
    """``--ray [ADDRESS]`` takes the next word: an input path there is a usage error that says so
    (argparse would otherwise report the inputs as missing)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001, ANN204
        if values and os.path.exists(values) and values != "auto":
            parser.error(
                f"--ray {values}: that is an input path, not a Ray address; put --ray after the inputs "
                "(or write --ray=ADDRESS)"
            )
        setattr(namespace, self.dest, values)


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Ray (batch runs spread over actors; re-runs skip complete outputs)")
    group.add_argument(
        "--ray", nargs="?", const="", default=None, metavar="ADDRESS", action=_RayAddress,
        help="run on Ray: without ADDRESS a local Ray in this process (shut down at the end); "
        "host:port from `ray start --head` (or auto) joins that cluster. Put it after the inputs "
        "or write --ray=ADDRESS",
    )  # fmt: skip
    group.add_argument(
        "--ray-actors", type=int_range(1, MAX_ACTORS), default=None, metavar="N",
        help="actors, each with one restorer (default: one per GPU, or one per --threads CPUs); "
        "on CPUs --threads is each actor's thread count (0: the CPUs shared out, 4 each by default)",
    )  # fmt: skip
    group.add_argument(
        "--retries", type=int_range(0, MAX_RETRIES), default=DEFAULT_RETRIES,
        help="--ray: times a file is retried on a new actor when its worker dies (killed, out of memory)",
    )  # fmt: skip


def ray_options_from_args(args: argparse.Namespace) -> RayOptions | None:
    """The Ray options, None without --ray (RayUsageError for flags that need it or are malformed)."""
    if args.ray is None:
        if args.ray_actors is not None or args.retries != DEFAULT_RETRIES:
            raise RayUsageError("--ray-actors and --retries need --ray")
        return None
    return RayOptions(
        address=args.ray or None, actors=args.ray_actors, retries=args.retries, verbose=args.verbose
    )


def worker_spec_from_args(
    args: argparse.Namespace, plan: PrecisionPlan, sources: Sources, det_threshold: float = 0.9
) -> WorkerSpec:
    """What every actor builds its restorer from (weights, plan, sources, detector settings)."""
    quality = getattr(args, "quality", None)
    if quality is not None and getattr(args, "unaligned", False):
        raise UsageError("--quality with --unaligned: the photo pipeline has no quality condition yet")
    model = None
    if args.ckpt or args.random_weights:
        model = ModelSpec(
            ckpt=str(args.ckpt) if args.ckpt else None, seed=args.seed, preset=args.preset,
            impl=args.impl, device=args.device, quality=quality,
        )  # fmt: skip
        if not args.ckpt:
            log.warning(
                "using seeded RANDOM weights (seed %d): the output is not a restoration; "
                "pass --ckpt with the official DAEFR checkpoint for real results", args.seed,
            )  # fmt: skip
    return WorkerSpec(plan=plan, sources=sources, model=model, det_threshold=det_threshold,
                      det_max_side=args.det_max_side)  # fmt: skip


def run_batch(
    prog: str,
    unit: str,
    quiet: bool,
    call: Callable[[Callable[[int], None], Callable[[int], None]], BatchResult],
    item: str = "file",
) -> int:
    """Run ``call(progress, on_total)`` under one progress bar; print failures and the summary;
    the exit code: 0 all done, 1 any file failed, 2 a usage error (bad address, bad flags)."""
    bar = tqdm(total=None, unit=unit, desc="restoring", disable=True if quiet else None)

    def on_total(n: int) -> None:
        bar.total = n
        bar.refresh()

    try:
        result = call(bar.update, on_total)
    except (RayUsageError, RayUnavailable, UsageError, CheckpointError, PlanError, BackendUnavailable) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (WorkerFailed, BackendError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:  # disk full, the output folder removed mid-run
        print(f"{prog}: writing failed: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; complete outputs are kept and the next run resumes", file=sys.stderr)
        return 130
    finally:
        bar.close()
    if result.actors == 0 and not result.failures:
        log.info("all %d %ss are complete from an earlier run; nothing to restore", result.total, item)
        return EXIT_OK
    log.info(
        "%d of %d %ss restored, %d complete from an earlier run, %d failed; %d actor(s) (%s), "
        "%d worker death(s), %d retried; %.1f s",
        result.done, result.total, item, result.skipped, len(result.failures), result.actors, result.plan,
        result.deaths, result.retried, result.wall_s,
    )  # fmt: skip
    for name, reason in result.failures:
        print(
            f"{prog}: failed: {reason if reason.startswith(name) else f'{name}: {reason}'}", file=sys.stderr
        )
    if result.failures:
        print(f"{prog}: {len(result.failures)} of {result.total} {item}s failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
