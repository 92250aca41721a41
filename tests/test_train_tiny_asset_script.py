"""scripts/train_tiny_asset.py, which made tests/data/tiny_trained: its usage errors (exit 2,
one line, before any work) and that it never writes over an existing asset folder unasked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_tiny_asset.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_tiny_asset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--codebook-steps", "0"], "argument --codebook-steps: 0: must be >= 1"),
        (["--fusion-steps", "-1"], "argument --fusion-steps: -1: must be >= 1"),
        (["--batch-size", "huge"], "argument --batch-size: 'huge' is not an integer"),
        (["--base-lr", "nan"], "argument --base-lr: nan: must be a finite number"),
        (["--base-lr", "0"], "argument --base-lr: 0.0: must be > 0"),
        (["--train-faces", "99999999"], "argument --train-faces: 99999999: must be <= 5000"),
        (["--held-out", "0"], "argument --held-out: 0: must be >= 1"),
        (["--threads", "0"], "argument --threads: 0: must be >= 1"),
        (["--steps", "5"], "unrecognized arguments: --steps 5"),
        (
            ["--train-faces", "3", "--batch-size", "4"],
            "--train-faces 3 cannot fill one batch of --batch-size 4",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(script, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        script.main(["--out", str(tmp_path / "new"), *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"error: {message}"), err[-1]
    assert not (tmp_path / "new").exists()


def test_an_existing_out_is_kept_without_force(script, tmp_path, capsys):
    out = tmp_path / "asset"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as info:
        script.main(["--out", str(out)])
    assert info.value.code == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == [
        "asset"
    ]


@pytest.mark.parametrize("case", ["file", "no-parent"])
def test_out_that_cannot_be_a_folder_exits_2(script, tmp_path, capsys, case):
    out = tmp_path / "f"
    if case == "file":
        out.write_text("x")
    else:
        out = tmp_path / "missing" / "asset"
    with pytest.raises(SystemExit) as info:
        script.main(["--out", str(out), "--force"])
    assert info.value.code == 2
    assert f"--out {out}" in capsys.readouterr().err


def test_force_never_replaces_a_folder_that_is_not_an_asset(script, tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "code.py").write_text("precious")
    with pytest.raises(SystemExit) as info:
        script.main(["--out", str(out), "--force"])
    assert info.value.code == 2
    assert "not an asset folder made by this script" in capsys.readouterr().err
    assert (out / "code.py").read_text() == "precious"


def test_force_replaces_an_asset_whole_with_what_it_says(script, tmp_path, capsys):
    """One step per stage (about 10 s): the folder is replaced whole, the JSON describes it."""
    import hashlib
    import json

    from daefr.checkpoint import load_model

    out = tmp_path / "asset"
    out.mkdir()
    (out / "asset.json").write_text("{}")
    (out / "stale.txt").write_text("from the previous asset")
    argv = ["--out", str(out), "--force", "--codebook-steps", "1", "--association-steps", "1",
            "--fusion-steps", "1", "--train-faces", "4", "--held-out", "2", "--seed", "3", "-q"]  # fmt: skip
    assert script.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "asset.json",
        "daefr_tiny.safetensors",
        "held_out",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asset"]  # no staging or backup folder left
    meta = json.loads((out / "asset.json").read_text())
    assert meta["sha256"] == hashlib.sha256((out / "daefr_tiny.safetensors").read_bytes()).hexdigest()
    assert meta["seed"] == 3 and meta["steps"] == {"codebook": 1, "association": 1, "fusion": 1}
    assert meta["command"].endswith(" ".join(argv)) and meta["torch"] and meta["cpu"]["model"]
    assert len(meta["data"]["held_out_faces"]) == 2 == len(list((out / "held_out").glob("*.png")))
    assert meta["margins"]["trained"]["tokens"] == 2 * 256
    load_model(out / "daefr_tiny.safetensors", "tiny")  # strict: all inference keys
    assert "median ratio trained / random" in capsys.readouterr().out
