"""PyTorch backend: the reference model in fp32, fp16 or bf16 (``daefr.precision.POLICY``'s
float32 islands kept), optionally channels-last, compiled with inductor, or replayed as CUDA graphs.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from daefr.model import DAEFR
from daefr.precision import POLICY, PrecisionPolicy
from daefr.runtime.backends.base import BackendUnavailable, RestorerBase, require_cuda
from daefr.runtime.plan import PrecisionPlan

log = logging.getLogger(__name__)


def _to_fp32(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _back_to(dtype: torch.dtype):  # noqa: ANN202 (a forward hook)
    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        return out.to(dtype)

    return hook


def apply_precision(model: DAEFR, dtype: torch.dtype, policy: PrecisionPolicy = POLICY) -> DAEFR:
    """``model`` cast to ``dtype`` in place, with ``policy``'s modules kept in float32: their
    inputs are cast up on entry; a normalisation's output goes back to ``dtype`` for the next
    layer, while a float32 scope (the code head) stays float32 to its argmax.

    With ``impl="triton"`` the fused code-head kernel takes one dtype and computes LayerNorm
    and logits in float32 itself, so only the norms are split out there.
    """
    model.to(dtype)
    if dtype == torch.float32:
        return model
    for name, module in model.named_modules():
        in_scope = any(s in name for s in policy.fp32_scopes)
        if in_scope and model.impl == "triton":
            continue
        if not policy.keeps_fp32_module(name, module):
            continue
        module.float()
        module.register_forward_pre_hook(_to_fp32)
        if not in_scope:
            module.register_forward_hook(_back_to(dtype))
    return model


class _Forward(nn.Module):
    """The model as a tensor-in, tensors-out function (what torch.compile and graphs see)."""

    def __init__(self, model: DAEFR) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        return out.restored, out.code_idx


class TorchRestorer(RestorerBase):
    """``model`` (any ``impl``) on ``plan.device`` in ``plan.precision``.

    ``plan.channels_last``: NHWC weights and input (oneDNN / cuDNN pick faster convolutions;
    exact in fp32). ``plan.compile``: ``torch.compile`` (inductor) of the whole forward, one
    graph per batch size (``dynamic=False``); the ``daefr::`` Triton kernels of
    ``impl="triton"`` are torch custom ops that inductor calls as opaque ops. ``warmup``
    meets each batch size before timing and records the compile time. ``plan.cuda_graphs``:
    one captured graph per batch size, replayed afterwards (CUDA only).
    """

    name = "torch"

    def __init__(self, model: DAEFR, plan: PrecisionPlan) -> None:
        device = torch.device(plan.device)
        if device.type == "cuda":
            require_cuda(self.name, device)
        if plan.threads > 0:
            # Process-wide. Measured on the 2-core CI machine while busy: a 2-thread OpenMP
            # pool stalls (1.1 s per tiny batch vs 0.17 s at 1).
            torch.set_num_threads(plan.threads)
        if plan.precision == "bf16" and device.type == "cpu" and not torch.backends.mkldnn.is_available():
            raise BackendUnavailable("torch backend: bf16 on the CPU needs oneDNN (mkldnn), absent in this build")
        if plan.precision == "bf16" and device.type == "cpu":
            from daefr.runtime.cpu_info import onednn_bf16_isa

            # avx512_core_amx: AMX tiles; avx512_core_bf16: AVX512-BF16 dot products only.
            log.info("torch bf16 on the CPU: oneDNN runs its %s kernels", onednn_bf16_isa())
        self.plan = plan
        self.model = apply_precision(model.eval().to(device), plan.dtype)
        if plan.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._device, self._dtype = device, plan.dtype
        self._forward: nn.Module = _Forward(self.model)
        if plan.compile:
            self._forward = torch.compile(self._forward, dynamic=False)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.compile_seconds: dict[int, float] = {}  # batch size -> first-call time (compile + run)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def resolution(self) -> int:
        return self.model.config.vqgan.resolution

    def _prepare(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(device=self._device, dtype=self._dtype, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.plan.channels_last else x

    @torch.inference_mode()
    def restore(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """batch (B, 3, R, R) in [-1, 1] -> (restored (B, 3, R, R) float32, code_idx (B, N) int64)."""
        self.check_batch(batch)
        x = self._prepare(batch)
        if self.plan.cuda_graphs:
            return self._replay(x)
        restored, code_idx = self._forward(x)
        return restored.float().contiguous(), code_idx.long()

    def warmup(self, batch_sizes: list[int] | tuple[int, ...]) -> dict[int, float]:
        """Run each batch size once (compiles, graph captures, autotuning happen here, not in
        timed calls); returns {batch size: seconds of that first call}."""
        r = self.resolution
        for b in batch_sizes:
            if b in self.compile_seconds:
                continue
            t0 = time.perf_counter()
            self.restore(torch.zeros(b, 3, r, r))
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
            self.compile_seconds[b] = time.perf_counter() - t0
            if self.plan.compile or self.plan.cuda_graphs:
                log.info("%s: batch %d ready in %.1f s (compile/capture)", self.plan.label(), b, self.compile_seconds[b])
        return dict(self.compile_seconds)

    def _replay(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        if b not in self._graphs:
            self._graphs[b] = self._capture(x)
        graph, static_in, restored, code_idx = self._graphs[b]
        static_in.copy_(x)
        graph.replay()
        # Clone: the next replay overwrites the static outputs while the caller may still read them.
        return restored.float().clone(), code_idx.long().clone()

    def _capture(
        self, x: torch.Tensor
    ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]:
        static_in = x.clone()
        side = torch.cuda.Stream(self._device)
        side.wait_stream(torch.cuda.current_stream(self._device))
        with torch.cuda.stream(side):  # warm-up outside the graph (allocator, cuDNN autotune, compile)
            for _ in range(2):
                self._forward(static_in)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            restored, code_idx = self._forward(static_in)
        log.info("captured a CUDA graph for batch %d", x.shape[0])
        return graph, static_in, restored, code_idx

    def close(self) -> None:
        self._graphs.clear()
