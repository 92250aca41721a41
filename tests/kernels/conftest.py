"""Device and dtype cases for the kernel tests.

CPU cases run the kernels in the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1
on machines without CUDA); CUDA cases are marked ``gpu`` and skipped without a GPU. bf16 runs
on the GPU only: the interpreter computes bf16 arithmetic wrongly.
"""

from __future__ import annotations

import pytest
import torch

from daefr.kernels._launch import interpreting

INTERPRETER_ONLY = pytest.mark.skipif(
    not interpreting(), reason="CPU tensors need the Triton interpreter (TRITON_INTERPRET=1)"
)

DEVICE_DTYPES = [
    pytest.param("cpu", torch.float32, marks=INTERPRETER_ONLY, id="cpu-fp32"),
    pytest.param("cpu", torch.float16, marks=INTERPRETER_ONLY, id="cpu-fp16"),
    pytest.param("cuda", torch.float32, marks=pytest.mark.gpu, id="cuda-fp32"),
    pytest.param("cuda", torch.float16, marks=pytest.mark.gpu, id="cuda-fp16"),
    pytest.param("cuda", torch.bfloat16, marks=pytest.mark.gpu, id="cuda-bf16"),
]
DEVICES = [
    pytest.param("cpu", marks=INTERPRETER_ONLY, id="cpu"),
    pytest.param("cuda", marks=pytest.mark.gpu, id="cuda"),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "device" in names and "dtype" in names:
        metafunc.parametrize(("device", "dtype"), DEVICE_DTYPES)
    elif "device" in names:
        metafunc.parametrize("device", DEVICES)


@pytest.fixture()
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)
