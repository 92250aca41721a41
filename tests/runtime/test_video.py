"""daefr-video end to end on short real clips made here: a lossless one (so unchanged frames
can be checked bit for bit) and an H.264/AAC MP4; corrupt and truncated inputs; bad flags."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from daefr.runtime.cli_video import main
from daefr.runtime.clips import synthetic_frames, write_clip

N_FRAMES, WIDTH, HEIGHT, FPS = 32, 256, 192, Fraction(25)
NO_FACE = (7, 20)
TINY = ["--preset", "tiny", "--random-weights", "-q"]


@pytest.fixture(scope="module")
def ort(tiny_onnx) -> list[str]:
    """Flags for the ort backend over the session's tiny export (no export per test)."""
    return ["--backend", "ort", "--onnx", str(tiny_onnx), "-q"]


def probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        audio = c.streams.audio
        info = {
            "rate": v.average_rate,
            "size": (v.width, v.height),
            "duration_s": c.duration / av.time_base if c.duration else None,
            "audio": [(a.codec_context.name, a.sample_rate, a.channels) for a in audio],
        }
        info["frames"] = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:  # second pass: the audio payload, packet by packet
        info["audio_bytes"] = [bytes(p) for p in c.demux(audio=0) if p.size] if info["audio"] else []
    return info


@pytest.fixture(scope="module")
def lossless_clip(tmp_path_factory) -> Path:
    """FFV1 (lossless RGB) + FLAC in Matroska: 32 frames, a face in all but frames 7 and 20."""
    path = tmp_path_factory.mktemp("clips") / "in.mkv"
    frames = synthetic_frames(N_FRAMES, WIDTH, HEIGHT, no_face=NO_FACE)
    return write_clip(path, frames, fps=FPS, codec="ffv1", audio_codec="flac")


@pytest.fixture(scope="module")
def mp4_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "in.mp4"
    return write_clip(path, synthetic_frames(N_FRAMES, WIDTH, HEIGHT, no_face=NO_FACE), fps=FPS)


def assert_same_timing_and_audio(src: dict, out: dict) -> None:
    assert len(out["frames"]) == len(src["frames"]) == N_FRAMES
    assert out["rate"] == src["rate"] == FPS
    assert out["size"] == src["size"]
    assert out["duration_s"] == pytest.approx(src["duration_s"], abs=1 / float(FPS))
    assert out["audio"] == src["audio"] and len(src["audio"]) == 1
    assert out["audio_bytes"] == src["audio_bytes"]  # remuxed, not re-encoded


def test_video_lossless_every_face_frame_changes_and_no_face_frames_pass_unchanged(
    lossless_clip, tmp_path, detector, ort
):
    out_path, stats_path = tmp_path / "out.mkv", tmp_path / "stats.json"
    # two detection threads: frames come back out of order and must be put back in order
    rc = main([str(lossless_clip), "-o", str(out_path), *ort, "--codec", "ffv1", "--batch-size", "3",
               "--detect-workers", "2", "--stats", str(stats_path)])  # fmt: skip
    assert rc == 0
    src, out = probe(lossless_clip), probe(out_path)
    assert_same_timing_and_audio(src, out)
    for i, (a, b) in enumerate(zip(src["frames"], out["frames"], strict=True)):
        faces = detector.detect(a)
        if i in NO_FACE:
            assert not faces
            np.testing.assert_array_equal(b, a, err_msg=f"frame {i} has no face but changed")
            continue
        assert len(faces) == 1, f"frame {i}: the synthetic clip should show one face"
        x0, y0, x1, y1 = faces[0].box.astype(int)
        diff = np.abs(b.astype(int) - a.astype(int))
        assert diff[y0:y1, x0:x1].mean() > 10, f"frame {i}: the face was not restored"
        face_free = np.ones(diff.shape[:2], bool)
        pad = (x1 - x0) // 2 + 8  # the crop reaches beyond the box; keep well clear of it
        face_free[max(0, y0 - pad) : y1 + pad, max(0, x0 - pad) : x1 + pad] = False
        assert diff[face_free].max() == 0, f"frame {i}: pixels far from the face changed"
    stats = json.loads(stats_path.read_text())
    assert stats["frames"] == N_FRAMES and stats["frames_with_faces"] == N_FRAMES - len(NO_FACE)
    assert set(stats["latency_ms"]) >= {"p50", "p95", "p99"}
    assert stats["video"]["backend"] == "ort" and stats["weights"].endswith(".onnx")
    assert stats["video"]["detect_workers"] == 2
    # Adjacent pairs of one-face frames: every neighbour pair except those touching NO_FACE.
    single_face = [i not in NO_FACE for i in range(N_FRAMES)]
    pairs = sum(single_face[i] and single_face[i + 1] for i in range(N_FRAMES - 1))
    assert stats["code_stability_pairs"] == pairs
    assert 0.0 <= stats["code_stability"] <= 1.0


