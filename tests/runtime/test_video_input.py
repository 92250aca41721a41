"""The video input side: ffmpeg's main-stream choice, display-matrix rotation, VFR MKV,
10-bit input, a real rate in stats.json, and the flags that used to end in a traceback.
Every clip is written here with PyAV."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from daefr.runtime.cli_video import main
from daefr.runtime.clips import synthetic_frames
from daefr.runtime.video_input import main_video_stream, probe

W, H = 256, 192


@pytest.fixture(scope="module")
def ort(tiny_onnx) -> list[str]:
    return ["--backend", "ort", "--onnx", str(tiny_onnx), "-q"]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return list(synthetic_frames(6, W, H))


def _write(path: Path, streams: list[dict]) -> Path:
    """streams: {"frames": [...], "codec", "pix_fmt", "rate", "pts": [...] | None, "rotation"}."""
    with av.open(str(path), "w") as out:
        made = []
        for spec in streams:
            h, w = spec["frames"][0].shape[:2]
            s = out.add_stream(spec.get("codec", "libx264"), rate=spec.get("rate", 25))
            s.width, s.height, s.pix_fmt = w, h, spec.get("pix_fmt", "yuv420p")
            if spec.get("pts") is not None:
                s.codec_context.time_base = Fraction(1, 1000)
            if spec.get("rotation"):
                s.set_display_rotation(spec["rotation"])
            made.append(s)
        for spec, s in zip(streams, made, strict=True):
            for i, rgb in enumerate(spec["frames"]):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                if spec.get("pts") is not None:
                    frame.pts, frame.time_base = spec["pts"][i], Fraction(1, 1000)
                out.mux(s.encode(frame))
            out.mux(s.encode(None))
    return path


def _decoded(path: Path) -> tuple[int, tuple[int, int], str]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return n, (v.width, v.height), v.format.name


def _stats(path: Path) -> dict:
    return json.loads(path.with_suffix(".stats.json").read_text())


def test_rotated_phone_video_is_processed_upright(tmp_path, frames, ort, detector):
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in frames]  # as a phone stores it: (W, H)
    assert not detector.detect(stored[0]) and detector.detect(frames[0])  # sideways, no face is found
    src = _write(tmp_path / "phone.mp4", [{"frames": stored, "rotation": 90}])
    assert probe(src).rotation_k == 1 and (probe(src).width, probe(src).height) == (W, H)
    out = tmp_path / "out.mp4"
    assert main([str(src), "-o", str(out), *ort]) == 0
    n, size, _ = _decoded(out)
    assert n == len(frames) and size == (W, H)  # written upright
    stats = _stats(out)
    assert stats["frames_with_faces"] == len(frames) and stats["video"]["rotation_degrees"] == 90


def test_main_stream_is_not_a_one_frame_thumbnail(tmp_path, frames, ort):
    thumb = [np.full((32, 32, 3), 128, np.uint8)]
    src = _write(tmp_path / "two.mkv", [{"frames": thumb}, {"frames": frames}])
    with av.open(str(src)) as c:
        assert [s.index for s in c.streams.video] == [0, 1] and main_video_stream(c).index == 1
    out = tmp_path / "out.mkv"
    assert main([str(src), "-o", str(out), *ort]) == 0
    n, size, _ = _decoded(out)
    assert (n, size) == (len(frames), (W, H))


def test_variable_frame_rate_mkv_is_accepted_with_every_frame(tmp_path, frames, ort):
    pts = [0, 40, 200, 230, 600, 610]  # ms: gaps of 40 to 370 ms
    src = _write(tmp_path / "vfr.mkv", [{"frames": frames, "pts": pts}])
    out = tmp_path / "out.mkv"
    assert main([str(src), "-o", str(out), *ort]) == 0
    assert _decoded(out)[0] == len(frames)
    stats = _stats(out)
    assert stats["frames"] == len(frames)
    assert stats["video"]["rate"] not in ("None", "0") and stats["video"]["fps_nominal"] > 0
    with av.open(str(out)) as c:
        got = [round(float(f.time) * 1000) for f in c.decode(video=0)]
    assert got == pts  # the timestamps, and so the variable rate, are kept


def test_ten_bit_input_stays_ten_bit(tmp_path, frames, ort):
    src = _write(tmp_path / "deep.mp4", [{"frames": frames, "pix_fmt": "yuv420p10le"}])
    assert probe(src).bit_depth == 10
    out = tmp_path / "out.mp4"
    assert main([str(src), "-o", str(out), *ort]) == 0
    assert _decoded(out)[2] == "yuv420p10le"
    video = _stats(out)["video"]
    assert video["input_bit_depth"] == 10 and video["output_pix_fmt"] == "yuv420p10le"


def test_ten_bit_input_to_an_8_bit_encoder_is_stated(tmp_path, frames, ort, caplog):
    src = _write(tmp_path / "deep.mp4", [{"frames": frames[:2], "pix_fmt": "yuv420p10le"}])
    out = tmp_path / "out.mkv"
    assert main([str(src), "-o", str(out), *ort[:-1], "--codec", "mpeg4"]) == 0
    assert "the output is 8-bit" in caplog.text
    assert _stats(out)["video"]["output_pix_fmt"] == "yuv420p"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-o", "{tmp}/out.png"], "not a video container"),
        (["-o", "{tmp}/out"], "not a video container"),
        (["-o", "{tmp}/o.mp4", "--codec", "aac"], "not a video encoder"),
        (["-o", "{tmp}/o.mp4", "--stats", "{src}"], "is the input"),
        (["-o", "{tmp}/o.mp4", "--stats", "{tmp}/o.mp4"], "is also the --output"),
        (["-o", "{tmp}/o.mp4", "--det-max-side", "0"], "--det-max-side: 0: must be >= 32"),
        (["-o", "{tmp}/o.mp4", "--threads", "-1"], "--threads -1: must be within 0..1024"),
        (["-o", "{tmp}/o.mp4", "--det-threshold", "nan"], "finite"),
        (["-o", "{tmp}/o.mp4", "--device", "meta"], "only cpu and cuda"),
        (["-o", "{tmp}/o.mp4", "--device", "mps"], "only cpu and cuda"),
        (["-o", "{tmp}/o.mp4", "--device", "bogus"], "--device 'bogus'"),
        (["-o", "{tmp}/file/o.mp4"], "is a file, not a folder"),
        (["-o", "{tmp}"], "not a video container"),
    ],
)
def test_bad_flags_are_one_usage_line_before_any_work(tmp_path, frames, ort, flags, message, capsys):
    src = _write(tmp_path / "in.mp4", [{"frames": frames[:1]}])
    before = src.read_bytes()
    (tmp_path / "file").write_text("x")
    argv = [str(src), *[f.format(tmp=tmp_path, src=src) for f in flags], *ort]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    assert src.read_bytes() == before and not (tmp_path / "o.mp4").exists()


def test_impl_triton_on_the_cpu_without_the_interpreter(tmp_path, frames, monkeypatch, capsys):
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    src = _write(tmp_path / "in.mp4", [{"frames": frames[:1]}])
    with pytest.raises(SystemExit) as exit_info:
        main([str(src), "-o", str(tmp_path / "o.mp4"), "--preset", "tiny", "--random-weights",
              "--impl", "triton", "--device", "cpu"])  # fmt: skip
    assert exit_info.value.code == 2 and "TRITON_INTERPRET=1" in capsys.readouterr().err


def test_a_fifo_as_input_does_not_hang(tmp_path, ort, capsys):
    import os

    fifo = tmp_path / "in.mp4"
    os.mkfifo(fifo)
    assert main([str(fifo), "-o", str(tmp_path / "o.mp4"), *ort]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_a_stream_without_a_codec_context_is_an_unreadable_video(monkeypatch, tmp_path):
    """Found by the fuzz test: a damaged MP4 whose video stream has no ``width`` at all."""
    import daefr.runtime.video_input as vi

    class Broken:
        index, disposition = 0, 0

    class Container:
        streams = type("S", (), {"video": [Broken()]})()

        def close(self):
            pass

    assert vi._score(Broken()) == 0
    monkeypatch.setattr(vi, "open_input", lambda src: (Container(), Broken(), []))
    with pytest.raises(vi.VideoError, match="not a readable video .*no picture size"):
        vi.probe(tmp_path / "x.mp4")


def test_a_picture_beyond_the_size_limit_is_refused(monkeypatch, tmp_path, frames):
    import daefr.runtime.video_input as vi

    src = _write(tmp_path / "big.mp4", [{"frames": frames[:1]}])
    monkeypatch.setattr(vi, "MAX_SIDE", 200)  # the clip is 256 wide: beyond it, as 20000 would be
    with pytest.raises(vi.VideoError, match="256x192 picture is beyond 200 pixels a side"):
        vi.probe(src)
