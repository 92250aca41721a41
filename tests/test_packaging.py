"""The repo's kernels/, export/, runtime/ install as daefr.* and never clash with the
unrelated PyPI packages called kernels, export and runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

UNRELATED = ("kernels", "export", "runtime")


@pytest.fixture()
def fake_pypi_packages(tmp_path):
    for name in UNRELATED:
        package = tmp_path / "site" / name
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"ORIGIN = 'pypi-{name}'\n")
    return tmp_path / "site"


def test_daefr_subpackages_and_pypi_namesakes_coexist(fake_pypi_packages, tmp_path):
    probe = (
        "import json, importlib\n"
        "out = {}\n"
        f"for name in {UNRELATED!r}:\n"
        "    theirs = importlib.import_module(name)\n"
        "    ours = importlib.import_module('daefr.' + name)\n"
        "    out[name] = [getattr(theirs, 'ORIGIN', None), ours.__file__, theirs.__file__]\n"
        "print(json.dumps(out))\n"
    )
    # Run from an unrelated folder so the checkout itself is not on sys.path.
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(fake_pypi_packages), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(result.stdout)
    for name in UNRELATED:
        origin, ours, theirs = found[name]
        assert origin == f"pypi-{name}", f"`import {name}` did not give the PyPI package"
        assert ours != theirs
        assert "site" not in ours.split("/")[-3:], f"daefr.{name} resolved to the PyPI namesake"


def test_import_daefr_does_not_pull_optional_heavy_packages():
    probe = (
        "import sys, daefr, daefr.kernels, daefr.export, daefr.runtime\n"
        "print(','.join(m for m in ('tensorrt', 'onnxruntime', 'av') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
