"""The output layer: checks before work, no write over an input or another output, atomic
writes cleaned up on SIGINT and SIGTERM alike, modes by the umask."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daefr.atomic import atomic_path, atomic_write_text, file_mode
from daefr.outputs import OutputError, check_distinct, check_output_dir, check_output_file, plan_outputs


def test_plan_names_colliding_stems_apart(tmp_path):
    a_png, a_jpg, b = tmp_path / "a.png", tmp_path / "a.jpg", tmp_path / "b.webp"
    for p in (a_png, a_jpg, b):
        p.write_bytes(b"x")
    plan = plan_outputs([a_png, a_jpg, b], tmp_path / "out")
    assert {k.name: v.name for k, v in plan.items()} == {
        "a.png": "a.png.png",
        "a.jpg": "a.jpg.png",
        "b.webp": "b.png",
    }
    assert len(set(plan.values())) == 3


def test_plan_refuses_an_output_name_taken_by_a_folder(tmp_path):
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    with pytest.raises(OutputError, match="is a folder"):
        plan_outputs([tmp_path / "a.jpg"], tmp_path / "out")


def test_plan_refuses_same_name_from_two_folders(tmp_path):
    one, two = tmp_path / "one" / "a.png", tmp_path / "two" / "a.png"
    with pytest.raises(OutputError, match="would both be written to"):
        plan_outputs([one, two], tmp_path / "out")


def test_plan_refuses_an_output_onto_its_input(tmp_path):
    face = tmp_path / "a.png"
    face.write_bytes(b"x")
    with pytest.raises(OutputError, match="is the input"):
        plan_outputs([face], tmp_path)


def test_output_dir_that_is_an_input_folder_or_a_file(tmp_path):
    with pytest.raises(OutputError, match="is the input folder"):
        check_output_dir(tmp_path, [tmp_path])
    with pytest.raises(OutputError, match="is the input folder"):
        check_output_dir(tmp_path / "." / "", [tmp_path])
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(regular)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(regular / "sub" / "deeper")


def test_output_file_checks(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"x")
    link = tmp_path / "link.mp4"
    link.symlink_to(video)
    hard = tmp_path / "hard.mp4"
    os.link(video, hard)
    for clash in (video, link, hard, tmp_path / "." / "in.mp4"):
        with pytest.raises(OutputError, match="is the input"):
            check_output_file(clash, [video])
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path, [])
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_file(video / "out.png", [])
    assert check_output_file(tmp_path / "new" / "deep" / "out.mp4", [video]).name == "out.mp4"


def test_unwritable_folder_is_found_before_work():
    # /proc refuses new files even to root (a chmod-ed folder does not, so it cannot be the test)
    with pytest.raises(OutputError, match="cannot write in /proc"):
        check_output_file(Path("/proc/daefr-test/out.png"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only (mode 0555) folder")
def test_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="cannot write"):
            check_output_dir(ro / "out")
    finally:
        ro.chmod(0o755)


def test_distinct_outputs_of_one_run(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"x")
    with pytest.raises(OutputError, match="--stats .* is also the --output"):
        check_distinct({"--output": tmp_path / "o.mp4", "--stats": tmp_path / "o.mp4"}, [video])
    with pytest.raises(OutputError, match="--stats .* is the input"):
        check_distinct({"--output": tmp_path / "o.mp4", "--stats": video}, [video])


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644 == file_mode()
    finally:
        os.umask(old)


def test_a_library_that_recreates_the_temp_file_gets_the_umask_mode_too(tmp_path):
    target = tmp_path / "t.bin"
    with atomic_path(target) as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    assert target.stat().st_mode & 0o777 == file_mode()


_WRITER = textwrap.dedent(
    """
    import sys, time
    from daefr.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half")
        print("writing", flush=True)
        time.sleep(30)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_during_a_write_leaves_nothing(tmp_path, sig):
    target = tmp_path / "out.bin"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert len(list(tmp_path.iterdir())) == 1  # the temporary file exists now
        proc.send_signal(sig)
        proc.wait(timeout=20)
    finally:
        proc.kill()
    assert list(tmp_path.iterdir()) == [], "a temporary or half-written file was left"
    assert proc.returncode != 0
    if sig != signal.SIGINT:
        assert proc.returncode == 128 + sig and "Traceback" not in proc.stderr.read()


def test_handlers_are_restored_after_the_write(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with atomic_path(tmp_path / "x") as tmp:
        tmp.write_text("x")
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # cleanup on SIGTERM is armed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
