"""One video in segments (runtime/segments.py) against the single-process pipeline: the plan at
keyframes, the join's frame count / timestamps / audio, exact --smooth across boundaries, the
stability metric across boundaries, hostile inputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from tolerances import SEGMENTED_VS_REENCODE

from daefr.runtime import segment_join
from daefr.runtime import segments as seg
from daefr.runtime import video as video_mod
from daefr.runtime.clips import synthetic_frames, write_clip
from daefr.runtime.face.smooth import LandmarkSmoother
from daefr.runtime.video import VideoOptions, restore_video
from daefr.runtime.video_input import VideoError

N_FRAMES, WIDTH, HEIGHT, FPS, GOP = 32, 256, 192, Fraction(25), 8
NO_FACE = (5, 20)


@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory) -> Path:
    """H.264 (B-frames, a keyframe every 8 frames) + AAC in MP4."""
    path = tmp_path_factory.mktemp("seg") / "gop.mp4"
    return write_clip(path, synthetic_frames(N_FRAMES, WIDTH, HEIGHT, no_face=NO_FACE), fps=FPS, gop=GOP)


@pytest.fixture(scope="module")
def restorer(tiny_onnx):
    from daefr.runtime.backends.ort_backend import OrtRestorer

    return OrtRestorer(tiny_onnx, threads=1)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def reencode(frames: list[np.ndarray], path: Path, crf: int) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.options = "yuv420p", {"crf": str(crf)}
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, 1 / FPS
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def read(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        info = {"rate": v.average_rate, "tb": v.time_base}
        frames = list(c.decode(video=0))
        info["pts_s"] = [float(f.pts * f.time_base) for f in frames]
        info["rgb"] = [f.to_ndarray(format="rgb24") for f in frames]
    with av.open(str(path)) as c:
        info["audio"] = [bytes(p) for p in c.demux(audio=0) if p.size] if c.streams.audio else []
    return info


@pytest.fixture(scope="module")
def single(gop_clip, tmp_path_factory, restorer, detector):
    out = tmp_path_factory.mktemp("single") / "out.mp4"
    stats = restore_video(gop_clip, out, restorer, detector, VideoOptions(batch_size=3))
    return out, stats


# -- plan -------------------------------------------------------------------------------------
def test_plan_splits_at_keyframes_and_covers_every_frame_once(gop_clip):
    plan = seg.plan_segments(gop_clip, 3)
    assert len(plan) == 3
    assert [s.start for s in plan][0] == 0 and plan[-1].stop == N_FRAMES
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:], strict=False))
    assert all(s.start % GOP == 0 and s.decode_from == s.start for s in plan)
    assert sum(s.frames for s in plan) == N_FRAMES
    assert len(seg.plan_segments(gop_clip, 1)) == 1
    assert len(seg.plan_segments(gop_clip, 10**18)) == N_FRAMES // GOP  # as many as keyframes
    assert len(seg.plan_segments(gop_clip, 4, min_frames=12)) == 2
    assert seg.plan_segments(gop_clip, 4, max_frames=10)[-1].stop == 10


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_plan_refuses_a_segment_count_below_one(gop_clip, bad):
    with pytest.raises(ValueError, match="max_segments"):
        seg.plan_segments(gop_clip, bad)


def test_a_clip_with_one_keyframe_is_one_segment(tmp_path):
    clip = write_clip(tmp_path / "one.mp4", synthetic_frames(12, 64, 48), audio_codec=None)  # x264 keyint 250
    plan = seg.plan_segments(clip, 4)
    assert len(plan) == 1 and (plan[0].start, plan[0].stop) == (0, 12)


def test_plan_refuses_an_open_gop_split_point():
    # decode order: a keyframe at pts 4 followed by a frame shown before it (pts 3): not clean
    pts, keys = [0, 2, 1, 4, 3, 5], [True, False, False, True, False, False]
    assert seg._clean_keyframes(pts, keys) == []
    assert seg._clean_keyframes([0, 2, 1, 3, 5, 4], keys) == [3]


# -- the segmented run against the single-process one -----------------------------------------
def test_segmented_output_keeps_count_timestamps_audio_and_matches_single_process(
    gop_clip, single, tmp_path, restorer, detector
):
    out = tmp_path / "seg.mp4"
    stats = seg.restore_video_segmented(gop_clip, out, restorer, detector, VideoOptions(batch_size=3), 3)
    src, got, ref = read(gop_clip), read(out), read(single[0])
    assert stats.video["segments"] == 3
    assert len(got["rgb"]) == len(src["rgb"]) == N_FRAMES == stats.frames
    assert got["pts_s"] == src["pts_s"]
    assert got["rate"] == src["rate"] == FPS
    assert got["audio"] == src["audio"] and src["audio"]  # copied, not re-encoded
    # different GOPs (each part starts with its own keyframe): per frame about what one more
    # encode at the same CRF changes, no more
    again = read(reencode(ref["rgb"], tmp_path / "again.mp4", crf=18))
    for i, (a, b, c) in enumerate(zip(got["rgb"], ref["rgb"], again["rgb"], strict=True)):
        assert mean_abs(a, b) <= SEGMENTED_VS_REENCODE * mean_abs(b, c) + 0.05, f"frame {i}"
    (tmp_path / "again.mp4").unlink()
    assert stats.frames_with_faces == single[1].frames_with_faces == N_FRAMES - len(NO_FACE)
    # the stability metric counts the pairs across the boundaries too
    assert stats.code_stability_pairs == single[1].code_stability_pairs
    assert stats.code_stability == pytest.approx(single[1].code_stability, abs=0.02)
    assert not [p for p in tmp_path.iterdir() if p.name != "seg.mp4"]  # parts removed


def _record_aligned(monkeypatch, module) -> dict[int, np.ndarray]:
    used: dict[int, np.ndarray] = {}
    real = module.align

    def spy(decoded, rgb, faces, resolution, rotation_k):
        used[decoded.index] = np.array([f.landmarks for f in faces])
        return real(decoded, rgb, faces, resolution, rotation_k)

    monkeypatch.setattr(module, "align", spy)
    return used


def test_smooth_landmarks_across_boundaries_equal_the_single_process_ones(
    gop_clip, tmp_path, restorer, detector, monkeypatch
):
    options = VideoOptions(batch_size=3, smooth=True)
    single_used = _record_aligned(monkeypatch, video_mod)
    restore_video(gop_clip, tmp_path / "single.mp4", restorer, detector, options)
    seg_used = _record_aligned(monkeypatch, seg)
    seg.restore_video_segmented(gop_clip, tmp_path / "seg.mp4", restorer, detector, options, 3)
    assert sorted(seg_used) == sorted(single_used) == list(range(N_FRAMES))
    for i in range(N_FRAMES):
        np.testing.assert_array_equal(seg_used[i], single_used[i], err_msg=f"frame {i}")
    # The check can fail: a smoother restarted at the second segment differs at its first frames.
    plan = seg.plan_segments(gop_clip, 3)
    raw = seg.detect_segment(gop_clip, plan[1], detector)
    restarted = LandmarkSmoother()
    fresh = [restarted.update(list(f), t) for f, t in zip(raw.faces, raw.times, strict=True)]
    k = next(j for j, f in enumerate(fresh) if f)  # its first frame with a face
    assert not np.array_equal(fresh[k][0].landmarks, seg_used[plan[1].start + k][0])


def test_lossless_segments_equal_single_process_frames(tmp_path, restorer, detector):
    clip = write_clip(
        tmp_path / "in.mkv", synthetic_frames(12, 128, 96), fps=FPS, codec="ffv1", audio_codec="flac", gop=3
    )
    options = VideoOptions(batch_size=1, codec="ffv1")  # one face per call: the same ORT calls
    restore_video(clip, tmp_path / "a.mkv", restorer, detector, options)
    stats = seg.restore_video_segmented(clip, tmp_path / "b.mkv", restorer, detector, options, 4)
    a, b = read(tmp_path / "a.mkv"), read(tmp_path / "b.mkv")
    assert stats.video["segments"] == 4
    assert a["pts_s"] == b["pts_s"] and a["audio"] == b["audio"] == read(clip)["audio"]
    for i, (x, y) in enumerate(zip(a["rgb"], b["rgb"], strict=True)):
        np.testing.assert_array_equal(x, y, err_msg=f"frame {i}")


# -- hostile ----------------------------------------------------------------------------------
def test_truncated_input_fails_before_restoring_and_leaves_nothing(tmp_path, restorer, detector):
    clip = write_clip(
        tmp_path / "in.mkv", synthetic_frames(24, 128, 96), fps=FPS, codec="ffv1", audio_codec="flac"
    )
    data = clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(VideoError, match="truncated or corrupt"):
        seg.restore_video_segmented(
            cut, tmp_path / "out.mkv", restorer, detector, VideoOptions(codec="ffv1"), 3
        )
    assert {p.name for p in tmp_path.iterdir()} == {"in.mkv", "cut.mkv"}


def test_output_equal_to_input_is_refused(gop_clip, restorer, detector):
    before = gop_clip.read_bytes()
    with pytest.raises(VideoError, match="overwrite the input"):
        seg.restore_video_segmented(gop_clip, gop_clip, restorer, detector, VideoOptions(), 3)
    assert gop_clip.read_bytes() == before


def test_a_failed_join_leaves_no_output_and_no_parts(gop_clip, tmp_path, restorer, detector, monkeypatch):
    def broken(*args, **kwargs):
        yield from ()
        raise VideoError("boom")

    monkeypatch.setattr(segment_join, "_audio_packets", broken)
    with pytest.raises(VideoError, match="boom"):
        seg.restore_video_segmented(gop_clip, tmp_path / "o.mp4", restorer, detector, VideoOptions(), 3)
    assert list(tmp_path.iterdir()) == []


KILLED_RUN = """
import sys
from daefr.runtime.backends.ort_backend import OrtRestorer
from daefr.runtime.face import RetinaFaceDetector
from daefr.runtime.segments import restore_video_segmented
def progress(n):
    print("frame", flush=True)
