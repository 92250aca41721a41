"""The one contract every backend implements: ``restore(batch) -> (restored, code_idx)``."""

from __future__ import annotations

import functools
from typing import Protocol, runtime_checkable

import torch


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run on this machine; the message says why in one line."""


class BackendError(RuntimeError):
    """A backend that loads but refuses its model (stale engine, wrong graph, bad shapes)."""


class NonFiniteOutput(BackendError):
    """A restore produced NaN or Inf: damaged weights, or an fp16/bf16 overflow in an engine."""


def check_finite_output(restored: torch.Tensor, where: str) -> None:
    """NonFiniteOutput unless every value of ``restored`` is finite. Clamping would turn NaN
    into black faces with exit 0; this is the one place that refuses them instead."""
    if not bool(torch.isfinite(restored).all()):
        bad = int((~torch.isfinite(restored)).sum())
        raise NonFiniteOutput(
            f"{where}: {bad} of {restored.numel()} restored values are NaN or Inf (damaged weights, "
            "or a half-precision overflow: try fp32 / another backend)"
        )


@runtime_checkable
class Restorer(Protocol):
    """Restores aligned faces.

    ``restore(batch)``: batch (B, 3, R, R) float in [-1, 1] on any device ->
    (restored (B, 3, R, R) float32 in about [-1, 1], not clamped; code_idx (B, N) int64), both on
    ``device`` (the CPU for CPU backends). ``resolution`` is R.
    """

    @property
    def name(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def resolution(self) -> int: ...

    def restore(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def close(self) -> None: ...


class RestorerBase:
    """Shared input check and context-manager support (``with create_restorer(...) as r``)."""

    name: str = "base"

    def __init_subclass__(cls, **kwargs: object) -> None:
        # Every backend's ``restore`` is wrapped here, once, with the output check, so that no
        # backend (today's or a new one) can hand NaN/Inf faces to the pipeline.
        super().__init_subclass__(**kwargs)
        if "restore" in cls.__dict__:
            cls.restore = _checked_restore(cls.__dict__["restore"])

    @property
    def resolution(self) -> int:
        raise NotImplementedError

    def check_batch(self, batch: torch.Tensor) -> None:
        r = self.resolution
        if batch.ndim != 4 or batch.shape[1] != 3 or batch.shape[2:] != (r, r) or batch.shape[0] < 1:
            raise ValueError(
                f"{self.name} backend: expected a batch of shape (B>=1, 3, {r}, {r}), got {tuple(batch.shape)}"
            )
        if not batch.is_floating_point():
            raise ValueError(f"{self.name} backend: expected a float batch in [-1, 1], got {batch.dtype}")

    def close(self) -> None:
        """Release sessions, engines and buffers (idempotent)."""

    def __enter__(self):  # noqa: ANN204 (returns the subclass)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked_restore(restore):  # noqa: ANN001, ANN202 (wraps any backend's restore)
    @functools.wraps(restore)
    def checked(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        restored, code_idx = restore(self, batch)
        check_finite_output(restored, f"{self.name} backend")
        return restored, code_idx

    return checked


def require_cuda(backend: str, device: torch.device) -> None:
    """BackendUnavailable unless ``device`` is a CUDA device that exists here."""
    if device.type != "cuda":
        raise BackendUnavailable(f"{backend} backend: needs a CUDA device, got --device {device}")
    if not torch.cuda.is_available():
        raise BackendUnavailable(
            f"{backend} backend: no CUDA device on this machine (torch.cuda.is_available() is False)"
        )
