"""A stand-in for ``tensorrt`` + ``tensorrt.plugin`` (TensorRT cannot be installed here).

It reproduces only behaviour read from TensorRT's own source
(``python/packaging/bindings_wheel/tensorrt/plugin/{_validate,_tensor,_top_level}.py``) that
our plugin definitions depend on, so the tests fail where TensorRT would:

- ``register``/``aot_impl`` inspect annotations at decoration time with ``issubclass`` and
  ``typing.get_origin`` (string annotations raise TypeError); ``aot_impl`` needs a return
  annotation ``tuple[str | bytes, str | bytes, KernelLaunchParams, SymIntExprs]``;
- ``ShapeExpr`` has ``is_constant`` and ``constant_value()`` but no ``__int__``;
- ``cdiv`` refuses two ints.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from contextlib import contextmanager


class DataType:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"DataType.{self.name}"


float32, float16, int32 = DataType("FLOAT"), DataType("HALF"), DataType("INT32")


class ShapeExpr:
    def __init__(self, value: int | None = None, name: str = "") -> None:
        self.value, self.name = value, name or str(value)

    @property
    def is_constant(self) -> bool:
        return self.value is not None

    def constant_value(self) -> int:
        if self.value is None:
            raise RuntimeError("Not accessible for non-constant shape expressions")
        return self.value

    def __mul__(self, other: int | ShapeExpr) -> ShapeExpr:
        other = other if isinstance(other, ShapeExpr) else ShapeExpr(other)
        if self.is_constant and other.is_constant:
            return ShapeExpr(self.value * other.value)
        return ShapeExpr(None, f"({self.name}*{other.name})")


def cdiv(a: int | ShapeExpr, b: int | ShapeExpr) -> ShapeExpr:
    if isinstance(a, int) and isinstance(b, int):
        raise ValueError("Both arguments cannot be 'int's")
    a, b = (x if isinstance(x, ShapeExpr) else ShapeExpr(x) for x in (a, b))
    if a.is_constant and b.is_constant:
        return ShapeExpr(-(-a.value // b.value))
    return ShapeExpr(None, f"cdiv({a.name},{b.name})")


class TensorDesc:
    def __init__(self, shape_expr: tuple[ShapeExpr, ...], dtype: DataType) -> None:
        self.shape_expr, self.dtype = list(shape_expr), dtype

    def like(self) -> TensorDesc:
        return TensorDesc(tuple(self.shape_expr), self.dtype)


def from_shape_expr(shape: tuple, dtype: DataType) -> TensorDesc:
    return TensorDesc(tuple(s if isinstance(s, ShapeExpr) else ShapeExpr(s) for s in shape), dtype)


class KernelLaunchParams:
    grid_x = grid_y = grid_z = block_x = shared_mem = None


class SymExprs:
    def __init__(self, items: list) -> None:
        self.items = items


class SymIntExprs(SymExprs):
    @classmethod
    def from_tuple(cls, items: list) -> SymIntExprs:
        return cls(list(items))


class SymInt32:
    def __init__(self, expr: ShapeExpr) -> None:
        self.expr = expr


REGISTERED: dict[str, typing.Callable] = {}
AOT_IMPLS: dict[str, typing.Callable] = {}


def _check_tensor_or_attr(annotation: object) -> None:
    if annotation is inspect.Parameter.empty:
        raise ValueError("register: every argument needs an annotation")
    if not issubclass(annotation, TensorDesc) and annotation not in (
        int,
        float,
        bool,
        str,
    ):  # TypeError on str
        raise ValueError(f"register: unsupported annotation {annotation}")


def register(name: str) -> typing.Callable:
    def decorate(fn: typing.Callable) -> typing.Callable:
        sig = inspect.signature(fn)
        for param in sig.parameters.values():
            _check_tensor_or_attr(param.annotation)
        ret = sig.return_annotation
        outs = typing.get_args(ret) if typing.get_origin(ret) is tuple else (ret,)
        for out in outs:
            if not issubclass(out, TensorDesc):
                raise ValueError(f"register: return annotation {ret}")
        REGISTERED[name] = fn
        return fn

    return decorate


def aot_impl(name: str) -> typing.Callable:
    def decorate(fn: typing.Callable) -> typing.Callable:
        sig = inspect.signature(fn)
        registered = inspect.signature(REGISTERED[name]).parameters
        if list(sig.parameters) != [*registered, "outputs", "tactic"]:
            raise ValueError(f"aot_impl: signature {sig} does not match the registration")
        ret = sig.return_annotation
        if ret is inspect.Parameter.empty:
            raise ValueError(f"No return annotation found for aot_impl function. Received signature {sig}.")
        args = typing.get_args(ret)
        if typing.get_origin(ret) is not tuple or len(args) != 4:
            raise ValueError(f"aot_impl: return annotation {ret}")
        for arg in args[:2]:
            members = typing.get_args(arg) if isinstance(arg, types.UnionType) else (arg,)
            if any(m not in (str, bytes) for m in members):
                raise ValueError(f"aot_impl: return annotation {ret}")
        if not issubclass(args[2], KernelLaunchParams) or not issubclass(args[3], SymExprs):
            raise ValueError(f"aot_impl: return annotation {ret}")
        AOT_IMPLS[name] = fn
        return fn

    return decorate


@contextmanager
def installed(monkeypatch) -> typing.Iterator[types.ModuleType]:  # noqa: ANN001
    """Put the stand-in under ``tensorrt`` / ``tensorrt.plugin`` for the test's duration."""
    REGISTERED.clear()
    AOT_IMPLS.clear()
    trt = types.ModuleType("tensorrt")
    trt.float32, trt.float16, trt.int32 = float32, float16, int32
    trt.__version__ = "11.0.0-stand-in"
    trt.plugin = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", sys.modules[__name__])
    yield sys.modules[__name__]
