"""--ray on daefr-restore and daefr-video, on a 2-CPU Ray cluster started once for the module
(its head in a subprocess of ours, bound to 127.0.0.1, with its own auth token), and once on the
embedded local Ray. Outputs are compared with the single-process run byte for byte."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from daefr.cli import restore
from daefr.runtime import cli_video
from daefr.runtime.clips import synthetic_frames, write_clip

# Not imported here: ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when first imported, after `cluster`.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'daefr[ray]')"
)

TINY = ["--random-weights", "--preset", "tiny", "--backend", "torch", "--threads", "1", "-q"]
HEAD = textwrap.dedent(
    """
    import os, sys
    import ray
    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(ctx.address_info["gcs_address"], flush=True)
    sys.stdin.read()  # until the test module closes our stdin
    ray.shutdown()
    """
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> str:
    """The address of a 2-CPU Ray head this module owns (stopped by closing its stdin)."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 (see daefr.runtime.ray_pool)
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the drivers of this module (in this process) present the same token
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        stderr=subprocess.DEVNULL, cwd=tmp_path_factory.mktemp("head"),
    )  # fmt: skip
    try:
        address = head.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), f"the Ray head did not start ({address!r})"
        yield address
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"face{i}.png")
    Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(folder / "odd.jpg")
    return folder


@pytest.fixture(scope="module")
def single(faces, tmp_path_factory) -> dict[str, bytes]:
    """The single-process run's outputs (batches of 2), by name."""
    out = tmp_path_factory.mktemp("single")
    assert restore.main([str(faces), "-o", str(out), *TINY, "--batch-size", "2"]) == 0
    return {p.name: p.read_bytes() for p in out.glob("*.png")}


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.png")}


def no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp" in p.name]


@pytest.fixture(scope="module")
def ray_out(faces, cluster, single, tmp_path_factory) -> Path:
    """One --ray run on 2 actors whose first job kills its worker (retried on a new actor)."""
    out = tmp_path_factory.mktemp("ray") / "out"
    marker = tmp_path_factory.mktemp("fault") / "died-once"
    os.environ["DAEFR_RAY_FAULT_ONCE"] = str(marker)
    try:
        code = restore.main([str(faces), "-o", str(out), *TINY, "--batch-size", "2", f"--ray={cluster}",
                             "--ray-actors", "2"])  # fmt: skip
    finally:
        del os.environ["DAEFR_RAY_FAULT_ONCE"]
    assert code == 0
    assert marker.exists(), "the fault hook did not fire: no worker was killed"
    return out


def test_ray_folder_is_byte_identical_to_single_process_even_after_a_killed_worker(ray_out, single, caplog):
    assert len(single) == 6
    assert pngs(ray_out) == single
    assert no_temporaries(ray_out)


def test_resume_skips_complete_outputs_and_redoes_a_truncated_one(ray_out, faces, cluster, single, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for p in ray_out.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
        os.utime(out / p.name, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns))
    truncated = out / "face3.png"
    truncated.write_bytes(truncated.read_bytes()[:100])
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    code = restore.main([str(faces), "-o", str(out), *TINY, "--batch-size", "2", f"--ray={cluster}",
                         "--ray-actors", "1"])  # fmt: skip
    assert code == 0
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    redone = {n for n in after if after[n] != before[n]}
    assert redone == {"face3.png"}
    assert pngs(out) == single


def test_ledger_knows_an_output_only_for_the_same_settings_input_and_file(tmp_path):
    from daefr.runtime.resume import Ledger, image_is_valid, image_size

    src, dst = tmp_path / "in.png", tmp_path / "out.png"
    Image.new("RGB", (8, 6)).save(src)
    Image.new("RGB", (64, 64)).save(dst)
    ledger = Ledger(tmp_path)
    ledger.record(src, dst, "settings-a", image_size(dst))
    ledger.save()
    again = Ledger(tmp_path)
    assert again.complete(src, dst, "settings-a", image_is_valid)
    assert not again.complete(src, dst, "settings-b", image_is_valid)  # other weights, plan, options
    os.utime(src, ns=(1, 1))  # the input changed since
    assert not again.complete(src, dst, "settings-a", image_is_valid)


