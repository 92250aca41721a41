"""daefr-restore / -convert / -degrade and the training data against hostile inputs and
outputs: nothing written over an input or another output, checks before work, one line."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from daefr.cli import convert, degrade, restore
from daefr.runtime.backends.base import NonFiniteOutput, RestorerBase
from daefr.training.data import DataError, FaceFolder, batches


def _faces(folder, names=("a.png", "a.jpg", "b.png"), size=64):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture()
def ckpt(tmp_path, tiny_model):
    path = tmp_path / "tiny.pth"
    torch.save(tiny_model.state_dict(), path)
    return path


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_restore_into_its_own_input_folder_is_refused(tmp_path, ckpt, capsys):
    faces = _faces(tmp_path / "faces")
    before = _snapshot(faces)
    assert restore.main([str(faces), "-o", str(faces), "--ckpt", str(ckpt), "--preset", "tiny"]) == 2
    assert "is the input folder" in capsys.readouterr().err
    assert _snapshot(faces) == before


def test_restore_names_colliding_stems_apart(tmp_path, ckpt):
    faces = _faces(tmp_path / "faces")
    out = tmp_path / "out"
    assert restore.main([str(faces), "-o", str(out), "--ckpt", str(ckpt), "--preset", "tiny", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.jpg.png", "a.png.png", "b.png"]


def test_restore_of_a_named_file_onto_itself_is_refused(tmp_path, ckpt, capsys):
    faces = _faces(tmp_path / "faces", names=("a.png",))
    before = _snapshot(faces)
    assert (
        restore.main([str(faces / "a.png"), "-o", str(faces), "--ckpt", str(ckpt), "--preset", "tiny"]) == 2
    )
    assert "is the input" in capsys.readouterr().err and _snapshot(faces) == before


def test_impossible_output_is_found_before_the_model_is_built(tmp_path, ckpt, capsys, monkeypatch):
    faces = _faces(tmp_path / "faces", names=("a.png",))
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(restore, "build_model", lambda args: pytest.fail("the model was built"))
    assert restore.main([str(faces), "-o", str(tmp_path / "file" / "out"), "--ckpt", str(ckpt)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert restore.main([str(faces), "-o", "/proc/daefr/out", "--ckpt", str(ckpt)]) == 2
    assert "cannot write in /proc" in capsys.readouterr().err


def test_fifo_and_bomb_in_a_batch_are_skipped_and_the_others_written(tmp_path, ckpt, capsys, monkeypatch):
    faces = _faces(tmp_path / "faces", names=("a.png", "b.png", "c.png"))
    os.mkfifo(faces / "pipe.png")
    Image.new("L", (300, 300)).save(faces / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # the 300x300 file is over 2x that
    out = tmp_path / "out"
    argv = [str(faces), "-o", str(out), "--ckpt", str(ckpt), "--preset", "tiny", "--batch-size", "4"]
    assert restore.main(argv) == 1
    assert "1 of 4 files failed" in capsys.readouterr().err  # the FIFO is not even listed
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]


def test_non_finite_checkpoint_is_exit_2(tmp_path, tiny_model, capsys):
    state = dict(tiny_model.state_dict())
    state["feat_emb.weight"] = torch.full_like(state["feat_emb.weight"], float("nan"))
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    faces = _faces(tmp_path / "faces", names=("a.png",))
    assert restore.main([str(faces), "-o", str(tmp_path / "o"), "--ckpt", str(path), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "NaN or Inf: feat_emb.weight" in err and err.count("\n") == 1


def _overflowing_state(tiny_model):
    """Finite weights whose forward pass overflows float32: the output is Inf/NaN."""
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    state["vqvae.decoder.conv_out.weight"].fill_(3e38)  # the last layer: nothing renormalises after it
    return state


def test_non_finite_output_is_exit_1_not_a_black_image(tmp_path, tiny_model, capsys):
    path = tmp_path / "huge.pth"
    torch.save(_overflowing_state(tiny_model), path)
    faces = _faces(tmp_path / "faces", names=("a.png",))
    out = tmp_path / "o"
    assert restore.main([str(faces), "-o", str(out), "--ckpt", str(path), "--preset", "tiny", "-q"]) == 1
    assert "NaN or Inf" in capsys.readouterr().err
    assert not out.exists() or not list(out.iterdir())


def test_every_backend_refuses_non_finite_output(tiny_model, tmp_path):
    from daefr.runtime.backends import create_restorer, export_onnx
    from daefr.runtime.plan import PrecisionPlan

    tiny_model.load_state_dict(_overflowing_state(tiny_model))
    batch = torch.zeros(1, 3, 64, 64)
    torch_restorer = create_restorer(PrecisionPlan("torch"), model=tiny_model)
    with pytest.raises(NonFiniteOutput, match="torch backend"):
        torch_restorer.restore(batch)
    onnx = export_onnx(tiny_model, tmp_path / "huge.onnx")
    with pytest.raises(NonFiniteOutput, match="ort backend"):
        create_restorer(PrecisionPlan("ort"), onnx=onnx).restore(batch)
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    with pytest.raises(NonFiniteOutput, match="openvino backend"):
        create_restorer(PrecisionPlan("openvino"), onnx=onnx).restore(batch)

    class NewBackend(RestorerBase):  # a backend written later gets the check too
        name = "new"
        resolution = 64

        def restore(self, batch):
            return torch.full_like(batch, float("inf")), torch.zeros(1, 16, dtype=torch.long)

    with pytest.raises(NonFiniteOutput, match="new backend"):
        NewBackend().restore(batch)


def test_restore_det_max_side_flag(tmp_path, ckpt, capsys):
    faces = _faces(tmp_path / "faces", names=("a.png",))
    with pytest.raises(SystemExit) as info:
        restore.main([str(faces), "-o", str(tmp_path / "o"), "--ckpt", str(ckpt), "--det-max-side", "0"])
    assert info.value.code == 2
    assert "--det-max-side: 0: must be >= 32" in capsys.readouterr().err


def test_large_photo_with_a_small_face_is_found_with_det_max_side(astronaut_small_face):
    from daefr.runtime.face.detector import RetinaFaceDetector

    assert RetinaFaceDetector(max_side=640).detect(astronaut_small_face) == []
    assert len(RetinaFaceDetector(max_side=2400).detect(astronaut_small_face)) >= 1


@pytest.fixture()
def astronaut_small_face():
    """The astronaut's face (about 100 px) pasted into a 2400x1600 grey photo."""
    skimage = pytest.importorskip("skimage")
    face = np.asarray(Image.fromarray(skimage.data.astronaut()[30:230, 120:320]).resize((100, 100)))
    photo = np.full((1600, 2400, 3), 120, np.uint8)
    photo[700:800, 1150:1250] = face
    return photo