def test_video_mp4_h264_aac_with_smoothing_keeps_count_rate_duration_audio(mp4_clip, tmp_path):
    out_path = tmp_path / "out.mp4"
    # ort exported on the fly from --random-weights (the path of a user without an ONNX file)
    assert main([str(mp4_clip), "-o", str(out_path), *TINY, "--backend", "ort", "--smooth"]) == 0
    src, out = probe(mp4_clip), probe(out_path)
    assert_same_timing_and_audio(src, out)
    changed = [
        np.abs(a.astype(int) - b.astype(int)).max() > 40
        for a, b in zip(src["frames"], out["frames"], strict=True)
    ]
    assert sum(changed) >= N_FRAMES - len(NO_FACE)  # lossy codec: only the faces change by this much
    assert (out_path.with_suffix(".stats.json")).is_file()


def test_torch_backend_with_max_frames_stops_early(mp4_clip, tmp_path):
    out_path = tmp_path / "short.mp4"
    assert main([str(mp4_clip), "-o", str(out_path), *TINY, "--backend", "torch", "--max-frames", "5"]) == 0
    with av.open(str(out_path)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 5


def test_encoder_preset_reaches_x264(mp4_clip, tmp_path, ort):
    """x264 writes its settings into the stream: ultrafast turns CABAC off, the default keeps it."""
    fast, default = tmp_path / "fast.mp4", tmp_path / "default.mp4"
    common = ["--max-frames", "4", *ort]
    assert main([str(mp4_clip), "-o", str(fast), "--encoder-preset", "ultrafast", *common]) == 0
    assert main([str(mp4_clip), "-o", str(default), *common]) == 0
    assert b"cabac=0" in fast.read_bytes() and b"cabac=1" in default.read_bytes()


def only_inputs_left(folder: Path, inputs: set[str]) -> bool:
    return {p.name for p in folder.iterdir()} == inputs


def test_corrupt_input_fails_cleanly(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 60_000, dtype=np.uint8).tobytes())
    assert main([str(bad), "-o", str(tmp_path / "out.mp4"), *TINY]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("daefr-video:") and "bad.mp4: not a readable video" in err and "\n" not in err
    assert only_inputs_left(tmp_path, {"bad.mp4"})


def test_truncated_input_fails_cleanly_and_leaves_no_output(lossless_clip, tmp_path, capsys, ort):
    cut = tmp_path / "cut.mkv"
    data = lossless_clip.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    assert main([str(cut), "-o", str(tmp_path / "out.mkv"), *ort, "--codec", "ffv1"]) == 1
    err = capsys.readouterr().err
    # MKV stores a duration, not a frame count: the decoded frames' end time falls short of it
    assert "truncated or corrupt: frames end at" in err and "s its header promises" in err
    assert only_inputs_left(tmp_path, {"cut.mkv"})  # no output, no temp file


@pytest.mark.parametrize(
    "argv",
    [
        ["in.mp4"],  # no -o
        ["in.mp4", "-o", "o.mp4", "--preset", "tiny"],  # torch backend without weights
        ["in.mp4", "-o", "o.mp4", "--random-weights", "--batch-size", "0"],
        ["in.mp4", "-o", "o.mp4", "--backend", "trt"],  # no --engine-dir
        ["in.mp4", "-o", "o.mp4", "--random-weights", "--backend", "tvm"],
        ["in.mp4", "-o", "o.mp4", "--random-weights", "--codec", "nosuchcodec"],
        ["in.mp4", "-o", "o.mp4", "--random-weights", "--encoder-preset", "warp9"],
        ["in.mp4", "-o", "o.mp4", "--random-weights", "--codec", "ffv1", "--encoder-preset", "fast"],
        ["in.mp4", "-o", "o.mp4", "--ckpt", "a.ckpt", "--random-weights"],
        ["in.mp4", "-o", "o.mp4", "--backend", "ort", "--onnx", "m.onnx", "--random-weights"],
    ],
)
def test_bad_flags_exit_2(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_missing_input_and_unavailable_backend_exit_2(mp4_clip, tmp_path, capsys):
    assert main([str(tmp_path / "absent.mp4"), "-o", str(tmp_path / "o.mp4"), *TINY]) == 2
    argv = [str(mp4_clip), "-o", str(tmp_path / "o.mp4"), "--backend", "trt", "--engine-dir", str(tmp_path)]
    if torch.cuda.is_available():
        assert main([*argv, "--device", "cuda"]) == 2
        assert "trt backend:" in capsys.readouterr().err
    else:  # refused while parsing: the trt backend cannot honour --device cpu
        with pytest.raises(SystemExit) as info:
            main([*argv, "--device", "cpu"])
        assert info.value.code == 2
        assert "--backend trt runs on cuda, not --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "o.mp4").exists()


def test_code_stability_counts_equal_codes_between_adjacent_single_face_frames():
    from daefr.runtime.video_stages import CodeStability

    tracker = CodeStability()
    base = np.zeros((1, 8), np.int64)
    changed = base.copy()
    changed[0, :2] = 1
    two_faces = np.zeros((2, 8), np.int64)
    # audio packets never reach the tracker: (base, changed) stay adjacent frames
    for codes in [base, base, changed, None, base, two_faces, base]:
        tracker.update(codes)
    # Pairs: (base, base) 8/8, (base, changed) 6/8; the no-face frame and the two-face frame
    # break the runs.
    assert tracker.pairs == 2
    assert tracker.value == pytest.approx(14 / 16)