def test_a_file_that_kills_every_worker_fails_alone_and_the_others_are_written(
    faces, cluster, single, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in faces.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "dir.png").mkdir()  # a folder named like an image is not an input
    monkeypatch.setenv("DAEFR_RAY_FAULT_NAME", "face2.png")
    out = tmp_path / "out"
    code = restore.main([str(folder), "-o", str(out), *TINY, "--batch-size", "2", f"--ray={cluster}",
                         "--ray-actors", "2", "--retries", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert "face2.png" in err and "worker died" in err
    assert "broken.png" in err and "not a readable image" in err
    assert "2 of 7 files failed" in err
    reference = (
        tmp_path / "single"
    )  # the same folder in one process (batches [broken, face0], [face1, face2]...)
    assert restore.main([str(folder), "-o", str(reference), *TINY, "--batch-size", "2"]) == 1
    written, expected = pngs(out), pngs(reference)
    assert set(written) == set(expected) - {"face2.png"} == set(single) - {"face2.png"}
    # face1, face2's batch-mate, was restored alone after its batch failed; the others are exact
    assert {n: b for n, b in written.items() if n != "face1.png"} == {
        n: b for n, b in expected.items() if n not in ("face1.png", "face2.png")
    }
    assert no_temporaries(out)


@pytest.mark.parametrize(
    "flags, says",
    [
        (["--ray=garbage"], "not a Ray address"),
        (["--ray=127.0.0.1:99999"], "not a Ray address"),
        (["--ray=127.0.0.1:1"], "no Ray cluster answers there"),
        (["--ray", "--ray-actors", "0"], "must be >= 1"),
        (["--ray", "--ray-actors", "-1"], "must be >= 1"),
        (["--ray", "--ray-actors", "100000"], "must be <= 4096"),
        (["--ray-actors", "2"], "need --ray"),
        (["--ray", "--retries", "-1"], "must be >= 0"),
    ],
)
def test_bad_ray_flags_are_one_line_exit_2(faces, tmp_path, capsys, flags, says):
    with pytest.raises(SystemExit) as exit_:
        code = restore.main([str(faces), "-o", str(tmp_path / "o"), *TINY, *flags])
        raise SystemExit(code)
    assert exit_.value.code == 2
    # our lines only: in the whole suite an earlier test may leave a logging handler on a closed
    # stream, whose "--- Logging error ---" reports land in stderr too
    ours = [line for line in capsys.readouterr().err.splitlines() if line.startswith("daefr-restore")]
    assert len(ours) == 1 and says in ours[0]
    assert not (tmp_path / "o").exists()


def test_more_actors_than_the_cluster_holds_is_exit_2(faces, cluster, tmp_path, capsys):
    code = restore.main(
        [str(faces), "-o", str(tmp_path / "o"), *TINY, f"--ray={cluster}", "--ray-actors", "3"]
    )
    assert code == 2
    assert "needs 3 CPUs and the cluster has 2" in capsys.readouterr().err


def test_local_ray_is_shut_down_after_ctrl_c_and_leaves_no_partial_output(
    faces, tmp_path, monkeypatch, capsys
):
    """The embedded default (no address): started here, stopped by Ctrl-C after the first batch."""
    import ray

    from daefr.cli import ray_flags

    class Interrupting(ray_flags.tqdm):
        def update(self, n=1):  # noqa: ANN001, ANN202
            raise KeyboardInterrupt

    monkeypatch.setattr(ray_flags, "tqdm", Interrupting)
    out = tmp_path / "out"
    handlers, sigterm = list(logging.getLogger().handlers), signal.getsignal(signal.SIGTERM)
    code = restore.main(
        [str(faces), "-o", str(out), *TINY, "--batch-size", "1", "--ray", "--ray-actors", "1"]
    )
    # Ray leaves this process as it found it: no handler of its own on the root logger, and
    # the SIGTERM handler ray.init installs is gone
    assert logging.getLogger().handlers == handlers and signal.getsignal(signal.SIGTERM) == sigterm
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    assert not ray.is_initialized()
    assert no_temporaries(out)
    for p in out.glob("*.png"):  # whatever was written is complete
        Image.open(p).load()
    assert len(list(out.glob("*.png"))) < 6


# --- videos ---------------------------------------------------------------------------------------


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for name, n in (("a", 10), ("b", 7)):
        write_clip(folder / f"{name}.mkv", synthetic_frames(n, 128, 96, no_face=(3,)), fps=Fraction(25),
                   codec="ffv1", audio_codec="flac")  # fmt: skip
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_video_folder_via_ray_equals_the_single_process_batch(clips, cluster, tmp_path):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    flags = [*TINY, "--codec", "ffv1", "--detect-workers", "1"]
    assert cli_video.main([str(clips), "-o", str(local), *flags]) == 0
    assert (
        cli_video.main([str(clips), "-o", str(on_ray), *flags, f"--ray={cluster}", "--ray-actors", "2"]) == 0
    )
    for name, n in (("a.mkv", 10), ("b.mkv", 7)):
        a, b = frames_of(local / name), frames_of(on_ray / name)
        assert len(a) == len(b) == n
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        stats = json.loads((on_ray / name).with_suffix(".stats.json").read_text())
        assert stats["frames"] == n and stats["plan"].startswith("torch")
    mtimes = {p.name: p.stat().st_mtime_ns for p in on_ray.iterdir()}
    # resume: nothing to do (Ray is not even started)
    assert cli_video.main([str(clips), "-o", str(on_ray), *flags, f"--ray={cluster}"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in on_ray.iterdir()} == mtimes


def test_video_batch_refuses_output_onto_an_input_and_the_same_input_twice_is_one(clips, tmp_path, capsys):
    assert cli_video.main([str(clips), "-o", str(clips), *TINY]) == 2
    assert "is the input folder" in capsys.readouterr().err
    a = clips / "a.mkv"
    assert cli_video.main([str(a), str(a), "-o", str(tmp_path / "o.mkv"), *TINY]) == 2
    assert "several videos go into a folder" in capsys.readouterr().err


# --- one long video in segments over the actors ----------------------------------------------------


def timing_and_audio(path: Path) -> tuple[list[float], list[bytes], Fraction]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts = [float(f.pts * f.time_base) for f in c.decode(video=0)]
        rate = v.average_rate
    with av.open(str(path)) as c:
        audio = [bytes(p) for p in c.demux(audio=0) if p.size]
    return pts, audio, rate


def test_one_clip_in_segments_over_ray_matches_the_input_timing_audio_and_single_process_frames(
    cluster, tmp_path, monkeypatch
):
    clip = write_clip(tmp_path / "long.mkv", synthetic_frames(30, 192, 144, no_face=(4, 17)), fps=Fraction(25),
                      codec="ffv1", audio_codec="flac")  # fmt: skip
    flags = [*TINY, "--codec", "ffv1", "--smooth", "--batch-size", "3", "--detect-workers", "1"]
    single_out, ray_out = tmp_path / "single.mkv", tmp_path / "ray" / "long.mkv"
    assert cli_video.main([str(clip), "-o", str(single_out), *flags]) == 0
    monkeypatch.setenv("DAEFR_RAY_FAULT_ONCE", str(tmp_path / "died-once"))  # the first job's worker dies
    code = cli_video.main([str(clip), "-o", str(ray_out), *flags, "--segments", "3", f"--ray={cluster}",
                           "--ray-actors", "2"])  # fmt: skip
    assert code == 0
    assert (tmp_path / "died-once").exists()
    stats = json.loads(ray_out.with_suffix(".stats.json").read_text())
    assert len(stats["segments"]) == 3 and stats["video"]["segments"] == 3
    assert sum(s["frames"] for s in stats["segments"]) == stats["frames"] == 30
    src_pts, src_audio, src_rate = timing_and_audio(clip)
    out_pts, out_audio, out_rate = timing_and_audio(ray_out)
    assert out_pts == src_pts and out_rate == src_rate
    assert out_audio == src_audio and src_audio  # copied, not re-encoded
    # lossless codec, --smooth continued across the boundaries in the driver: the same frames
    a, b = frames_of(single_out), frames_of(ray_out)
    assert len(a) == len(b) == 30
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not [p for p in ray_out.parent.iterdir() if p.name.startswith(".long.")]  # no parts left


@pytest.mark.parametrize(
    "cpus, gpus, actors, threads, cuda, expect",
    [
        (2, 0, None, 0, False, (1, 2, 0)),  # 4 threads each by default, capped at the CPUs
        (16, 0, None, 0, False, (4, 4, 0)),
        (16, 0, 3, 0, False, (3, 5, 0)),  # the CPUs shared out over the actors asked for
        (16, 0, None, 2, False, (8, 2, 0)),
        (8, 2, None, 0, True, (2, 1, 1)),  # one GPU per actor
    ],
)
def test_actor_shape_fits_the_cluster(cpus, gpus, actors, threads, cuda, expect):
    from daefr.runtime.ray_pool import ActorShape, Cluster

    shape = ActorShape.plan(Cluster("x", True, cpus, gpus), actors, threads, cuda)
    assert (shape.actors, shape.threads, shape.gpus) == expect


@pytest.mark.parametrize(
    "cpus, gpus, actors, threads, cuda, says",
    [
        (2, 0, 3, 1, False, "needs 3 CPUs and the cluster has 2"),
        (2, 0, None, 3, False, "needs 3 CPUs"),
        (8, 0, None, 0, True, "has no GPUs"),
        (8, 1, 2, 0, True, "the cluster has 1"),
    ],
)
def test_actor_shape_refuses_what_the_cluster_cannot_hold(cpus, gpus, actors, threads, cuda, says):
    from daefr.runtime.ray_pool import ActorShape, Cluster, RayUsageError

    with pytest.raises(RayUsageError, match=says):
        ActorShape.plan(Cluster("x", True, cpus, gpus), actors, threads, cuda)


def test_bench_ray_writes_measurements_and_a_labelled_estimate(tmp_path):
    from daefr.runtime import bench

    out = tmp_path / "ray_batch.json"
    args = ["ray", "--actors", "1", "--images", "3", "--clips", "0", "--segments", "0", "--nodes", "1,4",
            "--out", str(out), "-q"]  # fmt: skip
    assert bench.main(args) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["kind"] == "folder" and row["done"] == 3 and 0 < row["startup_s"] <= row["wall_s"]
    assert report["cpu"]["model"] and "not measured" in report["estimate"]["ESTIMATE"]
    n1, n4 = report["estimate"]["folder"]
    assert (
        n1["estimated_wall_s"] == pytest.approx(row["wall_s"], abs=0.02)
        and n4["estimated_wall_s"] <= n1["estimated_wall_s"]
    )
    assert "ESTIMATE (not a measurement)" in out.with_suffix(".txt").read_text()
    with pytest.raises(SystemExit) as exit_:
        bench.main(["ray", "--actors", "0"])
    assert exit_.value.code == 2
