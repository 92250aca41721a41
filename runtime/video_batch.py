"""daefr-video on several videos: which files, where each output and its stats go.

Inputs are video files or folders of them (the regular files with a video suffix directly in
the folder, sorted). One input file and an ``-o`` with a video suffix: that file, as before;
otherwise ``-o`` is a folder and each output keeps its input's name and container, through the
one output layer (``daefr.outputs``): never onto an input, never two inputs on one name.
"""

from __future__ import annotations

from pathlib import Path

from daefr.image_io import is_regular_file
from daefr.outputs import OutputError, check_distinct, check_output_dir, plan_outputs
from daefr.runtime.ray_batch import VideoItem
from daefr.runtime.video_input import (
    VIDEO_SUFFIXES,
    VideoError,
    check_output_container,
    expected_frames,
    probe,
)


def videos_in_folder(folder: Path) -> list[Path]:
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES and is_regular_file(p)
    )


def list_videos(inputs: list[Path]) -> list[Path]:
    """Folders expanded into their videos; files kept as given, once each. OutputError (exit 2)
    for a missing input, one that is not a regular file, or no video at all."""
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found.extend(videos_in_folder(path))
        elif not is_regular_file(path):
            what = "not a regular file (a FIFO or device)" if path.exists() else "no such file"
            raise OutputError(f"{path}: {what}")
        else:
            found.append(path)
    if not found:
        raise OutputError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {', '.join(map(str, inputs))}")
    return list(dict.fromkeys(found))


def plan_video_outputs(
    inputs: list[Path], output: Path, stats: Path | None = None
) -> dict[Path, tuple[Path, Path]]:
    """video -> (its output, its stats JSON). ``stats`` only for a single input file."""
    videos = list_videos(inputs)
    single = len(inputs) == 1 and not inputs[0].is_dir()
    if single and output.suffix.lower() in VIDEO_SUFFIXES and not output.is_dir():
        outs = {videos[0]: output}
    else:
        if output.suffix.lower() in VIDEO_SUFFIXES and not output.is_dir():
            raise OutputError(f"-o {output}: several videos go into a folder; give a folder name")
        check_output_dir(output, [p for p in inputs if p.is_dir()])
        outs = {}
        for suffix in sorted({v.suffix for v in videos}):
            outs.update(plan_outputs([v for v in videos if v.suffix == suffix], output, suffix))
    planned = {
        src: (dst, stats if (single and stats) else dst.with_suffix(".stats.json"))
        for src, dst in outs.items()
    }
    named: dict[str, Path] = {}
    for i, (dst, st) in enumerate(planned.values()):
        try:
            check_output_container(dst)
        except VideoError as err:
            raise OutputError(str(err)) from None
        which = "" if single else f" {i + 1} of {len(planned)}"
        named[f"output{which}"], named[f"stats{which}"] = dst, st
    check_distinct(named, inputs=videos)
    return planned


def video_items(
    planned: dict[Path, tuple[Path, Path]], max_frames: int | None
) -> tuple[list[VideoItem], list[tuple[str, str]]]:
    """(the items to restore, (input, reason) for each that cannot even be probed)."""
    items, failed = [], []
    for src, (dst, st) in planned.items():
        try:
            frames = expected_frames(probe(src))
        except VideoError as err:
            failed.append((str(src), str(err)))
            continue
        if frames is not None and max_frames:
            frames = min(frames, max_frames)
        items.append(VideoItem(src, dst, st, frames))
    return items, failed
