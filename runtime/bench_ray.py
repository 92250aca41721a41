"""``daefr-bench ray``: batch restoration on an embedded local Ray with 1, 2, ... actors.

Measures, on this machine, a folder of aligned faces and a folder of short clips through the
same library calls ``--ray`` makes (``daefr.runtime.ray_batch``): wall time, the start-up part
(Ray started, every actor's restorer built) and the work part, per item. Then an ESTIMATE for a
cluster of N nodes from those measurements alone: the start-up once, the work shared out over N
actors (one per node). It is stated as an estimate, with its formula, never as a measurement:
a GPU node's per-item time is what ``daefr-bench video`` measures on it, not what a CPU does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from daefr.atomic import atomic_write_text
from daefr.cli.common import EXIT_FAILED, EXIT_OK, add_logging_flags, int_range

log = logging.getLogger("daefr.bench")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers") from None
    if not values or min(values) < 1 or max(values) > 4096:
        raise argparse.ArgumentTypeError(f"{text!r}: each must be within 1..4096")
    return values


def add_ray_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "ray",
        help="--ray batch runs on a local Ray: 1, 2... actors over a folder and over clips, and an estimate for N nodes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--actors", type=_int_list, default=(1, 2), help="comma-separated actor counts to measure")
    p.add_argument("--images", type=int_range(1, 100000), default=32, help="aligned faces in the folder")
    p.add_argument("--clips", type=int_range(0, 1000), default=2, help="clips in the video folder (0: none)")
    p.add_argument("--frames", type=int_range(1, 100000), default=24, help="frames per clip")
    p.add_argument(
        "--segments", type=int_range(0, 1000), default=4, help="segments of the long clip (0: none)"
    )
    p.add_argument(
        "--long-frames", type=int_range(1, 100000), default=64, help="frames of the segmented clip"
    )
    p.add_argument(
        "--preset", default="tiny", help="model size (tiny: Ray's overheads and scaling, not DAEFR's speed)"
    )
    p.add_argument("--batch-size", type=int_range(1, 1024), default=4, help="faces per restore call")
    p.add_argument("--nodes", type=_int_list, default=(1, 2, 4, 8, 16), help="cluster sizes of the estimate")
    p.add_argument("--out", type=Path, help="write the results as JSON here (a .txt table beside it)")
    add_logging_flags(p)
    return p


def _spec(preset: str, threads: int):  # noqa: ANN202
    from daefr.runtime.auto import Sources
    from daefr.runtime.plan import PrecisionPlan
    from daefr.runtime.ray_jobs import ModelSpec, WorkerSpec

    plan = PrecisionPlan(backend="torch", threads=threads)
    return WorkerSpec(plan, Sources(weights=True), ModelSpec(None, 0, preset, "torch", "cpu"))


def _faces(folder: Path, n: int, side: int) -> dict[Path, Path]:
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
            folder / f"face{i:05d}.png"
        )
    return {p: folder.parent / "out" / p.name for p in sorted(folder.iterdir())}


def _clips(folder: Path, n: int, frames: int) -> list[Path]:
    from daefr.runtime.clips import synthetic_frames, write_clip

    folder.mkdir()
    return [
        write_clip(folder / f"clip{i}.mp4", synthetic_frames(frames, 256, 192, seed=i), fps=Fraction(25))
        for i in range(n)
    ]


def _segmented(args: argparse.Namespace, root: Path, run: Path, opts: Any) -> dict[str, object]:
    """One long clip (a keyframe every 8 frames) in ``args.segments`` segments over the actors."""
    from daefr.runtime import ray_batch
    from daefr.runtime.clips import synthetic_frames, write_clip
    from daefr.runtime.video import VideoOptions
    from daefr.runtime.video_batch import video_items

    long = root / "long.mp4"
    if not long.exists():
        write_clip(long, synthetic_frames(args.long_frames, 256, 192), fps=Fraction(25), gop=8)
    dst, stats_path = run / "seg" / "long.mp4", run / "seg" / "long.stats.json"
    items, _ = video_items({long: (dst, stats_path)}, None)
    options = VideoOptions(batch_size=args.batch_size, encoder_preset="veryfast")
    result = ray_batch.restore_videos(opts, _spec(args.preset, 1), items, options, segments=args.segments)
    row = _row("segmented", opts.actors, args.long_frames, result)
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {}
    parts = stats.get("segments", [])
    row["items"] = len(parts)
    row["per_item_s"] = round(row["work_s"] / max(len(parts), 1), 4)
    row["segments"] = parts
    row["per_segment_s"] = [round(p["detect_s"] + p["restore_s"], 4) for p in parts]
    row["join_s"] = stats.get("join_s")
    log.info(
        "segmented clip, %d actor(s): %.1f s, join %.2f s", opts.actors, result.wall_s, row["join_s"] or 0
    )
    return row


def _row(kind: str, actors: int, items: int, result: Any) -> dict[str, object]:
    work = result.wall_s - result.startup_s
    return {
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on this machine skews a row
        "kind": kind,
        "actors": actors,
        "items": items,
        "done": result.done,
        "failed": len(result.failures),
        "plan": result.plan,
        "wall_s": round(result.wall_s, 3),
        "startup_s": round(result.startup_s, 3),
        "work_s": round(work, 3),
        "per_item_s": round(work / max(items, 1), 4),
    }


def estimate(row: dict[str, object], nodes: tuple[int, ...]) -> list[dict[str, object]]:
    """ESTIMATE for N nodes like this one, from a 1-actor row: start-up + join (once, in the
    driver; segmented clips only) + the rest of the measured work x ceil(items / N) / items."""
    items, startup = max(int(row["items"]), 1), float(row["startup_s"])
    join = float(row.get("join_s") or 0)
    shared = float(row["work_s"]) - join
    return [
        {"nodes": n, "estimated_wall_s": round(startup + join + shared * math.ceil(items / n) / items, 2)}
        for n in nodes
    ]


def run_ray_bench(args: argparse.Namespace) -> int:
    from daefr.config import DAEFRConfig
    from daefr.runtime import ray_batch
    from daefr.runtime.cpu_info import cpu_summary
    from daefr.runtime.video import VideoOptions
    from daefr.runtime.video_batch import video_items

    rows: list[dict[str, object]] = []
    side = DAEFRConfig.from_name(args.preset).vqgan.resolution
    with tempfile.TemporaryDirectory(prefix="daefr-bench-ray-") as tmp:
        root = Path(tmp)
        clips = _clips(root / "clips", args.clips, args.frames) if args.clips else []
        for actors in args.actors:
            run = root / f"run{actors}"
            run.mkdir()
            outputs = _faces(run / "faces", args.images, side)
            opts = ray_batch.RayOptions(actors=actors)
            result = ray_batch.restore_images(opts, _spec(args.preset, 1), outputs, args.batch_size, False)
            rows.append(_row("folder", actors, args.images, result))
            log.info("folder, %d actor(s): %.1f s", actors, result.wall_s)
            if clips:
                planned = {c: (run / "vout" / c.name, run / "vout" / f"{c.stem}.stats.json") for c in clips}
                items, _ = video_items(planned, None)
                options = VideoOptions(batch_size=args.batch_size, encoder_preset="veryfast")
                result = ray_batch.restore_videos(opts, _spec(args.preset, 1), items, options)
                rows.append(_row("clips", actors, len(clips), result))
                log.info("clips, %d actor(s): %.1f s", actors, result.wall_s)
            if args.segments:
                rows.append(_segmented(args, root, run, opts))
    failed = [r for r in rows if r["failed"]]
    report = {
        "benchmark": "ray",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_summary(),
        "preset": args.preset,
        "weights": "random (speed only)",
        "rows": rows,
        "estimate": {
            "ESTIMATE": "not measured: N nodes each as fast as ONE actor here (one actor per node); "
            "start-up and the join (driver) once, the rest of the 1-actor work x ceil(items / N) / items "
            "(items: faces, clips, segments). For GPU nodes put the per-item time `daefr-bench video` "
            "measures on such a node in place of this CPU's.",
            **{r["kind"]: estimate(r, args.nodes) for r in rows if r["actors"] == min(args.actors)},
        },
    }
    text = format_report(report)
    print(text)
    if args.out:
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
        atomic_write_text(args.out.with_suffix(".txt"), text + "\n")
        log.info("results in %s", args.out)
    return EXIT_FAILED if failed else EXIT_OK


def format_report(report: dict[str, Any]) -> str:
    cpu = report["cpu"]
    lines = [
        f"daefr-bench ray, {report['date']}, preset {report['preset']} ({report['weights']})",
        f"CPU: {cpu['model']} ({cpu['cores']} logical CPUs), flags: {' '.join(cpu['flags']) or 'none of note'}",
        "load: the 1-minute load average after the row (this machine's 2 cores are shared; above 2,",
        "other processes took CPU time from the actors)",
        "",
        f"{'kind':9} {'actors':>6} {'items':>6} {'wall s':>8} {'startup s':>10} {'work s':>8} {'s/item':>8} "
        f"{'load':>5}  plan",
    ]
    for r in report["rows"]:
        lines.append(
            f"{r['kind']:9} {r['actors']:>6} {r['items']:>6} {r['wall_s']:>8.2f} {r['startup_s']:>10.2f} "
            f"{r['work_s']:>8.2f} {r['per_item_s']:>8.3f} {r['load_average_1min']:>5.1f}  {r['plan']}"
        )
        if r["kind"] == "segmented":
            times = ", ".join(f"{t:.2f}" for t in r["per_segment_s"])
            lines.append(f"{'':9} per segment (detect + restore) s: {times}; join {r['join_s']} s")
    est = report["estimate"]
    lines += ["", "ESTIMATE (not a measurement): " + est["ESTIMATE"]]
    for kind, rows in est.items():
        if kind != "ESTIMATE":
            lines.append(
                f"  {kind}: " + ", ".join(f"N={r['nodes']}: {r['estimated_wall_s']} s" for r in rows)
            )
    return "\n".join(lines)
