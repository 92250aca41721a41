"""Deterministic weights from a salt, by the formula of ``shared/reference/README.md``.

Used for the conformance test against the original implementation's forward pass and for
demo runs without the official checkpoint (random weights restore nothing meaningful).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable

import torch

CONFORMANCE_SALT = "daefr-conformance"


def seeded_tensor(key: str, shape: tuple[int, ...], salt: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(f"{salt}:{key}".encode()))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if len(shape) >= 2:  # convs, linears, codebooks, position_emb
        return r / math.sqrt(math.prod(shape[1:]))
    if key.endswith("weight"):  # norm scales
        return 1 + 0.1 * r
    return 0.05 * r  # biases


def seeded_state_dict(
    shapes: Iterable[tuple[str, tuple[int, ...]]], salt: str = CONFORMANCE_SALT
) -> dict[str, torch.Tensor]:
    """{key: tensor} for (key, shape) pairs, in the given order."""
    return {key: seeded_tensor(key, tuple(shape), salt) for key, shape in shapes}


def seed_model_(model: torch.nn.Module, salt: str = CONFORMANCE_SALT) -> torch.nn.Module:
    """Fill every parameter of ``model`` in place with seeded weights; returns the model."""
    state = model.state_dict()
    model.load_state_dict(seeded_state_dict(((k, tuple(v.shape)) for k, v in state.items()), salt))
    return model
