"""A restricted unpickler for PyTorch(-Lightning) checkpoints that never runs pickled code.

``torch.load(weights_only=True)`` is tried first. Lightning checkpoints can also carry
metadata objects (``AttributeDict``, omegaconf configs) that it refuses; for those this
module offers a second, still restricted, pass: tensors and plain containers are rebuilt,
classes from known metadata-only packages become inert ``OpaqueObject`` placeholders (never
constructed, never called), and any other global (``os.system``, ``builtins.eval``,
``subprocess.*``...) refuses the whole file.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch

# (module, name) pairs rebuilt for real: tensor reconstruction and plain data types only.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch", "Size"),
        ("torch", "device"),
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
    }
)
_TORCH_DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}

# Packages whose objects in a checkpoint are metadata (hyper-parameters, loop state).
METADATA_MODULE_PREFIXES: tuple[str, ...] = (
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "argparse",
    "pathlib",
    "numpy",
    "typing",
    "enum",
)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that could run code; nothing of it was executed."""


class OpaqueObject(dict):
    """Stands in for a metadata object that was not rebuilt; keeps what it was given.

    A dict so that pickled dict subclasses (``AttributeDict``) fill it; ``append``/``extend``
    so that list subclasses do too.
    """

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args, self.kwargs, self.items_list = args, kwargs, []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items_list.append(item)

    def extend(self, items: Any) -> None:
        self.items_list.extend(items)

    def __repr__(self) -> str:
        return f"<opaque {self.qualified_name}>"


def _opaque_class(module: str, name: str) -> type[OpaqueObject]:
    return type(name, (OpaqueObject,), {"qualified_name": f"{module}.{name}"})


def _reconstructor(cls: type, base: type, state: Any) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, OpaqueObject)):
        raise RefusedGlobal(f"refused to reconstruct {cls!r}")
    return cls()


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and name in _TORCH_DTYPES:
            return getattr(torch, name)
        if (module, name) == ("copyreg", "_reconstructor"):
            return _reconstructor
        if module.startswith(METADATA_MODULE_PREFIXES) or module in {
            p.rstrip(".") for p in METADATA_MODULE_PREFIXES
        }:
            return _opaque_class(module, name)
        raise RefusedGlobal(
            f"refused global {module}.{name}: loading it could run code; "
            "the checkpoint is not a plain weights file"
        )


class _RestrictedPickleModule:
    """What ``torch.load(pickle_module=...)`` needs: ``Unpickler`` and ``load``."""

    Unpickler = RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()


def restricted_torch_load(path: str) -> Any:
    """Load a torch pickle without running code; metadata objects become placeholders."""
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)


__all__ = ["OpaqueObject", "RefusedGlobal", "RestrictedUnpickler", "restricted_torch_load"]
