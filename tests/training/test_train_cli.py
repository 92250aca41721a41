"""``daefr-train`` usage errors: one clear line on stderr, exit 2, nothing trained."""

from __future__ import annotations

import math
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
    "zero steps": (["codebook", "--data", "{faces}", "--perceptual", "none", "--steps", "0"], "--steps: 0"),
    "lq steps outside codebook": (
        ["fusion", "--data", "{faces}", "--init", "{ckpt}", "--lq-steps", "3"],
        "--lq-steps",
    ),
    "lq steps past the run": (
        ["codebook", "--data", "{faces}", "--perceptual", "none", "--steps", "3", "--lq-steps", "4"],
        "--lq-steps 4",
    ),
    "lr above 1": (["codebook", "--data", "{faces}", "--perceptual", "none", "--base-lr", "1"], "above 1"),
    "freeze outside fusion": (
        ["codebook", "--data", "{faces}", "--perceptual", "none", "--freeze-encoders"],
        "--freeze-encoders",
    ),
}
# Numeric flags the parser refuses (issue 12): one line, exit 2, before any work.
BAD_NUMBERS = [
    ("--base-lr", v) for v in ("inf", "-inf", "nan", "0", "-1", "1e400", "abc", "")
] + [
    ("--steps", "0"), ("--steps", "-3"), ("--steps", "1.5"), ("--steps", "inf"),
    ("--lq-steps", "0"), ("--batch-size", "0"), ("--batch-size", "-1"), ("--batch-size", "nan"),
    ("--seed", "-1"), ("--seed", str(2**32)), ("--disc-start", "-1"), ("--num-workers", "-1"),
    ("--num-workers", "100000"), ("--log-every", "0"), ("--save-every", "0"), ("--save-every", "x"),
]  # fmt: skip
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


@pytest.mark.parametrize(("flag", "value"), BAD_NUMBERS)
def test_bad_numbers_exit_2_with_one_line(
    flag: str, value: str, faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["codebook", "--data", str(faces_dir), "--perceptual", "none", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "out"), f"{flag}={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"daefr-train: error: argument {flag}") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_choices_and_help_return_their_codes(faces_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decoder", "--data", str(faces_dir)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["--help"]) == 0
    assert "--recipe" in capsys.readouterr().out


def test_recipes_give_the_papers_and_the_released_schedules() -> None:
    paper = {s: stage_config(s) for s in ("codebook", "association", "fusion")}
    # paper Sec. 4.1: 700K (HQ) / 400K (LQ) / 70K / 100K iterations, batch 32 on 8 GPUs, 1.44e-4
    assert [paper[s].steps for s in ("codebook", "association", "fusion")] == [700_000, 70_000, 100_000]
    assert paper["codebook"].branch_steps("lq") == 400_000 and paper["codebook"].branch_steps("hq") == 700_000
    assert all(c.batch_size == 4 and c.learning_rate(8) == pytest.approx(1.44e-4) for c in paper.values())
    released = {s: stage_config(s, recipe="released") for s in ("codebook", "association", "fusion")}
    # configs at 02d5010 on scripts' 4 GPUs: batch 3/2/2, lr = 4 x batch x 4.5e-6 (main_*.py:580)
    assert [released[s].batch_size for s in ("codebook", "association", "fusion")] == [3, 2, 2]
    assert released["codebook"].learning_rate(4) == pytest.approx(5.4e-5)
    assert released["fusion"].learning_rate(4) == pytest.approx(3.6e-5)
    # epochs x steps per epoch (70,000 faces / 4 GPUs / batch, last batch kept)
    assert released["codebook"].steps == 330 * math.ceil(17_500 / 3)
    assert released["codebook"].branch_steps("lq") == 250 * math.ceil(17_500 / 3)
    assert released["association"].steps == 50 * 8_750 and released["fusion"].steps == 100 * 8_750
    # --steps alone: both codebook branches that long
    assert stage_config("codebook", steps=9).branch_steps("lq") == 9
    # what the original trains, whatever the recipe
    for cfg in (*paper.values(), *released.values()):
        assert cfg.amp == "off" and cfg.loss.codebook_form == "original" and cfg.loss.perceptual_dropout
        assert not cfg.freeze_encoders
    cfg = STAGE_DEFAULTS["codebook"]
    assert cfg.betas == (0.5, 0.9) and cfg.loss.commitment_beta == 0.25 and cfg.loss.disc_weight == 0.8
    assert STAGE_DEFAULTS["association"].loss.patch_weight == 1.0
    assert STAGE_DEFAULTS["association"].loss.patch_logit_scale == pytest.approx(1 / 0.07)
    assert STAGE_DEFAULTS["fusion"].loss.feat_weight == 10.0
    assert STAGE_DEFAULTS["fusion"].degradation.scale == (0.8, 30.0)
    with pytest.raises(ValueError, match="batch_size"):
        stage_config("codebook", batch_size=0)
    with pytest.raises(ValueError, match="amp"):
        TrainConfig(stage="codebook", amp="fp8")
    for bad in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ValueError, match="base_lr"):
            TrainConfig(stage="codebook", base_lr=bad)
    with pytest.raises(ValueError, match="lq_steps"):
        TrainConfig(stage="codebook", steps=3, lq_steps=4)


def test_outputs_are_checked_before_any_work(
    faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--data", str(faces_dir), "--preset", "tiny", "--device", "cpu", "--num-workers", "0", "-q"]
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out in (a_file, a_file / "below"):
        assert main(["codebook", *base, "--perceptual", "none", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"daefr-train: error: --out {out}: cannot make") and len(err.splitlines()) == 1
    # --init naming this run's own checkpoint would be overwritten by the run
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "daefr-train-1", "stage": "codebook", "preset": "tiny"}, run / "last.pt")
    argv = ["association", *base, "--perceptual", "none", "--init", str(run / "last.pt"), "--out", str(run)]
    assert main(argv) == 2
    assert "this run writes that file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["codebook"], {"recipe": "paper", "batch_size": 4, "steps": 700_000, "lq_steps": 400_000}),
        (["codebook", "--recipe", "released"], {"batch_size": 3, "steps": 1_925_220, "lq_steps": 1_458_500}),
        (["codebook", "--steps", "10"], {"steps": 10, "lq_steps": None}),
        (["codebook", "--steps", "10", "--lq-steps", "4"], {"steps": 10, "lq_steps": 4}),
        (["fusion", "--recipe", "released", "--batch-size", "1"], {"batch_size": 1, "steps": 875_000}),
        (["fusion", "--freeze-encoders"], {"freeze_encoders": True}),
    ],
)
def test_flags_build_the_recipe_config(argv: list[str], expected: dict[str, object]) -> None:
    from daefr.cli.train import _config, build_parser

    args = build_parser().parse_args([*argv, "--data", "x"])
    loss: dict[str, object] = {"perceptual_weight": 0.0} if args.stage != "fusion" else {}
    cfg = _config(args, "off", loss)
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.amp == "off" and cfg.base_lr == 4.5e-6
    if args.stage == "codebook":
        assert cfg.loss.codebook_form == "original" and cfg.loss.perceptual_dropout
