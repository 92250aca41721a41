"""codebook -> association -> fusion through ``daefr-train``; the result is a DAEFR that
loads strictly and restores faces, with every tensor where the official layout wants it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from daefr.checkpoint import load_model, load_weights_into, read_state_dict
from daefr.cli.train import main
from daefr.config import DAEFRConfig
from daefr.model import DAEFR
from daefr.training.data import read_rgb, resize_crop, to_tensor
from daefr.training.metrics import read_log
from daefr.training.state import load_checkpoint

COMMON = "--preset tiny --steps 2 --batch-size 1 --device cpu --num-workers 0 -q".split()


@pytest.fixture(scope="module")
def chain(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chain")
    runs = {name: root / name for name in ("codebook", "association", "fusion")}

    def train(stage: str, *extra: str) -> int:
        return main([stage, "--data", str(faces_dir), "--out", str(runs[stage]), *COMMON, *extra])

    assert train("codebook", "--perceptual", "none", "--disc-start", "1") == 0
    assert train("association", "--perceptual", "none", "--init", str(runs["codebook"] / "last.pt")) == 0
    assert train("fusion", "--init", str(runs["association"] / "last.pt")) == 0
    return runs


def test_each_stage_logs_and_checkpoints_its_steps(chain: dict[str, Path]) -> None:
    for stage, folder in chain.items():
        records = read_log(folder / "log.jsonl")
        assert [r["step"] for r in records] == [1, 2], stage
        assert all(np.isfinite(r["loss"]) for r in records)
        payload = load_checkpoint(folder / "last.pt", (stage,), "tiny")
        assert payload["step"] == 2
    assert {"hq_patch", "lq_patch"} <= set(read_log(chain["association"] / "log.jsonl")[0])
    assert "hq_disc" in read_log(chain["codebook"] / "log.jsonl")[1]  # GAN from step 1 (--disc-start 1)


def test_final_weights_restore_faces(chain: dict[str, Path], faces_dir: Path) -> None:
    model = load_model(chain["fusion"] / "daefr.pt", "tiny")  # strict, inference tensors
    faces = [to_tensor(resize_crop(read_rgb(p), 64)) for p in sorted(faces_dir.iterdir())[:2]]
    with torch.no_grad():
        result = model(torch.stack(faces))
    assert result.restored.shape == (2, 3, 64, 64) and torch.isfinite(result.restored).all()
    assert result.code_idx.shape == (2, 256) and result.code_idx.dtype == torch.int64
    assert 0 <= result.code_idx.min() and result.code_idx.max() < 64


def test_final_weights_have_the_official_layout_from_the_right_stages(chain: dict[str, Path]) -> None:
    state = read_state_dict(chain["fusion"] / "daefr.pt")
    full = DAEFR(DAEFRConfig.from_name("tiny", training_modules=True))
    assert list(state) == list(full.state_dict())  # every key, official order
    load_weights_into(full, state)  # strict
    codebook = load_checkpoint(chain["codebook"] / "last.pt")["models"]
    association = load_checkpoint(chain["association"] / "last.pt")["models"]
    torch.manual_seed(0)  # the fusion stage's initialisation (FusionStage seeds with --seed 0)
    fusion_start = DAEFR(DAEFRConfig.from_name("tiny", training_modules=True)).state_dict()
    same = {
        "vqvae.Fixed_encoder.conv_in.weight": codebook["hq"]["encoder.conv_in.weight"],
        "vqvae.Fixed_quantize.embedding.weight": codebook["hq"]["quantize.embedding.weight"],
        "vqvae.decoder.conv_out.weight": codebook["hq"]["decoder.conv_out.weight"],
        "vqvae.post_quant_conv.weight": codebook["hq"]["post_quant_conv.weight"],
        "vqvae.Fixed_quant_conv.weight": codebook["hq"]["quant_conv.weight"],
        "vqvae.HQ_quantize.embedding.weight": association["hq"]["quantize.embedding.weight"],
        "vqvae.LQ_quantize.embedding.weight": association["lq"]["quantize.embedding.weight"],
    }
    for key, expected in same.items():
        assert torch.equal(state[key], expected), key
    # the associated encoders start from the association stage and keep training in stage 3,
    # as in the original (daefr.py:552-567)
    trained = {
        "vqvae.HQ_encoder.conv_in.weight": association["hq"]["encoder.conv_in.weight"],
        "vqvae.HQ_quant_conv.weight": association["hq"]["quant_conv.weight"],
        "vqvae.encoder.conv_in.weight": association["lq"]["encoder.conv_in.weight"],
        "vqvae.quant_conv.weight": association["lq"]["quant_conv.weight"],
    }
    for key, start in trained.items():
        assert state[key].shape == start.shape and not torch.equal(state[key], start), key
    # the association stage trained its HQ branch away from the stage-1 one
    key = "encoder.conv_in.weight"
    assert not torch.equal(association["hq"][key], codebook["hq"][key])
    # the fusion stage trained MHCA and the transformer (fresh init: zeros for position_emb)
    for key in ("cross_attention.q.weight", "ft_layers.0.linear1.weight", "idx_pred_layer.1.weight"):
        assert not torch.equal(state[key], fusion_start[key]), key
    assert state["position_emb"].abs().sum() > 0
