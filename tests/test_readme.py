"""The README's commands run as tests: its two shell commands, what CI runs, and its Python
example (shrunk to the tiny preset on the CPU; the names and calls are the README's own)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from daefr import DAEFR, DAEFRConfig

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_the_two_commands_and_ci():
    commands = [block.strip() for block in code_blocks("bash")[:2]]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci_lines[-1] == "bash scripts/test.sh"  # CI runs exactly the README's test command


@pytest.mark.slow
@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="demo.sh sets up and uses the repo's .venv; these tests run in another environment",
)
def test_demo_command_restores_the_bundled_face(tmp_path):
    # demo.sh passes its arguments to daefr-restore; a second -o keeps the repo's out/ untouched.
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "demo.sh"), "--random-weights", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RANDOM weights" in result.stderr  # says plainly that this is no restoration
    from PIL import Image

    with Image.open(tmp_path / "astronaut.png") as image:
        assert image.size == (512, 512)


def test_python_example_runs(tmp_path, monkeypatch):
    (example,) = [block for block in code_blocks("python") if "load_model(" in block]
    tiny = DAEFRConfig.from_name("tiny")
    side = tiny.vqgan.resolution
    torch.manual_seed(0)
    # the official file's layout: a Lightning checkpoint with the weights under "state_dict"
    torch.save({"state_dict": DAEFR(tiny).state_dict()}, tmp_path / "DAEFR_model.ckpt")
    for original in ('"official"', 'device="cuda"', "512, 512"):
        assert original in example, f"the README example changed: update this test ({original})"
    shrunk = (
        example.replace('"official"', '"tiny"')
        .replace('device="cuda"', 'device="cpu"')
        .replace("512, 512", f"{side}, {side}")
    )
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(shrunk, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    result, fused = namespace["result"], namespace["fused"]
    assert result.restored.shape == (4, 3, side, side) and result.code_idx.shape == (4, 256)
    assert fused.shape[0] == 4
