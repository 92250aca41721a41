"""daefr-restore and daefr-convert through main([...])."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from daefr.checkpoint import read_state_dict
from daefr.cli import convert, restore


@pytest.fixture()
def faces(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(folder / f"face{i}.png")
    Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(folder / "odd_size.jpg")
    return folder


@pytest.fixture()
def tiny_ckpt(tmp_path, tiny_model):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_model.state_dict(), path)
    return path


def test_restore_folder_writes_one_png_per_face(faces, tiny_ckpt, tiny_model, tmp_path, caplog):
    out = tmp_path / "out"
    code = restore.main(
        [str(faces), "-o", str(out), "--ckpt", str(tiny_ckpt), "--preset", "tiny", "--batch-size", "3"]
    )
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["face0.png", "face1.png", "face2.png", "odd_size.png"]
    assert "not an aligned 64x64 face; resizing" in caplog.text
    # The file holds what the model computes for that face.
    rgb = np.asarray(Image.open(faces / "face1.png"))
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        expected = (
            ((tiny_model(x).restored[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
        )
    got = np.asarray(Image.open(out / "face1.png"))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_unreadable_file_is_skipped_and_exit_code_says_so(faces, tiny_ckpt, tmp_path, capsys):
    (faces / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    code = restore.main([str(faces), "-o", str(out), "--ckpt", str(tiny_ckpt), "--preset", "tiny"])
    assert code == 1
    assert "1 of 5 files failed" in capsys.readouterr().err
    assert len(list(out.glob("*.png"))) == 4
    assert not list(out.glob(".*tmp*")), "a temporary file was left behind"


def test_random_weights_run_is_labelled(faces, tmp_path, caplog):
    code = restore.main(
        [str(faces / "face0.png"), "-o", str(tmp_path / "o"), "--random-weights", "--preset", "tiny"]
    )
    assert code == 0
    assert "RANDOM weights" in caplog.text


def test_mismatched_checkpoint_is_exit_2(faces, tiny_ckpt, tmp_path, capsys):
    code = restore.main(
        [str(faces), "-o", str(tmp_path / "o"), "--ckpt", str(tiny_ckpt), "--preset", "official"]
    )
    assert code == 2
    assert "does not match the DAEFR model" in capsys.readouterr().err


def test_missing_input_is_exit_2(tmp_path, tiny_ckpt):
    assert restore.main([str(tmp_path / "nope.png"), "-o", str(tmp_path), "--ckpt", str(tiny_ckpt)]) == 2


def test_bad_flags_are_exit_2(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        restore.main([str(tmp_path), "-o", str(tmp_path), "--random-weights", "--batch-size", "0"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("fp16", [False, True])
def test_convert_writes_inference_tensors(tiny_ckpt, tiny_model, tmp_path, fp16):
    out = tmp_path / "model.safetensors"
    argv = [str(tiny_ckpt), "-o", str(out), "--preset", "tiny"] + (["--fp16"] if fp16 else [])
    assert convert.main(argv) == 0
    state = read_state_dict(out)
    assert sorted(state) == sorted(tiny_model.state_dict())  # safetensors stores keys sorted
    assert state["feat_emb.weight"].dtype == (torch.float16 if fp16 else torch.float32)


def test_convert_rejects_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    assert convert.main([str(bad), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "bad.ckpt" in capsys.readouterr().err


def test_unaligned_photo_gets_its_face_restored_and_the_rest_kept(tmp_path, tiny_ckpt):
    from skimage import data

    photo = data.astronaut()
    Image.fromarray(photo).save(tmp_path / "astronaut.png")
    out = tmp_path / "out"
    argv = [
        str(tmp_path / "astronaut.png"),
        "-o",
        str(out),
        "--ckpt",
        str(tiny_ckpt),
        "--preset",
        "tiny",
        "--unaligned",
    ]
    assert restore.main(argv) == 0
    restored = np.asarray(Image.open(out / "astronaut.png")).astype(int)
    assert restored.shape == photo.shape
    changed = np.abs(restored - photo).sum(-1) > 0
    # The face (upper middle of the portrait) changed; the bottom-right corner did not.
    assert changed[80:200, 170:300].mean() > 0.5
    assert not changed[400:, 400:].any()


def test_outputs_get_normal_file_permissions(tmp_path):
    from daefr.atomic import atomic_write_text

    target = tmp_path / "report.json"
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert target.stat().st_mode & 0o044, "outputs must be readable by others, as with open()"


def test_out_reports_are_json_or_the_printed_table(tmp_path):
    import json

    from daefr.atomic import write_report

    write_report(tmp_path / "r.json", "the table\n", {"rows": [1, 2]})
    write_report(tmp_path / "r.txt", "the table\n", {"rows": [1, 2]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"rows": [1, 2]}
    assert (tmp_path / "r.txt").read_text() == "the table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.txt"]  # no temporaries left
