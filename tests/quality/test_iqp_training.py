"""IQPFR's plug-in stages trained inside the test on the tiny preset (about 1.5 minutes on 2
cores): daefr-train iqp-codebook -> iqp-fusion from a seeded random tiny DAEFR, then what the
issue asks to be shown on held-out degraded faces, eagerly and through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from daefr import DAEFR, DAEFRConfig
from daefr.cli.restore import main as restore_main
from daefr.cli.train import main as train_main
from daefr.quality.checkpoint import load_conditioned_model
from daefr.quality.demo_data import held_out_degraded, write_training_faces
from daefr.quality.scorer import build_scorer
from daefr.quality.sweep import score_sweep
from daefr.seeded_weights import seed_model_
from daefr.training.config import stage_config
from daefr.training.iqp_codebook import IQPCodebookStage
from daefr.training.metrics import read_log
from daefr.training.state import load_checkpoint

THRESHOLD = 0.6
# 128 iqp-fusion steps: the shortest run where the high-S minus low-S score margin was positive
# for every seed tried (5 of 5: +0.016 this seed, +0.022, +0.061, +0.143, +0.049; at 16 steps
# the sign depended on the seed: +0.039, +0.059, -0.013, +0.097; without L_quality 1 of 4).
FUSION_STEPS = 128
COMMON = [
    *"--preset tiny --batch-size 2 --device cpu --num-workers 0 -q --quality-scorer brisque".split(),
    *("--quality-threshold", str(THRESHOLD), "--base-lr", "2e-4"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("iqp")
    write_training_faces(root / "faces")
    plain = DAEFR(DAEFRConfig.from_name("tiny", training_modules=True))
    torch.save(seed_model_(plain, "iqp-tiny").state_dict(), root / "plain.pt")
    out = {"root": root, "faces": root / "faces", "plain": root / "plain.pt"}
    for stage, init, steps in (
        ("iqp-codebook", root / "plain.pt", 4),
        ("iqp-fusion", root / "iqp-codebook" / "last.pt", FUSION_STEPS),
    ):
        argv = [stage, "--data", str(root / "faces"), "--out", str(root / stage), "--init", str(init)]
        assert train_main([*argv, "--steps", str(steps), *COMMON]) == 0
        out[stage] = root / stage
    return out


@pytest.fixture(scope="module")
def model(runs: dict[str, Path]) -> DAEFR:
    return load_conditioned_model(runs["iqp-fusion"] / "iqpfr.pt", "tiny")


def test_logs_show_hq_plus_fed_only_above_threshold(runs: dict[str, Path]) -> None:
    records = read_log(runs["iqp-codebook"] / "log.jsonl")
    fed = [r for r in records if r["hq_plus_images"] > 0]
    assert fed and sum(r["hq_plus_images"] for r in records) < 2 * len(records)  # some were left out
    assert all(r["hq_plus_min_score"] > THRESHOLD for r in fed)


def test_fusion_condition_is_the_score_of_the_decoded_target(runs: dict[str, Path], model: DAEFR) -> None:
    """S of a training face is its target codes' decoded score (``target_score``), not the
    image's (``mean_score``); quality_range spans those conditions, not iqp-codebook's scores."""
    records = read_log(runs["iqp-fusion"] / "log.jsonl")
    lo, hi = (float(v) for v in model.iqp.quality_range)
    assert all(lo - 1e-5 <= r["target_score"] <= hi + 1e-5 for r in records)
    assert max(abs(r["target_score"] - r["mean_score"]) for r in records) > 0.01
    payload = load_checkpoint(runs["iqp-codebook"] / "last.pt", ("iqp-codebook",))
    codebook_range = payload["models"]["daefr"]["iqp.quality_range"]
    assert not torch.allclose(codebook_range, model.iqp.quality_range)


class BrightnessScorer:
    """A stand-in NR-IQA with known scores: (mean pixel + 1) / 2."""

    name = "brightness"
    differentiable = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return ((images.mean(dim=(1, 2, 3)) + 1) / 2).float()


def _codebook_stage(runs: dict[str, Path]) -> IQPCodebookStage:
    cfg = stage_config(
        "iqp-codebook",
        preset="tiny",
        batch_size=2,
        num_workers=0,
        base_lr=1e-3,
        steps=2,  # step 0 is not the last: a last step with nothing above S_thr is an error
        quality_threshold=0.5,
    )
    stage = IQPCodebookStage(
        cfg, DAEFRConfig.from_name("tiny"), torch.device("cpu"), None, BrightnessScorer()
    )
    from daefr.checkpoint import read_state_dict

    stage.init_from_official(read_state_dict(runs["plain"]), source="plain")
    return stage


def test_hq_plus_codebook_gets_nothing_from_faces_at_or_below_threshold(runs: dict[str, Path]) -> None:
    g = torch.Generator().manual_seed(0)
    bright = torch.rand(1, 3, 64, 64, generator=g) * 0.8 + 0.1  # score ~0.75 > 0.5
    dark = -(torch.rand(1, 3, 64, 64, generator=g) * 0.8 + 0.1)  # score ~0.25
    after = {}
    for name, hq in {"mixed": torch.cat([bright, dark]), "bright only": bright, "dark only": dark}.items():
        stage = _codebook_stage(runs)
        before = stage.model.iqp.hq_plus_quantize.embedding.weight.clone()
        logs = stage.train_step({"hq": hq, "lq": hq}, 0)
        after[name] = stage.model.iqp.hq_plus_quantize.embedding.weight.detach().clone()
        assert logs["hq_plus_images"] == (hq.mean(dim=(1, 2, 3)) > 0).sum().item()
        if name == "dark only":
            assert torch.equal(after[name], before) and logs["loss"] == 0.0
        else:
            assert not torch.equal(after[name], before)
    # the dark face in the mixed batch changed nothing: the same update as the bright face alone
    assert torch.equal(after["mixed"], after["bright only"])


def test_different_quality_gives_different_codes_and_fixed_quality_is_deterministic(model: DAEFR) -> None:
    faces = held_out_degraded()
    lo, hi = (float(v) for v in model.iqp.quality_range)
    assert 0 <= lo < hi <= 1
    with torch.no_grad():
        a = model(faces, torch.full((4,), lo))
        b = model(faces, torch.full((4,), hi))
        again = model(faces, torch.full((4,), hi))
        default = model(faces)
    changed = torch.cat([a.code_idx != b.code_idx, a.plus_idx != b.plus_idx], 1).float().mean().item()
    print(f"codes changed between S={lo:.3f} and S={hi:.3f}: {changed:.3%}")
    assert changed > 0
    assert torch.equal(b.code_idx, again.code_idx) and torch.equal(b.plus_idx, again.plus_idx)
    assert torch.equal(b.restored, again.restored)
    assert torch.equal(default.plus_idx, b.plus_idx)  # the default S is the highest trained for


def test_score_at_high_quality_beats_low_quality_on_held_out_faces(model: DAEFR) -> None:
    lo, hi = (float(v) for v in model.iqp.quality_range)
    rows = score_sweep(model, build_scorer("brisque"), held_out_degraded(), [lo, hi])
    for r in rows:
        print(f"S={r.quality:.4f}: BRISQUE score mean {r.mean:.4f} (min {r.min:.4f}, max {r.max:.4f})")
    assert rows[1].mean > rows[0].mean, (
        "the quality condition did not steer the output towards a higher NR-IQA score"
    )


def test_onnx_runtime_codes_equal_eager_for_several_quality_values(model: DAEFR, tmp_path: Path) -> None:
    from daefr.export.quality_graph import export_quality_transformer, quality_parity

    path = export_quality_transformer(model, tmp_path / "transformer_quality.onnx")
    faces = held_out_degraded()
    with torch.no_grad():
        fused = model.fuse(model.encode_hq(faces), model.encode_lq(faces))
    lo, hi = (float(v) for v in model.iqp.quality_range)
    agreement = quality_parity(model, path, fused, [0.0, 0.25, lo, (lo + hi) / 2, hi, 1.0])
    print("ORT vs eager code agreement per S:", agreement)
    assert all(v == 1.0 for v in agreement.values())
    assert len(agreement) == 6


def _png(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    face = ((held_out_degraded()[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    Image.fromarray(face).save(folder / "face.png")
    return folder / "face.png"


def test_restore_cli_quality(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    face = _png(tmp_path / "in")
    base = [str(face), "--preset", "tiny", "--device", "cpu", "-q"]
    plain = tmp_path / "plain.pt"
    torch.save(seed_model_(DAEFR(DAEFRConfig.from_name("tiny")), "plain").state_dict(), plain)
    assert restore_main([*base, "-o", str(tmp_path / "p"), "--ckpt", str(plain), "--quality", "0.9"]) == 2
    assert "plain DAEFR" in capsys.readouterr().err
    assert restore_main([*base, "-o", str(tmp_path / "r"), "--random-weights", "--quality", "0.9"]) == 2
    ckpt = str(runs["iqp-fusion"] / "iqpfr.pt")
    for bad in ("1.5", "-0.1", "nan", "high"):
        with pytest.raises(SystemExit) as exit_:
            restore_main([*base, "-o", str(tmp_path / "x"), "--ckpt", ckpt, "--quality", bad])
        assert exit_.value.code == 2
    outs = {}
    for s in ("0.0", "1.0", None):
        out = tmp_path / f"q{s}"
        extra = [] if s is None else ["--quality", s]
        assert restore_main([*base, "-o", str(out), "--ckpt", ckpt, *extra]) == 0
        outs[s] = (out / "face.png").read_bytes()
    assert outs["0.0"] != outs["1.0"]
    capsys.readouterr()
    # No exported graph carries the quality input: another backend would drop it, so it is refused.
    assert restore_main([*base, "-o", str(tmp_path / "o"), "--ckpt", ckpt, "--backend", "ort"]) == 2
    assert "torch backend only" in capsys.readouterr().err
    assert restore_main([*base, "-o", str(tmp_path / "plain_ok"), "--ckpt", str(plain)]) == 0


@pytest.mark.parametrize(
    ("stage", "extra", "message"),
    [
        ("iqp-codebook", ["--quality-scorer", "none.pth"], "no such weight file"),
        ("iqp-fusion", [], "iqp-codebook"),
        ("fusion", ["--quality-scorer", "brisque"], "only the iqp-codebook and iqp-fusion"),
        ("iqp-codebook", ["--quality-scorer", "brisque", "--quality-weight", "1"], "only the iqp-fusion"),
    ],
)
def test_train_cli_refuses_unusable_iqp_runs(
    runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stage: str,
    extra: list[str],
    message: str,
) -> None:
    flags = "--preset tiny --steps 1 --batch-size 2 --device cpu --num-workers 0 -q".split()
    if stage == "iqp-fusion":  # plain DAEFR weights cannot start iqp-fusion
        extra = ["--quality-scorer", "brisque"]
    argv = [stage, "--data", str(runs["faces"]), "--out", str(tmp_path / "o"), "--init", str(runs["plain"])]
    assert train_main([*argv, *flags, *extra]) == 2
    assert message in capsys.readouterr().err


def test_train_cli_needs_a_scorer_and_a_threshold_in_range(runs: dict[str, Path], tmp_path: Path) -> None:
    argv = [
        "iqp-codebook",
        "--data",
        str(runs["faces"]),
        "--out",
        str(tmp_path / "o"),
        "--init",
        str(runs["plain"]),
    ]
    flags = "--preset tiny --steps 1 --device cpu -q".split()
    assert train_main([*argv, *flags]) == 2
    for bad in ("0", "1", "-1", "nan"):
        assert train_main([*argv, *flags, "--quality-scorer", "brisque", "--quality-threshold", bad]) == 2


def test_iqp_codebook_that_teaches_nothing_fails(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "iqp-codebook",
        "--data",
        str(runs["faces"]),
        "--out",
        str(tmp_path / "o"),
        "--init",
        str(runs["plain"]),
    ]
    flags = "--preset tiny --steps 1 --batch-size 2 --device cpu --num-workers 0 -q --quality-scorer brisque".split()
    assert train_main([*argv, *flags, "--quality-threshold", "0.999"]) == 1
    assert "learned nothing" in capsys.readouterr().err
