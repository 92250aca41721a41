"""Fixtures of the runtime tests: a tiny model, its ONNX export, a face detector, test clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from daefr import DAEFR, DAEFRConfig
from daefr.seeded_weights import seed_model_

TRT_MISSING = (
    "TensorRT is not installed (cannot be installed on this machine; the lent GPU machine has none either)"
)


def has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_trt = pytest.mark.skip(reason=TRT_MISSING)
    for item in items:
        if "trt" in item.keywords and not has_tensorrt():
            item.add_marker(skip_trt)


def make_tiny_model() -> DAEFR:
    return seed_model_(DAEFR(DAEFRConfig.from_name("tiny")), salt="runtime-test").eval()


@pytest.fixture(scope="session")
def tiny_runtime_model() -> DAEFR:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, tiny_runtime_model: DAEFR) -> Path:
    """The end-to-end ``daefr`` graph of the tiny model, through the project's exporter."""
    from daefr.runtime.backends import export_onnx

    return export_onnx(tiny_runtime_model, tmp_path_factory.mktemp("onnx") / "daefr_tiny.onnx")


@pytest.fixture(scope="session")
def detector():
    from daefr.runtime.face import RetinaFaceDetector

    return RetinaFaceDetector()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # (512, 512, 3) uint8, public domain (NASA)


@pytest.fixture()
def faces_batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