restore_video_segmented(sys.argv[1], sys.argv[2], OrtRestorer(sys.argv[3], threads=1), RetinaFaceDetector(),
                        None, 3, progress)
"""


def test_a_killed_run_leaves_no_output(gop_clip, tmp_path, tiny_onnx):
    out = tmp_path / "killed.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, str(gop_clip), str(out), str(tiny_onnx)],
        stdout=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        for _ in range(GOP + 2):  # into the second segment: the first part is written
            assert proc.stdout.readline() == b"frame\n"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not out.exists()


# -- CLI --------------------------------------------------------------------------------------
def test_cli_segments_flag(gop_clip, tmp_path, tiny_onnx):
    from daefr.runtime.cli_video import main

    out = tmp_path / "cli.mp4"
    ort = ["--backend", "ort", "--onnx", str(tiny_onnx), "-q"]
    assert main([str(gop_clip), "-o", str(out), *ort, "--segments", "3", "--smooth"]) == 0
    got = read(out)
    assert len(got["rgb"]) == N_FRAMES and got["audio"] == read(gop_clip)["audio"]
    for bad in ("0", "-1", "x"):
        with pytest.raises(SystemExit) as info:
            main([str(gop_clip), "-o", str(tmp_path / "o.mp4"), *ort, "--segments", bad])
        assert info.value.code == 2


@pytest.mark.parametrize(("suffix", "codec"), [(".mp4", "libx264"), (".mkv", "libx264"), (".ts", "libx264")])
def test_ntsc_timestamps_survive_the_join_in_each_container(tmp_path, restorer, detector, suffix, codec):
    """30000/1001 fps: a part's start offset would be rounded by its muxer (MOV's edit list in
    milliseconds); the join stamps every frame with its input pts instead."""
    clip = write_clip(tmp_path / "ntsc.mp4", synthetic_frames(12, 128, 96), fps=Fraction(30000, 1001), gop=4)
    options = VideoOptions(codec=codec)
    restore_video(clip, tmp_path / f"a{suffix}", restorer, detector, options)
    stats = seg.restore_video_segmented(clip, tmp_path / f"b{suffix}", restorer, detector, options, 3)
    a, b = read(tmp_path / f"a{suffix}"), read(tmp_path / f"b{suffix}")
    assert stats.video["segments"] == 3
    assert b["pts_s"] == a["pts_s"] and (b["rate"], b["tb"]) == (a["rate"], a["tb"])
    assert b["audio"] == a["audio"]


def test_avi_output_is_refused_with_a_reason(gop_clip, tmp_path, restorer, detector):
    with pytest.raises(VideoError, match="cannot be joined into .avi"):
        seg.restore_video_segmented(gop_clip, tmp_path / "o.avi", restorer, detector, VideoOptions(), 3)
    assert list(tmp_path.iterdir()) == []


def test_max_frames_stops_the_segmented_run_like_the_single_process_one(
    gop_clip, tmp_path, restorer, detector
):
    options = VideoOptions(max_frames=11)
    restore_video(gop_clip, tmp_path / "a.mp4", restorer, detector, options)
    stats = seg.restore_video_segmented(gop_clip, tmp_path / "b.mp4", restorer, detector, options, 3)
    a, b, src = read(tmp_path / "a.mp4"), read(tmp_path / "b.mp4"), read(gop_clip)
    assert stats.frames == len(b["rgb"]) == 11 and b["pts_s"] == a["pts_s"] == src["pts_s"][:11]
    assert stats.video["segments"] == 2  # keyframes at 0 and 8 within the first 11 frames
    assert b["audio"] == src["audio"][: len(b["audio"])] and len(b["audio"]) < len(src["audio"])
    # the audio lasts to the end of the last frame (not its start), as the single path's does
    with av.open(str(gop_clip)) as c:
        starts = [float(p.pts * p.time_base) for p in c.demux(audio=0) if p.size]
    assert len(b["audio"]) == sum(t < 11 / FPS for t in starts) <= len(a["audio"])


def test_a_stream_without_usable_timestamps_runs_as_one_segment(
    gop_clip, tmp_path, restorer, detector, monkeypatch
):
    real = seg._video_packets

    def no_pts(src):
        pts, keys, tb, end = real(src)
        return [None] * len(pts), keys, tb, end

    monkeypatch.setattr(seg, "_video_packets", no_pts)
    plan = seg.plan_segments(gop_clip, 3)
    assert len(plan) == 1 and plan[0].pts is None and plan[0].stop == N_FRAMES
    out = tmp_path / "one.mp4"
    stats = seg.restore_video_segmented(gop_clip, out, restorer, detector, VideoOptions(), 3)
    got, src = read(out), read(gop_clip)
    assert stats.frames == N_FRAMES and got["pts_s"] == src["pts_s"] and got["audio"] == src["audio"]


# -- review findings --------------------------------------------------------------------------
def packet_timing(path: Path) -> tuple[list[int], list[int], object, Fraction]:
    """(pts in presentation order, their durations, the time base, the average rate)."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        packets = sorted((p.pts, p.duration) for p in c.demux(v) if p.size)
        return [p for p, _ in packets], [d for _, d in packets], v.time_base, v.average_rate


