"""A resumed run continues at the saved step with the losses and weights of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_tolerances import RESUME_RTOL

from daefr.cli.train import main
from daefr.training.metrics import read_log
from daefr.training.state import load_checkpoint


def run(faces_dir: Path, out: Path, steps: int, *extra: str) -> int:
    return main(
        [
            "codebook", "--data", str(faces_dir), "--out", str(out), "--preset", "tiny", "--steps", str(steps),
            "--batch-size", "1", "--perceptual", "none", "--disc-start", "0", "--device", "cpu",
            "--num-workers", "0", "--seed", "7", "--base-lr", "1e-4", "-q", *extra,
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def runs(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """2 steps in one go; 1 step, then resumed to 2. The GAN is on from the start, so the
    discriminators, all optimizers' moments and BatchNorm statistics must come back; with
    batch 1 the resume lands in the middle of an epoch (3 or 5 faces)."""
    root = tmp_path_factory.mktemp("resume")
    straight, split = root / "straight", root / "split"
    assert run(faces_dir, straight, 2) == 0
    assert run(faces_dir, split, 1) == 0
    assert load_checkpoint(split / "last.pt")["step"] == 1
    assert run(faces_dir, split, 2, "--resume", str(split / "last.pt")) == 0
    return straight, split


def test_resume_matches_an_uninterrupted_run(runs: tuple[Path, Path]) -> None:
    straight, split = runs
    lines = (split / "log.jsonl").read_text().splitlines()
    assert len(lines) == 2  # step 1 | step 2: the resumed run starts at step 2, nothing repeated
    a, b = read_log(straight / "log.jsonl"), read_log(split / "log.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2]
    for ra, rb in zip(a, b, strict=True):
        assert set(ra) == set(rb)
        for key in ra:
            if key not in ("time", "stage"):
                assert rb[key] == pytest.approx(ra[key], rel=RESUME_RTOL), (ra["step"], key)

    sa, sb = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert sa["step"] == sb["step"] == 2
    for name, state in sa["models"].items():
        for key, value in state.items():
            torch.testing.assert_close(sb["models"][name][key], value, rtol=RESUME_RTOL, atol=0, msg=key)
    assert not list(split.glob(".*tmp*"))  # atomic writes leave no temporary files


def test_resume_refuses_another_stage_or_preset(runs: tuple[Path, Path], faces_dir: Path, capsys) -> None:
    ckpt = str(runs[1] / "last.pt")
    args = ["--data", str(faces_dir), "--device", "cpu", "--num-workers", "0", "-q", "--resume", ckpt]
    assert main(["association", *args, "--preset", "tiny", "--perceptual", "none"]) == 2
    assert "a 'codebook' checkpoint" in capsys.readouterr().err
    assert main(["codebook", *args, "--preset", "official", "--perceptual", "none"]) == 2
    assert "preset 'tiny'" in capsys.readouterr().err
