"""``daefr-degrade`` through ``main([...])``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daefr.cli.degrade import main


@pytest.fixture()
def small_faces(tmp_path: Path, faces_dir: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted(faces_dir.iterdir())[:2]:
        with Image.open(path) as img:
            img.resize((48, 48)).save(folder / f"{path.stem}.jpg", quality=95)
    return folder


def test_writes_degraded_pngs_and_their_parameters(tmp_path: Path, small_faces: Path) -> None:
    out = tmp_path / "out"
    assert main([str(small_faces), "-o", str(out), "--seed", "3", "--stage", "fusion", "-q"]) == 0
    meta = json.loads((out / "degradation.json").read_text())
    assert meta["seed"] == 3 and meta["stage"] == "fusion"
    assert sorted(meta["files"]) == sorted(p.name for p in small_faces.iterdir())
    for name, record in meta["files"].items():
        written = out / record["output"]
        assert written.suffix == ".png"
        with Image.open(written) as img, Image.open(small_faces / name) as src:
            assert img.size == src.size
            assert not np.array_equal(np.asarray(img), np.asarray(src.convert("RGB")))
        assert 30 <= record["jpeg_quality"] < 100 and 0.8 <= record["scale"] <= 30


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, small_faces: Path) -> None:
    outs = {}
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main([str(small_faces), "-o", str(tmp_path / name), "--seed", seed, "-q"]) == 0
        outs[name] = {p.name: p.read_bytes() for p in (tmp_path / name).glob("*.png")}
    assert outs["a"] == outs["b"]
    assert outs["a"] != outs["c"]


def test_unreadable_file_is_reported_and_fails_the_run(
    tmp_path: Path, small_faces: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (small_faces / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main([str(small_faces), "-o", str(out), "-q"]) == 1
    assert "broken.png" in caplog.text
    assert len(list(out.glob("*.png"))) == 2  # the readable ones are still written
    assert not list(out.glob(".*tmp*"))  # no half-written files


@pytest.mark.parametrize("case", ["missing", "empty", "same"])
def test_usage_errors_exit_2(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "faces"
    if case != "missing":
        folder.mkdir()
    if case == "same":
        Image.new("RGB", (8, 8)).save(folder / "x.png")
    out = folder if case == "same" else tmp_path / "out"
    assert main([str(folder), "-o", str(out)]) == 2
    assert "daefr-degrade: error:" in capsys.readouterr().err