def seconds(ticks: list[int], tb) -> list[float]:
    return [round(float(t * tb), 6) for t in ticks]


@pytest.mark.parametrize(("suffix", "max_frames"), [(".mkv", None), (".mp4", 7), (".mkv", 7)])
def test_joined_frame_durations_are_the_inputs(tmp_path, restorer, detector, suffix, max_frames):
    """Matroska's 1/1000 time base against a part's MOV 1/16000 (durations must be rescaled),
    and a part ending on a B-frame (MOV stretches its last sample to the track end): every
    joined frame lasts what it lasts in the input, in the input's and the single path's rate."""
    clip = write_clip(tmp_path / f"in{suffix}", synthetic_frames(24, 128, 96), fps=FPS, gop=6)
    options = VideoOptions(max_frames=max_frames)
    restore_video(clip, tmp_path / f"a{suffix}", restorer, detector, options)
    stats = seg.restore_video_segmented(clip, tmp_path / f"b{suffix}", restorer, detector, options, 3)
    assert stats.video["segments"] == (3 if max_frames is None else 2)  # keyframes at 0, 6 of 7
    src_pts, src_dur, src_tb, _ = packet_timing(clip)
    a_pts, a_dur, a_tb, a_rate = packet_timing(tmp_path / f"a{suffix}")
    b_pts, b_dur, b_tb, b_rate = packet_timing(tmp_path / f"b{suffix}")
    n = max_frames or len(src_pts)
    assert seconds(b_pts, b_tb) == seconds(src_pts[:n], src_tb) == seconds(a_pts, a_tb)
    assert seconds(b_dur, b_tb) == seconds(src_dur[:n], src_tb)
    assert b_rate == a_rate == FPS
    with av.open(str(tmp_path / f"a{suffix}")) as a, av.open(str(tmp_path / f"b{suffix}")) as b:
        assert b.streams.video[0].duration == a.streams.video[0].duration


