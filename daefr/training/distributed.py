"""Data-parallel training under ``torchrun``: one process per GPU, ``DistributedDataParallel``.

Launch: ``torchrun --nproc-per-node 8 -m daefr.cli.train STAGE ...``. With ``WORLD_SIZE`` unset
or 1 nothing is initialised and modules are not wrapped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group that ``torchrun`` describes (NCCL on CUDA, gloo on CPU).
    On CUDA each process takes the GPU ``LOCAL_RANK``. Returns (context, device)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank), device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DDP around a module with trainable parameters when running on several processes."""
    if ctx.world_size <= 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def barrier(ctx: DistContext) -> None:
    if ctx.world_size > 1:
        dist.barrier()
