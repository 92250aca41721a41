"""``daefr-train`` usage errors: one clear line on stderr, exit 2, nothing trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from daefr.cli.train import main
from daefr.training.config import STAGE_DEFAULTS, TrainConfig, stage_config


@pytest.fixture()
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "weights.pt"
    torch.save({"format": "daefr-train-1", "stage": "codebook", "preset": "tiny"}, path)
    return path


CASES = {
    "no such data": (["codebook", "--data", "{missing}", "--perceptual", "none"], "no such folder"),
    "empty data": (["codebook", "--data", "{empty}", "--perceptual", "none"], "no images"),
    "no perceptual": (["codebook", "--data", "{faces}"], "--perceptual PATH"),
    "bad perceptual": (["codebook", "--data", "{faces}", "--perceptual", "{tensors}"], "not an LPIPS-VGG"),
    "perceptual not weights": (["codebook", "--data", "{faces}", "--perceptual", "{ckpt}"], "not tensors"),
    "missing perceptual": (["codebook", "--data", "{faces}", "--perceptual", "{missing}"], "no such file"),
    "perceptual in fusion": (
        ["fusion", "--data", "{faces}", "--init", "{ckpt}", "--perceptual", "none"],
        "no perceptual",
    ),
    "association without init": (["association", "--data", "{faces}", "--perceptual", "none"], "--init"),
    "init and resume": (
        ["codebook", "--data", "{faces}", "--perceptual", "none", "--init", "{ckpt}", "--resume", "{ckpt}"],
        "not both",
    ),
    "missing init": (["fusion", "--data", "{faces}", "--init", "{missing}"], "no such file"),
    "wrong init stage": (
        ["fusion", "--data", "{faces}", "--init", "{ckpt}", "--preset", "tiny"],
        "'codebook' checkpoint",
    ),
    "amp on cpu": (["codebook", "--data", "{faces}", "--perceptual", "none", "--amp", "bf16"], "needs CUDA"),
    "zero steps": (["codebook", "--data", "{faces}", "--perceptual", "none", "--steps", "0"], "--steps 0"),
    "bad lr": (["codebook", "--data", "{faces}", "--perceptual", "none", "--base-lr", "-1"], "--base-lr"),
}
if not torch.cuda.is_available():
    CASES["cuda without cuda"] = (
        ["codebook", "--data", "{faces}", "--perceptual", "none", "--device", "cuda"],
        "CUDA",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_usage_errors_exit_2_with_one_line(
    case: str, faces_dir: Path, tmp_path: Path, ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    torch.save({"conv.weight": torch.zeros(2, 2)}, tmp_path / "tensors.pt")
    places = {"faces": faces_dir, "missing": tmp_path / "missing", "empty": tmp_path / "empty", "ckpt": ckpt}
    places["tensors"] = tmp_path / "tensors.pt"
    argv, message = CASES[case]
    argv = [a.format(**places) for a in argv]
    if "--device" not in argv:
        argv += ["--device", "cpu"]
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("daefr-train: error:") and len(err.splitlines()) == 1, err
    assert message in err
    assert not (out / "last.pt").exists()


def test_bad_flag_values_are_argparse_errors(faces_dir: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["decoder", "--data", str(faces_dir)])
    assert exit_info.value.code == 2


def test_stage_defaults_are_the_papers() -> None:
    assert [STAGE_DEFAULTS[s].steps for s in ("codebook", "association", "fusion")] == [
        700_000,
        70_000,
        100_000,
    ]
    cfg = STAGE_DEFAULTS["codebook"]
    # 4.5e-6 per image and GPU (configs/*.yaml, taming's scaling) x 4 per GPU x 8 GPUs = 1.44e-4
    assert cfg.learning_rate(world_size=8) == pytest.approx(1.44e-4)
    assert cfg.betas == (0.5, 0.9) and cfg.loss.commitment_beta == 0.25 and cfg.loss.disc_weight == 0.8
    assert STAGE_DEFAULTS["association"].loss.patch_weight == 1.0
    assert STAGE_DEFAULTS["association"].loss.patch_logit_scale == pytest.approx(1 / 0.07)
    assert STAGE_DEFAULTS["fusion"].loss.feat_weight == 10.0
    assert STAGE_DEFAULTS["fusion"].degradation.scale == (0.8, 30.0)
    with pytest.raises(ValueError, match="batch_size"):
        stage_config("codebook", batch_size=0)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(stage="codebook", amp="fp8")