def test_a_missing_output_folder_is_created_as_in_the_single_path(gop_clip, tmp_path, restorer, detector):
    out = tmp_path / "new" / "deeper" / "o.mp4"
    stats = seg.restore_video_segmented(gop_clip, out, restorer, detector, VideoOptions(max_frames=9), 2)
    assert stats.frames == 9 and sorted(p.name for p in out.parent.iterdir()) == ["o.mp4"]


TERMINATED_RUN = """
import sys, time
from daefr.runtime import segment_join
from daefr.runtime.backends.ort_backend import OrtRestorer
from daefr.runtime.face import RetinaFaceDetector
from daefr.runtime.segments import restore_video_segmented
stage = sys.argv[4]
class Detector(RetinaFaceDetector):
    def detect(self, rgb):
        if stage == "detect":
            print("ready", flush=True)
            time.sleep(60)
        return super().detect(rgb)
real = segment_join._index_part
def index_part(part):
    if stage == "index":
        print("ready", flush=True)
        time.sleep(60)
    return real(part)
segment_join._index_part = index_part
restore_video_segmented(sys.argv[1], sys.argv[2], OrtRestorer(sys.argv[3], threads=1), Detector(),
                        None, 3)
"""


@pytest.mark.parametrize("stage", ["detect", "index"])
def test_sigterm_at_any_stage_leaves_nothing(gop_clip, tmp_path, tiny_onnx, stage):
    """SIGTERM in the detection pass (before any file is written) or while the join indexes the
    parts (before the output's atomic write opens): the run unwinds, the parts' folder goes."""
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", TERMINATED_RUN, str(gop_clip), str(out), str(tiny_onnx), stage],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout.readline() == b"ready\n"
        if stage == "index":
            assert [p.name for p in out.parent.iterdir()][0].startswith(".o.segments-")  # parts there
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(("name", "codec", "match"), [
    ("o.webm", "libx264", "does not take libx264"),
    ("o.avi", "libx264", "cannot be joined into .avi"),
])  # fmt: skip
def test_cli_refuses_an_output_the_join_cannot_write_before_any_work(
    gop_clip, tmp_path, tiny_onnx, capsys, monkeypatch, name, codec, match
):
    from daefr.runtime import cli_video

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the output was checked")

    monkeypatch.setattr(cli_video, "build_restorer", no_model)
    argv = [str(gop_clip), "-o", str(tmp_path / name), "--codec", codec, "--segments", "3"]
    with pytest.raises(SystemExit) as info:
        cli_video.main([*argv, "--backend", "ort", "--onnx", str(tiny_onnx), "-q"])
    assert info.value.code == 2
    assert match in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["libx264", "ffv1", "libvpx-vp9"])
