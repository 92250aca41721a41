"""daefr-video --quality S: an IQPFR checkpoint runs at S; anything else refuses the flag (exit 2)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from daefr.runtime.cli_video import main
from daefr.runtime.clips import synthetic_frames, write_clip

BASE = ["--preset", "tiny", "--device", "cpu", "-q", "--max-frames", "3"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "in.mkv"
    return write_clip(
        path, synthetic_frames(3, 256, 192, no_face=()), fps=25, codec="ffv1", audio_codec="flac"
    )


def frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("weights", ["plain", "random"])
def test_quality_with_a_plain_model_is_exit_2_in_one_line(clip, tmp_path, capsys, iqp_checkpoints, weights):
    flags = ["--random-weights"] if weights == "random" else ["--ckpt", str(iqp_checkpoints["plain"])]
    out = tmp_path / "o.mkv"
    assert main([str(clip), "-o", str(out), *BASE, *flags, "--quality", "0.5", "--codec", "ffv1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain DAEFR model" in err
    assert not out.exists()


@pytest.mark.parametrize("bad", ["-1", "2", "nan", "abc", "inf"])
def test_quality_out_of_range_is_a_usage_error(clip, tmp_path, iqp_checkpoints, bad):
    ckpt = str(iqp_checkpoints["conditioned"])
    with pytest.raises(SystemExit) as info:
        main([str(clip), "-o", str(tmp_path / "o.mkv"), *BASE, "--ckpt", ckpt, "--quality", bad])
    assert info.value.code == 2


def test_conditioned_checkpoint_on_a_backend_without_the_quality_input_is_exit_2(
    clip, tmp_path, capsys, iqp_checkpoints
):
    ckpt = str(iqp_checkpoints["conditioned"])
    argv = [str(clip), "-o", str(tmp_path / "o.mkv"), *BASE, "--ckpt", ckpt, "--backend", "ort"]
    assert main([*argv, "--quality", "0.5"]) == 2
    assert "torch backend only" in capsys.readouterr().err


def test_quality_changes_the_restored_video_and_is_deterministic(clip, tmp_path, iqp_checkpoints):
    ckpt = str(iqp_checkpoints["conditioned"])
    out = {}
    for name, s in (("lo", "0.0"), ("hi", "1.0"), ("hi_again", "1.0"), ("default", None)):
        path = tmp_path / f"{name}.mkv"
        extra = [] if s is None else ["--quality", s]
        assert main([str(clip), "-o", str(path), *BASE, "--ckpt", ckpt, "--codec", "ffv1", *extra]) == 0
        out[name] = frames(path)
    assert len(out["lo"]) == 3
    assert any(not np.array_equal(a, b) for a, b in zip(out["lo"], out["hi"], strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(out["hi"], out["hi_again"], strict=True))
    # the default is the highest S trained for (0.9), not 1.0 and not the lowest
    assert any(not np.array_equal(a, b) for a, b in zip(out["default"], out["lo"], strict=True))


def test_quality_with_random_weights_is_one_line_even_when_not_quiet(clip, tmp_path, capsys):
    """Refused before the model is built, so no "RANDOM weights" warning comes first."""
    argv = [str(clip), "-o", str(tmp_path / "o.mkv"), "--preset", "tiny", "--device", "cpu"]
    assert main([*argv, "--random-weights", "--quality", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plain DAEFR model" in err and "RANDOM" not in err


def test_quality_outside_the_trained_range_is_said(clip, tmp_path, iqp_checkpoints, caplog):
    ckpt = str(iqp_checkpoints["conditioned"])
    path = tmp_path / "o.mkv"
    with caplog.at_level("WARNING", logger="daefr.quality.cli"):
        assert (
            main([str(clip), "-o", str(path), *BASE, "--ckpt", ckpt, "--codec", "ffv1", "--quality", "0"])
            == 0
        )
    assert any("outside the range this model was trained on" in r.getMessage() for r in caplog.records)
    caplog.clear()
    path = tmp_path / "default.mkv"
    with caplog.at_level("WARNING", logger="daefr.quality.cli"):
        assert main([str(clip), "-o", str(path), *BASE, "--ckpt", ckpt, "--codec", "ffv1"]) == 0
    assert not any("outside the range" in r.getMessage() for r in caplog.records)
