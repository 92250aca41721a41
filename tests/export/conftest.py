"""Fixtures shared by the export tests: one seeded tiny model and its eager stages."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from daefr import DAEFR, DAEFRConfig
from daefr.seeded_weights import seed_model_

TRT_SKIP_REASON = (
    "TensorRT is not installed (cannot be installed on this machine; the lent GPU machine has none either)"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = importlib.util.find_spec("tensorrt") is None
    no_gpu = not torch.cuda.is_available()
    for item in items:
        if "trt" not in item.keywords:
            continue
        if missing:
            item.add_marker(pytest.mark.skip(reason=TRT_SKIP_REASON))
        elif no_gpu:
            item.add_marker(
                pytest.mark.skip(reason="TensorRT needs an NVIDIA GPU (torch.cuda.is_available() is False)")
            )


@pytest.fixture(scope="session")
def export_model() -> DAEFR:
    """Tiny preset with seeded weights; session-wide, so tests must not modify it."""
    return seed_model_(DAEFR(DAEFRConfig.from_name("tiny")), salt="export-test").eval()


@pytest.fixture(scope="session")
def export_stages(export_model):
    from daefr.export.parity import stages_for

    return stages_for(export_model, (1, 3))
