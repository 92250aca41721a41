"""A restricted unpickler for PyTorch(-Lightning) checkpoints that never runs pickled code.

Every global a pickle names passes through ``find_class`` (the only gate CPython's
unpickler has to code), and there it becomes one of:

- a tensor rebuild function, wrapped so that wrong-typed arguments are refused;
- a plain data type (``dict``, ``list``, ``OrderedDict``, torch dtypes and layouts...);
- ``UnsupportedTensor`` for tensor kinds DAEFR weights never are (sparse, meta, quantized,
  nested, subclasses), so that the reader can name the key instead of crashing later;
- an inert placeholder class (``OpaqueObject``) for classes of metadata-only packages:
  OmegaConf ``DictConfig``/``ListConfig`` and their nodes, numpy arrays and scalars,
  Lightning's ``AttributeDict``, ``argparse.Namespace``, enums, paths. A placeholder is never
  the real class: "calling" it records the arguments, its state is kept as given;
- anything else (``os.system``, ``builtins.eval``, ``subprocess.*``...) refuses the whole file.

This is the only pass: torch's ``weights_only=True`` loader is not tried first, so its
multi-line "re-run with weights_only=False" advice can never reach a user.
"""

from __future__ import annotations

import _compat_pickle
import collections
import math
import pickle
from collections.abc import Callable
from typing import Any

import torch
import torch._utils as tu

# Builtin types that are plain data; torch's own weights_only loader allows the same set.
_DATA_BUILTINS: dict[str, type] = {
    t.__name__: t for t in (dict, list, tuple, set, frozenset, int, float, complex, str, bool, slice)
}  # not range: list(range(10**12)) is a two-opcode memory bomb
_TORCH_CONSTANT_TYPES = (torch.dtype, torch.layout, torch.memory_format, torch.qscheme)

# Packages whose objects in a checkpoint are metadata (hyper-parameters, loop state).
METADATA_MODULE_PREFIXES: tuple[str, ...] = (
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "omegaconf",
    "argparse",
    "pathlib",
    "numpy",
    "typing",
    "enum",
    "collections",
    "datetime",
    "types",  # types.SimpleNamespace
)


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that could run code; nothing of it was executed."""


class MalformedPickle(pickle.UnpicklingError):
    """A pickle that names allowed functions but gives them arguments they cannot take."""


class OpaqueObject(dict):
    """Stands in for a metadata object that was not rebuilt; keeps what it was given.

    A dict so that pickled dict subclasses (``AttributeDict``) fill it; ``append``/``extend``
    so that list subclasses do too. ``qualified_name`` is the class it stands for.
    """

    qualified_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args, self.kwargs, self.items_list, self.state = args, kwargs, [], None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items_list.append(item)

    def extend(self, items: Any) -> None:
        self.items_list.extend(items)

    def __repr__(self) -> str:
        return f"<opaque {self.qualified_name}>"

    def __hash__(self) -> int:  # metadata objects may be dict keys (enum members, paths)
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


class UnsupportedTensor:
    """A tensor kind that DAEFR weights never are; the reader refuses it naming the key."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __repr__(self) -> str:
        return f"<unsupported tensor: {self.kind}>"


class _TensorTypeRef:
    """``torch.Tensor`` / ``Parameter`` as named in a pickle: a marker, never callable."""

    def __init__(self, name: str) -> None:
        self.name = name


_TENSOR = _TensorTypeRef("Tensor")
_PARAMETER = _TensorTypeRef("Parameter")


def _opaque_class(module: str, name: str) -> type[OpaqueObject]:
    return type(name, (OpaqueObject,), {"qualified_name": f"{module}.{name}"})


# torch._utils._rebuild_<name> -> the kind of tensor it makes, as the user knows it
_TENSOR_KINDS = {
    "sparse_tensor": "sparse",
    "meta_tensor_no_storage": "meta",
    "qtensor": "quantized",
    "nested_tensor": "nested",
    "wrapper_subclass": "tensor subclass",
}


def _unsupported(rebuild: str) -> Callable[..., UnsupportedTensor]:
    kind = _TENSOR_KINDS.get(rebuild.removeprefix("_rebuild_"), rebuild)
    return lambda *args, **kwargs: UnsupportedTensor(kind)


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(type(v) is int and v >= 0 for v in value)


