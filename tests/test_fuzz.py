"""Fuzz: mutated checkpoints, images, videos and manifests through the real CLIs' ``main([...])``.

Every case must end in exit 0, or exit 1/2 with the CLI's own message: never an exception
escaping ``main`` (a traceback), never a hang (SIGALRM after ``CASE_TIMEOUT_S``), never a
change to one of its input files. Fixed seed, so the same cases come in the same order; the
time budget (``DAEFR_FUZZ_BUDGET_S``, default 90 s in all) decides how many run, and each
kind must reach a minimum count so the test cannot pass on a handful. ``DAEFR_FUZZ_REPORT=PATH``
writes the counts as JSON (reports/reliability.md quotes them).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from daefr.cli import convert, degrade, restore
from daefr.export.manifest import MANIFEST_NAME, read_manifest, sha256_file
from daefr.runtime import cli_video

SEED = 20261201
BUDGET_S = float(os.environ.get("DAEFR_FUZZ_BUDGET_S", "90"))
SHARES = {"checkpoint": 0.25, "image": 0.25, "video": 0.3, "manifest": 0.2}
MIN_CASES = {"checkpoint": 40, "image": 40, "video": 15, "manifest": 25}
CASE_TIMEOUT_S = 30


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


def _digest(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: bit flips, truncation, a deleted or inserted range, an overwritten range, a
    duplicated range; applied one to three times."""
    buf = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        n = len(buf)
        op = int(rng.integers(0, 6))
        at = int(rng.integers(0, max(n, 1)))
        span = int(rng.integers(1, max(2, min(64, n // 4 + 2))))
        if op == 0 and n:
            for _ in range(int(rng.integers(1, 9))):
                i = int(rng.integers(0, n))
                buf[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1:
            del buf[at:]
        elif op == 2:
            del buf[at : at + span]
        elif op == 3:
            buf[at:at] = rng.integers(0, 256, span, dtype=np.uint8).tobytes()
        elif op == 4:
            buf[at : at + span] = bytes([int(rng.choice([0, 255]))]) * len(buf[at : at + span])
        else:
            buf[at:at] = buf[at : at + span]
    return bytes(buf)


def _mutate_zip_member(path: Path, member_suffix: str, rng: np.random.Generator, out: Path) -> None:
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith(member_suffix):
                data = mutate(data, rng)
            zout.writestr(info.filename, data)


class Run:
    """Runs cases, checks each one, keeps the counts."""

    def __init__(self) -> None:
        self.outcomes: dict[str, Counter] = {k: Counter() for k in SHARES}
        self.problems: list[str] = []

    def case(self, kind: str, label: str, call: Callable[[], int], inputs: list[Path]) -> object:
        before = _digest(inputs)
        err = io.StringIO()
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(CASE_TIMEOUT_S)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = call()
                except SystemExit as exit_:  # argparse usage errors
                    code = exit_.code
        except Hang:
            code = "hang"
        except BaseException as exc:  # noqa: BLE001 - what escapes main() is exactly what we look for
            code = f"exception {type(exc).__name__}: {exc}"[:300]
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        text = err.getvalue()
        self.outcomes[kind][str(code)] += 1
        if code not in (0, 1, 2):
            self.problems.append(f"{kind} {label}: {code}")
        elif "Warning" in text:
            self.problems.append(f"{kind} {label}: a Python warning reached the terminal: {text[-300:]}")
        elif "Traceback" in text:
            self.problems.append(f"{kind} {label}: a traceback on stderr: {text[-300:]}")
        elif code != 0 and not any(
            line.startswith("daefr-") or "usage:" in line for line in text.splitlines()
        ):
            self.problems.append(f"{kind} {label}: exit {code} without the CLI's own message: {text[-300:]}")
        if _digest(inputs) != before:
            self.problems.append(f"{kind} {label}: an input file changed")
        return code


def case_rng(kind: str, i: int) -> np.random.Generator:
    """Case ``i`` of ``kind`` depends on nothing else: a failure is replayed by its label."""
    return np.random.default_rng([SEED, list(SHARES).index(kind), i])


def _budget(kind: str, start: float) -> float:
    return start + BUDGET_S * SHARES[kind]


@pytest.fixture()
def seeds(tmp_path_factory, tiny_model):
    """The files that get mutated: checkpoints, images of every format, short videos, an export."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("fuzz_seeds")
    state = tiny_model.state_dict()
    torch.save(state, base / "plain.pth")
    lightning = {"state_dict": state, "hyper_parameters": OmegaConf.create({"lr": 1e-4, "dims": [1, 2]}),
                 "loops": {"score": np.float32(0.5), "arr": np.arange(4)}, "epoch": 3}  # fmt: skip
    torch.save(lightning, base / "lightning.ckpt")
    save_file({k: v.contiguous() for k, v in state.items()}, str(base / "w.safetensors"))
    rng = np.random.default_rng(0)
    face = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    images = []
    for fmt, mode in [("png", "RGB"), ("jpg", "RGB"), ("tif", "RGB"), ("bmp", "RGB"), ("webp", "RGB"),
                      ("png", "I;16"), ("tif", "F"), ("png", "P"), ("png", "LA"), ("jpg", "CMYK")]:  # fmt: skip
        img = Image.fromarray(face)
        if mode == "I;16":
            img = Image.fromarray(face[..., 0].astype(np.uint16) * 257)
        elif mode == "F":
            img = Image.fromarray(face[..., 0].astype(np.float32) / 255, mode="F")
        elif mode != "RGB":
            img = img.convert(mode)
        path = base / f"seed_{mode.replace(';', '')}.{fmt}"
        img.save(path)
        images.append(path)
    videos = []
    for suffix, codec in ((".mp4", "libx264"), (".mkv", "ffv1")):
        path = base / f"seed{suffix}"
        with av.open(str(path), "w") as out:
            s = out.add_stream(codec, rate=10)
            s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
            for i in range(3):
                out.mux(s.encode(av.VideoFrame.from_ndarray(np.roll(face, i, axis=1), format="rgb24")))
            out.mux(s.encode(None))
        videos.append(path)
    from daefr.export.cli import main as export_main

    export_dir = base / "export"
    assert export_main(["--random-weights", "--preset", "tiny", "--only", "daefr", "--no-parity", "-q",
                        "--out-dir", str(export_dir)]) == 0  # fmt: skip
    return {"ckpts": [base / "plain.pth", base / "lightning.ckpt", base / "w.safetensors"], "images": images,
            "videos": videos, "export": export_dir, "good_ckpt": base / "plain.pth"}  # fmt: skip


def _fuzz_checkpoints(run: Run, seeds: dict, work: Path) -> None:
    deadline, i = _budget("checkpoint", time.perf_counter()), 0
    while time.perf_counter() < deadline:
        rng = case_rng("checkpoint", i)
        src = seeds["ckpts"][i % len(seeds["ckpts"])]
        case = work / f"c{i}{src.suffix}"
        if src.suffix != ".safetensors" and rng.random() < 0.6:
            _mutate_zip_member(src, "data.pkl", rng, case)  # the pickle stream: the unpickler's input
        else:
            case.write_bytes(mutate(src.read_bytes(), rng))
        out = work / f"c{i}.out.safetensors"
        argv = [str(case), "-o", str(out), "--preset", "tiny", "-q"]
        run.case("checkpoint", case.name, lambda argv=argv: convert.main(argv), [case])
        case.unlink()
        out.unlink(missing_ok=True)
        i += 1


def _fuzz_images(run: Run, seeds: dict, work: Path) -> None:
    deadline, i = _budget("image", time.perf_counter()), 0
    while time.perf_counter() < deadline:
        rng = case_rng("image", i)
        folder = work / f"imgs{i}"
        folder.mkdir()
        cases = []
        for j in range(8):  # eight images per run of the CLI: one model load for eight cases
            src = seeds["images"][(i * 8 + j) % len(seeds["images"])]
            case = folder / f"m{j}{src.suffix}"
            case.write_bytes(mutate(src.read_bytes(), rng))
            cases.append(case)
        out = work / f"imgs{i}.out"
        # daefr-degrade reads through the same input layer without a model: most batches go
        # there; every fourth goes through daefr-restore (its model run costs ~1 s here)
        if i % 4 == 0:
            argv = [str(folder), "-o", str(out), "--ckpt", str(seeds["good_ckpt"]), "--preset", "tiny", "-q"]
            cli = restore.main
        else:
            argv, cli = [str(folder), "-o", str(out), "-q"], degrade.main
        before = Counter(run.outcomes["image"])
        run.case("image", folder.name, lambda argv=argv, cli=cli: cli(argv), cases)
        run.outcomes["image"] = before  # counted per image below instead of per run
        written = len(list(out.glob("*.png"))) if out.is_dir() else 0
        run.outcomes["image"]["read and restored"] += written
        run.outcomes["image"]["skipped with one line"] += len(cases) - written
        if out.is_dir() and any(p.name.startswith(".") for p in out.iterdir()):
            run.problems.append(f"image {folder.name}: a temporary file was left")
        i += 1


def _fuzz_videos(run: Run, seeds: dict, work: Path, onnx: Path) -> None:
    deadline, i = _budget("video", time.perf_counter()), 0
    while time.perf_counter() < deadline:
        rng = case_rng("video", i)
        src = seeds["videos"][i % len(seeds["videos"])]
        case = work / f"v{i}{src.suffix}"
        case.write_bytes(mutate(src.read_bytes(), rng))
        out = work / f"v{i}.out.mkv"
        argv = [str(case), "-o", str(out), "--backend", "ort", "--onnx", str(onnx), "-q",
                "--detect-workers", "1", "--codec", "ffv1"]  # fmt: skip
        run.case("video", case.name, lambda argv=argv: cli_video.main(argv), [case])
        leftovers = [p for p in work.iterdir() if p.name.startswith(".")]
        if leftovers:
            run.problems.append(f"video {case.name}: temporary files left: {leftovers}")
        for p in (case, out, out.with_suffix(".stats.json")):
            p.unlink(missing_ok=True)
        i += 1


def _mutate_manifest(manifest: dict, rng: np.random.Generator) -> object:
    """Structure-aware: drop, retype or replace one field of the manifest or of an entry."""
    m = json.loads(json.dumps(manifest))
    hostile = [None, 0, -1, 2**70, "", "../daefr.onnx", "/etc/passwd", [], {}, "x" * 300, True, 1.5]
    target = m if rng.random() < 0.3 or not m.get("artifacts") else m["artifacts"][0]
    keys = sorted(target)
    key = keys[int(rng.integers(0, len(keys)))]
    action = int(rng.integers(0, 4))
    if action == 0:
        del target[key]
    elif action == 1:
        target[key] = hostile[int(rng.integers(0, len(hostile)))]
    elif action == 2 and isinstance(target.get("sha256"), str):
        digest = target["sha256"]
        target["sha256"] = digest[:-1] + ("0" if digest[-1] != "0" else "1")
    else:
        return hostile[int(rng.integers(0, len(hostile)))] if rng.random() < 0.2 else m
    return m


def _fuzz_manifests(run: Run, seeds: dict, work: Path) -> None:
    export = seeds["export"]
    manifest = read_manifest(export)
    onnx_bytes = (export / "daefr.onnx").read_bytes()
    video = seeds["videos"][0]
    deadline, i = _budget("manifest", time.perf_counter()), 0
    while time.perf_counter() < deadline:
        rng = case_rng("manifest", i)
        folder = work / f"e{i}"
        folder.mkdir()
        if rng.random() < 0.5:
            text = json.dumps(_mutate_manifest(manifest, rng))
        else:
            text = mutate((export / MANIFEST_NAME).read_bytes(), rng).decode("utf-8", "replace")
        (folder / MANIFEST_NAME).write_text(text)
        onnx = folder / "daefr.onnx"
        onnx.write_bytes(onnx_bytes if rng.random() < 0.7 else mutate(onnx_bytes, rng))
        out = work / f"e{i}.mkv"
        argv = [str(video), "-o", str(out), "--backend", "ort", "--onnx", str(onnx), "-q", "--codec", "ffv1"]
        inputs = [video, onnx, folder / MANIFEST_NAME]
        code = run.case("manifest", folder.name, lambda argv=argv: cli_video.main(argv), inputs)
        if code == 0 and sha256_file(onnx) != sha256_file(export / "daefr.onnx"):
            run.problems.append(f"manifest {folder.name}: a changed ONNX ran beside a manifest")
        for p in (out, out.with_suffix(".stats.json")):
            p.unlink(missing_ok=True)
        i += 1


def test_fuzz_every_case_ends_in_an_exit_code_and_one_line(seeds, tmp_path):
    run = Run()  # each case draws its own generator (case_rng)
    t0 = time.perf_counter()
    _fuzz_checkpoints(run, seeds, tmp_path)
    _fuzz_images(run, seeds, tmp_path)
    _fuzz_videos(run, seeds, tmp_path, seeds["export"] / "daefr.onnx")
    _fuzz_manifests(run, seeds, tmp_path)
    totals = {k: sum(v.values()) for k, v in run.outcomes.items()}
    summary = {"seed": SEED, "budget_s": BUDGET_S, "wall_s": round(time.perf_counter() - t0, 1),
               "totals": totals, "outcomes": {k: dict(v) for k, v in run.outcomes.items()},
               "problems": run.problems}  # fmt: skip
    if os.environ.get("DAEFR_FUZZ_REPORT"):
        Path(os.environ["DAEFR_FUZZ_REPORT"]).write_text(json.dumps(summary, indent=2) + "\n")
    assert not run.problems, "\n".join(run.problems[:20])
    short = {k: n for k, n in totals.items() if n < MIN_CASES[k] * min(1.0, BUDGET_S / 100)}
    assert not short, f"too few cases within the budget: {short} (minimum {MIN_CASES})"
