"""Data parallel as ``torchrun`` runs it: two CPU processes (gloo) train on different shards
and end with identical weights, because DDP averages every gradient (GAN steps included)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from training_helpers import tiny_config

from daefr.config import DAEFRConfig
from daefr.training.data import FaceFolder
from daefr.training.distributed import init_distributed, shutdown
from daefr.training.loop import run
from daefr.training.runner import build_stage


def _worker(rank: int, world_size: int, port: int, faces_dir: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        ctx, device = init_distributed(torch.device("cpu"))
        cfg = tiny_config("codebook", batch_size=1, steps=2, loss={"disc_start": 1}, save_every=10)
        dataset = FaceFolder(faces_dir, 64, cfg.degradation, seed=cfg.seed)
        stage = build_stage(cfg, DAEFRConfig.from_name("tiny"), device, ctx)
        seen: list[torch.Tensor] = []
        stage.ae["hq"].register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
        run(stage, cfg, dataset, out, device=device, ctx=ctx)
        torch.save({"models": stage.models(), "inputs": seen, "rank": ctx.rank}, Path(out) / f"rank{rank}.pt")
    finally:
        shutdown()


def _fusion_worker(rank: int, world_size: int, port: int, faces_dir: str, out: str) -> None:
    """Two fusion steps under DDP: the associated encoders train now, and every trainable
    tensor must get a gradient each step or DDP fails at the next forward."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        ctx, device = init_distributed(torch.device("cpu"))
        tiny = DAEFRConfig.from_name("tiny")
        branches = build_stage(tiny_config("association"), tiny, device)
        models = branches.models()
        cfg = tiny_config("fusion", batch_size=1, steps=2, save_every=10)
        stage = build_stage(cfg, tiny, device, ctx)
        stage.init_from({"stage": "association", "models": {**models, "fixed_hq": models["hq"]}})
        run(
            stage, cfg, FaceFolder(faces_dir, 64, cfg.degradation, seed=cfg.seed), out, device=device, ctx=ctx
        )
        torch.save({"models": stage.models()}, Path(out) / f"fusion{rank}.pt")
    finally:
        shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_stay_in_sync(faces_dir: Path, tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(faces_dir), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert not torch.equal(r0["inputs"][0], r1["inputs"][0])  # each rank its own shard
    compared = 0
    for name, state in r0["models"].items():
        for key, value in state.items():
            if "running_" in key or "num_batches_tracked" in key:
                continue  # BatchNorm statistics: DDP copies rank 0's at each forward, rank 0 saves
            assert torch.equal(value, r1["models"][name][key]), f"{name}.{key}"
            compared += 1
    assert compared > 100
    assert (tmp_path / "last.pt").is_file()  # rank 0 checkpoints


def test_fusion_trains_the_encoders_in_sync(faces_dir: Path, tmp_path: Path) -> None:
    mp.spawn(_fusion_worker, args=(2, _free_port(), str(faces_dir), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"fusion{r}.pt", weights_only=True)["models"]["daefr"] for r in (0, 1))
    assert all(torch.equal(v, r1[k]) for k, v in r0.items())
