"""Resume: which outputs of an earlier run can be kept as they are.

An output is *complete* when a ledger in its folder (``.daefr-resume.json``) says it was written
by a run with the same settings (a hash of the plan, the weights file's identity, the options)
from the input as it is now, the output file is still the one that run wrote (same size and
mtime: a truncated or replaced file is not), and it still opens as what it should be (an image
of the expected size, a video with the expected frame count). Anything else is restored again.
Outputs are written atomically, so a run that was stopped leaves no half-written file behind
for this check to miss; the ledger only grows after an output is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from daefr.atomic import atomic_write_text

log = logging.getLogger(__name__)

LEDGER = ".daefr-resume.json"
Validator = Callable[[Path, object], bool]
FORMAT = 1


def identity(path: Path) -> list[int] | None:
    """(size, mtime_ns) of a regular file, None if it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def settings_key(settings: dict[str, object]) -> str:
    """A stable hash of a run's settings (JSON, sorted keys)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_identity(path: str | os.PathLike[str] | None) -> object:
    """What names a weights/ONNX file for the settings: its resolved path, size and mtime."""
    if path is None:
        return None
    p = Path(path)
    return [str(p.resolve()), identity(p)]


class Ledger:
    """The outputs of one folder that earlier runs completed: name -> {settings, input, output}."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LEDGER
        self.entries: dict[str, dict[str, object]] = {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("format") == FORMAT and isinstance(data.get("outputs"), dict):
                self.entries = data["outputs"]
        except (OSError, ValueError, AttributeError):
            pass  # no ledger, or an unreadable one: nothing is known complete

    def complete(self, src: Path, dst: Path, key: str, still_valid: Validator) -> bool:
        entry = self.entries.get(dst.name)
        if not isinstance(entry, dict) or entry.get("settings") != key:
            return False
        if entry.get("input") != identity(src) or entry.get("output") != identity(dst):
            return False
        return still_valid(dst, entry.get("expect"))

    def record(self, src: Path, dst: Path, key: str, expect: object = None) -> None:
        """``expect``: what ``still_valid`` checks the output against later (its size, frames)."""
        self.entries[dst.name] = {
            "settings": key,
            "input": identity(src),
            "output": identity(dst),
            "expect": expect,
        }

    def save(self) -> None:
        if not self.path.parent.is_dir():
            return
        payload = {"format": FORMAT, "outputs": dict(sorted(self.entries.items()))}
        atomic_write_text(self.path, json.dumps(payload, indent=1) + "\n")


class Ledgers:
    """One ``Ledger`` per output folder of a run."""

    def __init__(self) -> None:
        self.by_folder: dict[Path, Ledger] = {}

    def of(self, dst: Path) -> Ledger:
        folder = Path(os.path.abspath(dst.parent))
        if folder not in self.by_folder:
            self.by_folder[folder] = Ledger(folder)
        return self.by_folder[folder]

    def complete(self, src: Path, dst: Path, key: str, still_valid: Validator) -> bool:
        return self.of(dst).complete(src, dst, key, still_valid)

    def record(self, src: Path, dst: Path, key: str, expect: object = None) -> None:
        self.of(dst).record(src, dst, key, expect)

    def save(self) -> None:
        for ledger in self.by_folder.values():
            try:
                ledger.save()
            except OSError as err:  # the outputs are written; only the next resume is affected
                log.warning("could not update %s: %s", ledger.path, err)


def image_size(path: Path) -> list[int] | None:
    """[W, H] of an image file that decodes completely, None otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            return list(img.size)
    except Exception:  # noqa: BLE001 - any decoder failure means "restore it again"
        return None


def image_is_valid(path: Path, expect: object) -> bool:
    """An image that decodes completely and has the size it was written with (for the same
    settings, the expected one: the model's resolution, or the input photo's size)."""
    return expect is not None and image_size(path) == expect


def video_frames(path: Path) -> int | None:
    """The frame count a video's header gives (stored, or duration x rate), None if unreadable."""
    from daefr.runtime.video_input import VideoError, expected_frames, probe

    try:
        return expected_frames(probe(path))
    except (VideoError, OSError):
        return None


def video_is_valid(path: Path, expect: object) -> bool:
    """A video that opens and whose header holds the frame count the run wrote (within 2 %, as
    an estimate from duration x rate may be)."""
    found = video_frames(path)
    if found is None or not isinstance(expect, int):
        return False
    return abs(found - expect) <= max(1, 0.02 * expect)
