"""Training checkpoints are read by the same restricted unpickler as weights files: a pickle
that would run code, a truncated file or a foreign pickle is one line naming the file."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from daefr.training.state import NotATrainingCheckpoint, load_checkpoint


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    text = str(err.value)
    assert str(path) in text and "\n" not in text, text
    return text


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "daefr-train-1", "payload": _RunsCode()}, path)
    with pytest.raises(NotATrainingCheckpoint) as err:
        load_checkpoint(path)
    assert "refused global" in _one_line_naming(err, path)


@pytest.mark.parametrize("damage", ["truncated", "not_zip", "empty_zip", "raw_pickle_of_a_set"])
def test_damaged_files_are_one_line_errors(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "good.pt"
    torch.save({"format": "daefr-train-1", "step": 3, "models": {"a": {"w": torch.ones(4)}}}, good)
    path = tmp_path / f"{damage}.pt"
    if damage == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "not_zip":
        path.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty_zip":
        with zipfile.ZipFile(path, "w"):
            pass
    else:
        path.write_bytes(pickle.dumps({1, 2, 3}))
    with pytest.raises(NotATrainingCheckpoint) as err:
        load_checkpoint(path)
    _one_line_naming(err, path)


def test_a_plain_saved_checkpoint_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    torch.save(
        {
            "format": "daefr-train-1",
            "stage": "codebook",
            "preset": "tiny",
            "step": 3,
            "rng": {"python": (3, tuple(range(625)), None)},
            "models": {"a": {"w": torch.ones(4)}},
        },
        path,
    )
    payload = load_checkpoint(path, ("codebook",), "tiny")
    assert payload["step"] == 3 and torch.equal(payload["models"]["a"]["w"], torch.ones(4))
