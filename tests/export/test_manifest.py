"""Manifest-verified artifacts: a changed file, a path outside the folder and malformed entries
are one-line errors; an interrupted re-export never leaves a manifest that disagrees."""

from __future__ import annotations

import json

import pytest

from daefr.export.cli import main as export_main
from daefr.export.manifest import (
    FORMAT,
    MANIFEST_NAME,
    ManifestError,
    read_manifest,
    sha256_file,
    verify_against_manifest,
)
from daefr.runtime.backends import BackendError, create_restorer
from daefr.runtime.plan import PrecisionPlan

TINY = ["--random-weights", "--preset", "tiny", "--no-parity", "-q"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert export_main([*TINY, "--out-dir", str(out), "--only", "daefr"]) == 0
    return out


def test_a_bit_flipped_onnx_is_refused_before_use(exported, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("daefr.onnx", MANIFEST_NAME):
        (folder / name).write_bytes((exported / name).read_bytes())
    assert create_restorer(PrecisionPlan("ort"), onnx=folder / "daefr.onnx").resolution == 64  # intact: runs
    data = bytearray((folder / "daefr.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / "daefr.onnx").write_bytes(bytes(data))
    with pytest.raises(BackendError, match="does not match the sha256"):
        create_restorer(PrecisionPlan("ort"), onnx=folder / "daefr.onnx")


@pytest.mark.parametrize("content", [b"", b"\x08\x01garbage", b"not onnx at all"])
def test_corrupt_or_empty_onnx_without_a_manifest_is_one_error(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(
        BackendError, match=r"broken\.onnx: .*(not a readable ONNX file|ONNX Runtime cannot load it)"
    ) as err:
        create_restorer(PrecisionPlan("ort"), onnx=path)
    assert "\n" not in str(err.value)


def _manifest(folder, artifacts):
    (folder / MANIFEST_NAME).write_text(json.dumps({"format": FORMAT, "artifacts": artifacts, "engines": []}))


GOOD_SHA = "0" * 64
BAD_ENTRIES = {
    "outside (absolute)": ({"file": "/etc/passwd", "sha256": GOOD_SHA}, "not a plain file name"),
    "outside (relative)": ({"file": "../x.onnx", "sha256": GOOD_SHA}, "not a plain file name"),
    "dot-dot": ({"file": "..", "sha256": GOOD_SHA}, "not a plain file name"),
    "no file": ({"sha256": GOOD_SHA}, "'file' is missing"),
    "file not a string": ({"file": 5, "sha256": GOOD_SHA}, "'file' is missing or not a string"),
    "no sha": ({"file": "a.onnx"}, "'sha256' is missing"),
    "short sha": ({"file": "a.onnx", "sha256": "abc"}, "64 hex digits"),
    "not an object": ("a.onnx", "not an object"),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_malformed_entries_are_one_line(tmp_path, case):
    entry, match = BAD_ENTRIES[case]
    _manifest(tmp_path, [entry])
    with pytest.raises(ManifestError, match=match) as err:
        read_manifest(tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [("{", "not a readable manifest"), ("[]", "not a JSON object"), ('{"format": "x"}', "format"),
     ('{"format": "daefr-export/1", "artifacts": {}}', "not a list"), ("[" * 100_000, "not a readable")],
)  # fmt: skip
def test_unreadable_manifests_are_one_line(tmp_path, text, match):
    (tmp_path / MANIFEST_NAME).write_text(text)
    with pytest.raises(ManifestError, match=match):
        read_manifest(tmp_path)


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(b"x")
    folder = tmp_path / "engines"
    folder.mkdir()
    (folder / "a.onnx").symlink_to(outside)
    _manifest(folder, [{"file": "a.onnx", "sha256": sha256_file(outside)}])
    with pytest.raises(ManifestError, match="resolves outside"):
        verify_against_manifest(folder / "a.onnx")


def test_interrupted_reexport_leaves_no_stale_manifest(exported, tmp_path, monkeypatch):
    out = tmp_path / "again"
    out.mkdir()
    for p in exported.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    import daefr.export.onnx_export as onnx_export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx_export, "export_graph", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_main([*TINY, "--out-dir", str(out), "--only", "daefr"])
    assert not (out / MANIFEST_NAME).exists()  # the ONNX may be old or new: no manifest vouches for it


def test_export_refuses_an_out_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert export_main([*TINY, "--out-dir", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