def test_part_container_takes_the_codec(codec, tmp_path):
    suffix = seg.part_suffix(codec)
    assert segment_join.muxer_accepts(suffix, codec)
    assert not segment_join.muxer_accepts(".mov", "libvpx-vp9")  # MOV lists VP9 yet refuses it
    assert not segment_join.muxer_accepts(".webm", "libx264")


def test_vp9_segments_join_into_webm(tmp_path, restorer, detector):
    clip = write_clip(tmp_path / "in.mp4", synthetic_frames(12, 128, 96), fps=FPS, gop=4)
    with pytest.raises(VideoError, match="cannot copy .* aac audio"):  # before any work
        seg.restore_video_segmented(
            clip, tmp_path / "o.webm", restorer, detector, VideoOptions(codec="libvpx-vp9")
        )
    clip = write_clip(tmp_path / "in.mp4", synthetic_frames(12, 128, 96), fps=FPS, gop=4, audio_codec=None)
    options = VideoOptions(codec="libvpx-vp9", max_frames=8)
    stats = seg.restore_video_segmented(clip, tmp_path / "o.webm", restorer, detector, options, 2)
    got = read(tmp_path / "o.webm")
    assert stats.video["segments"] == 2 and len(got["rgb"]) == 8
    assert got["pts_s"] == read(clip)["pts_s"][:8]


