"""Eager PyTorch backend: the reference model in fp32 or fp16, optionally replayed as CUDA graphs."""

from __future__ import annotations

import logging

import torch

from daefr.model import DAEFR
from daefr.runtime.backends.base import BackendUnavailable, RestorerBase, require_cuda

log = logging.getLogger(__name__)


class TorchRestorer(RestorerBase):
    """``model`` (any ``impl``) moved to ``device`` in ``dtype``.

    ``cuda_graphs``: capture one graph per batch size on first use and replay it afterwards
    (static shapes, so only on CUDA; the launch overhead it removes is what dominates a small
    batch on a fast GPU).
    """

    name = "torch"

    def __init__(
        self,
        model: DAEFR,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        cuda_graphs: bool = False,
    ) -> None:
        device = torch.device(device)
        if device.type == "cuda":
            require_cuda(self.name, device)
        if dtype not in (torch.float32, torch.float16):
            raise ValueError(f"torch backend: dtype must be float32 or float16, got {dtype}")
        if dtype == torch.float16 and device.type != "cuda":
            raise BackendUnavailable(
                "torch backend: fp16 runs on CUDA only (CPU fp16 convolutions are not a target)"
            )
        if cuda_graphs and device.type != "cuda":
            raise BackendUnavailable("torch backend: CUDA graphs need a CUDA device")
        self.model = model.eval().to(device=device, dtype=dtype)
        self._device, self._dtype = device, dtype
        self.cuda_graphs = cuda_graphs
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def resolution(self) -> int:
        return self.model.config.vqgan.resolution

    @torch.inference_mode()
    def restore(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """batch (B, 3, R, R) in [-1, 1] -> (restored (B, 3, R, R) float32, code_idx (B, N) int64)."""
        self.check_batch(batch)
        x = batch.to(device=self._device, dtype=self._dtype, non_blocking=True)
        if self.cuda_graphs:
            return self._replay(x)
        out = self.model(x)
        return out.restored.float(), out.code_idx.long()

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
        with torch.cuda.stream(side):  # warm-up outside the graph (allocator, cuDNN autotune)
            for _ in range(2):
                self.model(static_in)
        torch.cuda.current_stream(self._device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self.model(static_in)
        log.info("captured a CUDA graph for batch %d", x.shape[0])
        return graph, static_in, out.restored, out.code_idx

    def close(self) -> None:
        self._graphs.clear()
