"""Shared fixtures: the reference data of the original implementation and small models."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# Triton kernels run through the interpreter on machines without a GPU; this must be set
# before any kernel is defined, i.e. before daefr.kernels is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from daefr import DAEFR, DAEFRConfig
from daefr.seeded_weights import seed_model_

REPO = Path(__file__).resolve().parents[1]
# What the original DAEFR code does (state_dict keys, one forward pass), vendored from the
# team's shared/reference so a fresh clone can run the conformance test on its own.
REFERENCE = Path(os.environ.get("DAEFR_REFERENCE", REPO / "tests" / "data" / "reference"))


def has_cuda() -> bool:
    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _isolated_root_logging():
    """A CLI run in one test (``logging.basicConfig(force=True)``) leaves a root handler bound to
    that test's captured stderr; restore the root logger so a later test's log lines neither go
    to a closed stream ("--- Logging error ---") nor to a handler that test did not set up."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    # Only plain stream handlers: pytest's own capture handlers come and go per test phase.
    for handler in [h for h in root.handlers if type(h) is logging.StreamHandler and h not in before]:
        root.removeHandler(handler)
    root.setLevel(level)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not (REFERENCE / "daefr_official_state_dict.json").is_file():
        pytest.fail(f"reference data missing at {REFERENCE}; set DAEFR_REFERENCE")
    return REFERENCE


@pytest.fixture(scope="session")
def official_manifest(reference_dir: Path) -> list[tuple[str, tuple[int, ...]]]:
    data = json.loads((reference_dir / "daefr_official_state_dict.json").read_text())
    return [(key, tuple(shape)) for key, shape, _dtype in data["keys"]]


@pytest.fixture(scope="session")
def reference_input(reference_dir: Path) -> torch.Tensor:
    from PIL import Image

    rgb = np.asarray(Image.open(reference_dir / "official_forward" / "input.png").convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255 * 2 - 1


@pytest.fixture()
def tiny_model() -> DAEFR:
    torch.manual_seed(0)
    return seed_model_(DAEFR(DAEFRConfig.from_name("tiny")), salt="tiny-test").eval()


@pytest.fixture()
def tiny_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1


@pytest.fixture(scope="session")
def iqp_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"plain": a seeded tiny DAEFR state_dict, "conditioned": a seeded tiny IQPFR one
    (S_thr 0.6, trained range [0.3, 0.9]; random FiLM, so S changes the codes)}: for the CLIs'
    ``--quality`` tests, which need a checkpoint of each kind, not a trained one."""
    from daefr.config import QualityConfig

    root = tmp_path_factory.mktemp("iqp-ckpts")
    plain = seed_model_(DAEFR(DAEFRConfig.from_name("tiny")), salt="plain-cli")
    cfg = DAEFRConfig.from_name("tiny", quality=QualityConfig(hq_plus_size=64, threshold=0.6))
    conditioned = seed_model_(DAEFR(cfg), salt="iqp-cli")
    with torch.no_grad():
        conditioned.iqp.threshold.fill_(0.6)
        conditioned.iqp.quality_range.copy_(torch.tensor([0.3, 0.9]))
    paths = {"plain": root / "plain.pt", "conditioned": root / "iqpfr.pt"}
    torch.save(plain.state_dict(), paths["plain"])
    torch.save(conditioned.state_dict(), paths["conditioned"])
    return paths