def _check_tensor_args(fn: str, storage: Any, offset: Any, size: Any, stride: Any) -> None:
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise MalformedPickle(f"{fn}: storage is a {type(storage).__name__}, not a tensor storage")
    if type(offset) is not int or offset < 0:
        raise MalformedPickle(f"{fn}: storage offset {offset!r} is not an int >= 0")
    if not (_is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride)):
        raise MalformedPickle(f"{fn}: size {size!r} / stride {stride!r} are not matching int tuples")
    numel = math.prod(size)
    if numel > max(storage.size(), 1):  # stride-0 views: checking them would allocate their full size
        raise MalformedPickle(
            f"{fn}: a view of {numel} elements over {storage.size()} stored ones (an expanded tensor); "
            "save tensor.contiguous()"
        )


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    _check_tensor_args("_rebuild_tensor_v2", storage, offset, size, stride)
    return tu._rebuild_tensor_v2(
        storage, offset, size, stride, bool(requires_grad), collections.OrderedDict()
    )


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    _check_tensor_args("_rebuild_tensor_v3", storage, offset, size, stride)
    if not isinstance(dtype, torch.dtype):
        raise MalformedPickle(f"_rebuild_tensor_v3: dtype {dtype!r} is not a torch dtype")
    return tu._rebuild_tensor_v3(
        storage, offset, size, stride, bool(requires_grad), collections.OrderedDict(), dtype
    )


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    if isinstance(data, UnsupportedTensor):
        return data
    if not isinstance(data, torch.Tensor):
        raise MalformedPickle(f"_rebuild_parameter: data is a {type(data).__name__}, not a tensor")
    return data  # the weights are what matters; Parameter-ness is restored by load_state_dict


def _rebuild_from_type_v2(func, new_type, args, state):
    if new_type not in (_TENSOR, _PARAMETER):
        return UnsupportedTensor(f"a tensor subclass ({new_type!r})")
    if func not in _TENSOR_REBUILDERS.values() or not isinstance(args, tuple):
        raise MalformedPickle("_rebuild_from_type_v2: not a tensor rebuild")
    return func(*args)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    """Protocol-2 pickles store ``bytes`` as ``_codecs.encode(str, 'latin1')`` (numpy does)."""
    if not (isinstance(obj, str) and encoding in ("latin1", "latin-1") and errors == "strict"):
        raise MalformedPickle(f"_codecs.encode({type(obj).__name__}, {encoding!r}): only latin1 text")
    return obj.encode("latin1")


def _reconstructor(cls, base, state):
    if isinstance(cls, type) and issubclass(cls, OpaqueObject):
        return cls()
    raise RefusedGlobal(f"refused to reconstruct {cls!r}")


_TENSOR_REBUILDERS: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
_FUNCTIONS: dict[tuple[str, str], Any] = {
    **_TENSOR_REBUILDERS,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch._tensor", "Tensor"): _TENSOR,
    ("torch", "Tensor"): _TENSOR,
    ("torch.nn.parameter", "Parameter"): _PARAMETER,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch.serialization", "_get_layout"): torch.serialization._get_layout,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise MalformedPickle(f"a global named by {type(module).__name__}/{type(name).__name__}")
        # Protocol < 3 pickles (torch.save's default) name Python 2 modules: __builtin__, copy_reg.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _FUNCTIONS:
            return _FUNCTIONS[(module, name)]
        if module == "builtins" and name in _DATA_BUILTINS:
            return _DATA_BUILTINS[name]
        if module == "torch" and isinstance(getattr(torch, name, None), _TORCH_CONSTANT_TYPES):
            return getattr(torch, name)
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return _unsupported(name)
        if module.split(".")[0] in METADATA_MODULE_PREFIXES:
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
    """Load a torch pickle without running code; metadata objects become placeholders.

    Any failure of a malformed file propagates as the exception the unpickler raised; the
    caller (``daefr.checkpoint``) turns it into one line naming the file.
    """
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickleModule)


__all__ = [
    "MalformedPickle",
    "OpaqueObject",
    "RefusedGlobal",
    "RestrictedUnpickler",
    "UnsupportedTensor",
    "restricted_torch_load",
]