def test_degrade_negative_seed_and_collisions(tmp_path, capsys):
    faces = _faces(tmp_path / "faces")
    with pytest.raises(SystemExit) as info:
        degrade.main([str(faces), "-o", str(tmp_path / "o"), "--seed", "-1"])
    assert info.value.code == 2 and "--seed: -1: must be >= 0" in capsys.readouterr().err
    assert degrade.main([str(faces), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "a.jpg.png",
        "a.png.png",
        "b.png",
        "degradation.json",
    ]
    assert degrade.main([str(faces), "-o", str(faces), "-q"]) == 2


def test_degrade_skips_a_bomb(tmp_path, monkeypatch, capsys):
    faces = _faces(tmp_path / "faces", names=("a.png",))
    Image.new("L", (300, 300)).save(faces / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)
    assert degrade.main([str(faces), "-o", str(tmp_path / "o"), "-q"]) == 1
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "degradation.json"]


def test_convert_writes_by_the_umask_and_refuses_its_input(tmp_path, ckpt, capsys):
    old = os.umask(0o022)
    try:
        out = tmp_path / "m.safetensors"
        assert convert.main([str(ckpt), "-o", str(out), "--preset", "tiny"]) == 0
        assert out.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)
    assert convert.main([str(out), "-o", str(out), "--preset", "tiny"]) == 2
    assert "is the input" in capsys.readouterr().err


def _degradation():
    from daefr.degradation import STAGE_DEGRADATIONS

    return STAGE_DEGRADATIONS["fusion"]


def test_training_data_skips_a_bad_image(tmp_path, caplog):
    faces = _faces(tmp_path / "faces", names=("a.png", "b.png"))
    (faces / "c.png").write_bytes(b"\x89PNG broken")
    data = FaceFolder(faces, 64, _degradation())
    item = data[2]  # c.png is unreadable: the next readable image stands in
    assert item["hq"].shape == (3, 64, 64)
    assert "skipped" in caplog.text and "c.png" in caplog.text


def test_training_data_error_from_a_worker_is_one_line(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(b"not an image")
    data = FaceFolder(folder, 64, _degradation())
    with pytest.raises(DataError) as err:
        next(batches(data, 1, 0, num_workers=2))
    assert "\n" not in str(err.value) and "none of them is readable" in str(err.value)


def test_convert_fp16_refuses_weights_beyond_half_range(tmp_path, tiny_model, capsys):
    state = dict(tiny_model.state_dict())
    state["feat_emb.bias"] = torch.full_like(state["feat_emb.bias"], 1e6)  # finite in fp32, Inf in fp16
    path = tmp_path / "big.pth"
    torch.save(state, path)
    out = tmp_path / "half.safetensors"
    assert convert.main([str(path), "-o", str(out), "--preset", "tiny", "--fp16"]) == 1
    assert "(float16): 1 tensors hold NaN or Inf: feat_emb.bias" in capsys.readouterr().err
    assert not out.exists()


def test_unaligned_photo_keeps_the_orientation_it_is_shown_in(tmp_path, ckpt):
    stored = np.zeros((40, 80, 3), np.uint8)  # landscape as stored, portrait as shown (EXIF 6)
    stored[:, :10] = 255  # the stored left edge is the shown top edge
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    (tmp_path / "in").mkdir()
    img.save(tmp_path / "in" / "phone.jpg", exif=exif, quality=95)
    out = tmp_path / "out"
    assert restore.main([str(tmp_path / "in"), "-o", str(out), "--ckpt", str(ckpt), "--preset", "tiny",
                         "--unaligned", "-q"]) == 0  # fmt: skip
    shown = np.asarray(Image.open(out / "phone.png"))
    assert shown.shape[:2] == (80, 40)  # portrait, as the photo is shown
    assert shown[:10].mean() > 200 and shown[-10:].mean() < 50  # top edge white, no tag needed
    assert 0x0112 not in Image.open(out / "phone.png").getexif()


def test_report_checks_its_output_folder_before_measuring(tmp_path, capsys):
    from daefr.runtime.report import cli as report_cli

    (tmp_path / "file").write_text("x")
    assert report_cli.main(["--random-weights", "--preset", "tiny", "--out", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
