"""daefr.kernels as a package: import without Triton, custom-op registration, tracing."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from daefr import ops


def test_import_works_without_triton_and_calls_fail_clearly():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # makes `import triton` raise ImportError
        "import torch, daefr.kernels as k\n"
        "try:\n"
        "    k.nearest_code(torch.zeros(2, 4), torch.zeros(3, 4))\n"
        "except RuntimeError as e:\n"
        "    print('ERR', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ERR Triton is not installed: pip install daefr[triton]"


def test_package_is_ours_not_a_pypi_namesake():
    import daefr.kernels

    assert daefr.kernels.__file__.replace("\\", "/").endswith("kernels/__init__.py")
    assert hasattr(daefr.kernels, "fused_attention")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_bench_without_gpu_exits_2_with_one_line(capsys):
    from daefr.kernels.bench import main

    assert main(["--batches", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "no CUDA GPU" in err


triton = pytest.importorskip("triton")


def small_cases() -> dict[str, tuple]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 24, generator=g)
    return {
        "nearest_code": (torch.randn(20, 16, generator=g), torch.randn(40, 16, generator=g)),
        "code_head": (
            x,
            torch.ones(24),
            torch.zeros(24),
            1e-5,
            torch.randn(40, 24, generator=g),
            torch.randn(40, 16, generator=g),
            True,
        ),
        "fused_attention": tuple(torch.randn(1, 2, 20, 16, generator=g) for _ in range(3)),
    }


@pytest.mark.parametrize("name", ["nearest_code", "code_head", "fused_attention"])
def test_custom_op_passes_opcheck(device, name):
    import daefr.kernels.attention  # noqa: F401  (registers the ops)
    import daefr.kernels.head  # noqa: F401
    import daefr.kernels.quantize  # noqa: F401

    args = tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in small_cases()[name])
    torch.library.opcheck(getattr(torch.ops.daefr, name).default, args)


class UsesEveryKernel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.codebook = torch.nn.Parameter(torch.randn(40, 16))
        self.norm = torch.nn.LayerNorm(24)
        self.proj = torch.nn.Parameter(torch.randn(40, 24))

    def forward(self, z, x, q):
        idx, codes = ops.nearest_code(z, self.codebook, "triton")
        head = ops.code_head(x, self.norm, self.proj, self.codebook, "triton")
        out = ops.attention(q, q, q, "triton")
        return idx, codes * 2, head.idx, out + 1


def test_export_and_compile_trace_the_ops(device):
    model = UsesEveryKernel().to(device).eval()
    g = torch.Generator().manual_seed(1)
    args = tuple(
        t.to(device)
        for t in (
            torch.randn(20, 16, generator=g),
            torch.randn(20, 24, generator=g),
            torch.randn(1, 2, 20, 16, generator=g),
        )
    )
    with torch.no_grad():
        eager = model(*args)
        exported = torch.export.export(model, args)
        targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
        assert {
            "daefr.nearest_code.default",
            "daefr.code_head.default",
            "daefr.fused_attention.default",
        } <= targets
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        for got, want in zip(compiled(*args), eager, strict=True):
            assert torch.equal(got, want)
        for got, want in zip(exported.module()(*args), eager, strict=True):
            assert torch.equal(got, want)