def _drop_first_packets(src: Path, dst: Path, n: int) -> Path:
    """``src`` remuxed without its first ``n`` video packets: it starts on a non-keyframe."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        v = out.add_stream_from_template(inp.streams.video[0])
        for i, packet in enumerate(p for p in inp.demux(video=0) if p.size):
            if i >= n:
                packet.stream = v
                out.mux(packet)
    return dst


@pytest.mark.parametrize("kind", ["ts", "no-first-keyframe"])
def test_an_input_where_a_seek_cannot_land_runs_with_fewer_segments(
    tmp_path, restorer, detector, caplog, kind
):
    """MPEG-TS: a backward seek lands past the planned keyframe; an input starting on a
    non-keyframe: its packets are not its frames. Both run (fewer segments), as the single path does."""
    if kind == "ts":
        clip = write_clip(tmp_path / "in.ts", synthetic_frames(24, 128, 96), fps=FPS, gop=6)
    else:
        full = write_clip(
            tmp_path / "full.mkv", synthetic_frames(24, 128, 96), fps=FPS, gop=6, audio_codec=None
        )
        clip = _drop_first_packets(full, tmp_path / "in.mkv", 2)
    caplog.set_level("INFO", logger="daefr.runtime.segments")
    plan = seg.plan_segments(clip, 3)
    assert len(plan) < 3 and ("seek does not land" in caplog.text or "not a keyframe" in caplog.text)
    restore_video(clip, tmp_path / "a.mkv", restorer, detector, VideoOptions())
    stats = seg.restore_video_segmented(clip, tmp_path / "b.mkv", restorer, detector, VideoOptions(), 3)
    a, b = read(tmp_path / "a.mkv"), read(tmp_path / "b.mkv")
    assert stats.frames == len(b["rgb"]) == len(a["rgb"]) and b["pts_s"] == a["pts_s"]


def test_seek_check_accepts_a_clean_keyframe_and_refuses_a_wrong_one(gop_clip):
    plan = seg.plan_segments(gop_clip, 3)
    assert all(seg._seek_lands(gop_clip, s.seek_pts) for s in plan[1:])
    assert not seg._seek_lands(gop_clip, plan[1].pts[1])  # a frame that is no keyframe


TERMINATED_BUILD = """
import sys, time
from daefr.runtime import cli_video
def build_restorer(args, plan, workdir, *rest):
    (workdir / "daefr.onnx").write_bytes(b"an export in progress")
    print(workdir, flush=True)
    time.sleep(60)
cli_video.build_restorer = build_restorer
sys.exit(cli_video.main(sys.argv[1:]))
"""


def test_sigterm_while_the_cli_builds_the_restorer_removes_its_workdir(gop_clip, tmp_path, tiny_onnx):
    argv = [str(gop_clip), "-o", str(tmp_path / "o.mp4"), "--backend", "ort", "--onnx", str(tiny_onnx)]
    proc = subprocess.Popen(
        [sys.executable, "-c", TERMINATED_BUILD, *argv, "--segments", "3", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        workdir = Path(proc.stdout.readline().decode().strip())
        assert (workdir / "daefr.onnx").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert not workdir.exists() and list(tmp_path.iterdir()) == []
