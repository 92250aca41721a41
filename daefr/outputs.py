"""The one output layer's checks: every command checks where it will write before any work.

- ``check_output_file`` / ``check_output_dir``: the path can be created and written (its first
  existing ancestor is a folder we can create files in; a file target is not a folder and a
  folder target is not a file), and it is none of the run's inputs (by path or by inode, so
  symlinks and hard links count).
- ``plan_outputs``: one output name per input in a folder, never two inputs on one name
  (``a.png`` and ``a.jpg`` become ``a.png.png`` and ``a.jpg.png``), never onto an input.
- ``check_distinct``: the several outputs of one run (a video and its stats) differ.

Each failure is an ``OutputError`` with one line; CLIs exit 2 on it. The writes themselves are
atomic (``daefr.atomic``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path


class OutputError(ValueError):
    """An output path that cannot or must not be written; the message names it."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Inputs:
    """The run's inputs by resolved path and by inode, for O(1) "is this an input?" checks."""

    def __init__(self, inputs: Iterable[Path]) -> None:
        self.by_path: dict[Path, Path] = {}
        self.by_inode: dict[tuple[int, int], Path] = {}
        for inp in inputs:
            self.by_path.setdefault(Path(os.path.abspath(inp)).resolve(), Path(inp))
            ident = _identity(inp)
            if ident is not None:
                self.by_inode.setdefault(ident, Path(inp))

    def match(self, path: Path, resolved: Path | None = None) -> Path | None:
        found = self.by_path.get(resolved or Path(os.path.abspath(path)).resolve())
        ident = _identity(path)
        return found or (self.by_inode.get(ident) if ident is not None else None)


def _same_as_any(path: Path, inputs: Iterable[Path] | _Inputs) -> Path | None:
    return (inputs if isinstance(inputs, _Inputs) else _Inputs(inputs)).match(path)


def _writable_folder(folder: Path, what: str) -> None:
    """``folder`` exists or can be made: its first existing ancestor is a folder we can write."""
    probe = Path(os.path.abspath(folder))
    while not probe.exists():
        if probe.is_symlink():
            raise OutputError(f"{what} {folder}: {probe} is a dangling symlink")
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{what} {folder}: {probe} is a file, not a folder")
    try:  # os.access says yes to root on a read-only mount; a real probe file does not lie
        fd, name = tempfile.mkstemp(prefix=".daefr-probe.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise OutputError(f"{what} {folder}: cannot write in {probe} ({err.strerror or err})") from None


def check_output_file(path: Path, inputs: Iterable[Path] = (), what: str = "output") -> Path:
    """A file the run will write: not a folder, not an input, its folder writable."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise OutputError(f"{what} {path}: exists and is not a regular file")
    if str(path).endswith(os.sep):
        raise OutputError(f"{what} {path}: ends in {os.sep}; give a file name")
    clash = _same_as_any(path, inputs)
    if clash is not None:
        raise OutputError(f"{what} {path}: is the input {clash}; writing it would destroy the input")
    _writable_folder(path.parent, what)
    return path


def check_output_dir(path: Path, input_dirs: Iterable[Path] = (), what: str = "output folder") -> Path:
    """A folder the run will write into: not a file, not a folder it reads inputs from."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: is a file, not a folder")
    clash = _same_as_any(path, input_dirs)
    if clash is not None:
        raise OutputError(
            f"{what} {path}: is the input folder {clash}; outputs would overwrite or mix with the inputs"
        )
    _writable_folder(path, what)
    return path


def plan_outputs(inputs: list[Path], out_dir: Path, suffix: str = ".png") -> dict[Path, Path]:
    """input -> output file in ``out_dir``: ``stem + suffix``, or ``name + suffix`` for inputs
    whose stems collide. OutputError when two inputs still meet (same name in two folders) or
    an output would be an input."""
    stems: dict[str, int] = {}
    for p in inputs:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    planned: dict[Path, Path] = {}
    owner: dict[Path, Path] = {}
    known = _Inputs(inputs)
    resolved_dir = Path(
        os.path.abspath(out_dir)
    ).resolve()  # once: a name in it may still be a link (inode check)
    for p in inputs:
        name = (p.stem if stems[p.stem] == 1 else p.name) + suffix
        target = out_dir / name
        if target in owner:
            raise OutputError(
                f"{owner[target]} and {p} would both be written to {target}; "
                "rename one or restore them in separate runs"
            )
        if target.is_dir():
            raise OutputError(f"output {target}: is a folder; move it away or choose another output folder")
        clash = known.match(target, resolved_dir / name)
        if clash is not None:
            raise OutputError(f"output {target}: is the input {clash}; choose another output folder")
        owner[target], planned[p] = p, target
    return planned


def check_distinct(outputs: Mapping[str, Path], inputs: Iterable[Path] = ()) -> None:
    """The outputs of one run (flag -> path) are different files, and none is an input."""
    inputs = list(inputs)
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        key = Path(os.path.abspath(path)).resolve()
        if key in seen:
            raise OutputError(f"{flag} {path}: is also the {seen[key]} of this run; give another path")
        seen[key] = flag
        check_output_file(path, inputs, what=flag)


__all__ = ["OutputError", "check_distinct", "check_output_dir", "check_output_file", "plan_outputs"]
