"""The precision plan: what each backend can honour, refusals in one line, and --backend auto's rules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from daefr.runtime import auto
from daefr.runtime.auto import RULES, Sources, resolve
from daefr.runtime.plan import SUPPORTED, PlanError
from daefr.runtime.plan import PrecisionPlan as Plan


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "ort", "precision": "bf16"}, "runs fp32, fp16, not --precision bf16"),
        ({"backend": "openvino", "precision": "fp16"}, "runs fp32, bf16, not --precision fp16"),
        ({"backend": "torch", "precision": "fp16"}, "on cpu runs fp32, bf16"),
        ({"backend": "trt"}, "runs on cuda, not --device cpu"),
        ({"backend": "openvino", "device": "cuda"}, "runs on cpu, not --device cuda"),
        ({"backend": "ort", "compile": True}, "--compile applies to the torch backend only"),
        ({"backend": "openvino", "channels_last": True}, "--channels-last applies to the torch backend only"),
        ({"backend": "ort", "cuda_graphs": True}, "--cuda-graphs applies to the torch backend only"),
        ({"backend": "torch", "plugins": True}, "--plugins applies to the trt backend only"),
        ({"backend": "torch", "cuda_graphs": True}, "--cuda-graphs needs --device cuda"),
        ({"precision": "int8"}, "--precision 'int8'"),
        ({"threads": -1}, "--threads -1"),
        ({"threads": 10**6}, "must be within 0..1024"),
        ({"device": "tpu"}, "--device"),
    ],
)
def test_a_flag_a_backend_cannot_honour_is_refused(kwargs, message):
    with pytest.raises(PlanError, match=message) as info:
        Plan(**kwargs)
    assert "\n" not in str(info.value)


def test_every_supported_pair_builds_a_plan():
    for backend, devices in SUPPORTED.items():
        for device, precisions in devices.items():
            for precision in precisions:
                assert Plan(backend, precision, device=device).dtype is not None


def test_plans_are_frozen_values():
    plan = Plan("torch", "bf16", channels_last=True)
    with pytest.raises(AttributeError):
        plan.precision = "fp32"  # type: ignore[misc]
    assert plan == Plan("torch", "bf16", channels_last=True) and plan.label() == "torch bf16 channels_last"


def test_auto_never_lowers_the_precision():
    """Every rule keeps the plan's precision: reduced precision changes codes, so it is opt-in."""
    for precision in ("fp32", "fp16", "bf16"):
        for device in ("cpu", "cuda"):
            rules = [r for r in RULES if r.device == device and r.precision == precision]
            assert rules, (device, precision)
            for r in rules:
                assert r.precision in SUPPORTED[r.backend][device]


def _only(monkeypatch, installed: set[str]) -> None:
    real = importlib.util.find_spec

    def find_spec(name, *a, **k):  # noqa: ANN001, ANN202
        if name in {"openvino", "onnxruntime", "tensorrt"} and name not in installed:
            return None
        return real(name, *a, **k)

    monkeypatch.setattr(auto.importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize(
    ("plan", "sources", "installed", "backend", "channels_last"),
    [
        (Plan(), Sources(weights=True), {"openvino", "onnxruntime"}, "openvino", False),
        (Plan(), Sources(weights=True), {"onnxruntime"}, "ort", False),
        (Plan(), Sources(weights=True), set(), "torch", True),
        (Plan(), Sources(onnx=Path("m.onnx")), {"onnxruntime"}, "ort", False),
        (Plan(channels_last=True), Sources(weights=True), {"openvino", "onnxruntime"}, "torch", True),
        (Plan(compile=True), Sources(weights=True), {"openvino"}, "torch", True),
        (Plan(precision="fp16"), Sources(weights=True), {"openvino", "onnxruntime"}, "ort", False),
        (Plan(precision="bf16"), Sources(weights=True), set(), "torch", True),
    ],
)
def test_auto_picks_the_first_rule_that_can_run(monkeypatch, plan, sources, installed, backend, channels_last):
    _only(monkeypatch, installed)
    monkeypatch.setattr(auto, "cpu_has_bf16", lambda: True)
    chosen, why = resolve(plan, sources)
    assert (chosen.backend, chosen.channels_last, chosen.precision) == (backend, channels_last, plan.precision)
    assert why.startswith(f"--backend auto chose {chosen.label()}: ") and "\n" not in why


def test_auto_does_not_export_for_a_handful_of_faces(monkeypatch):
    _only(monkeypatch, {"openvino", "onnxruntime"})
    few = Sources(weights=True, expected_faces=auto.EXPORT_BREAK_EVEN_FACES - 1)
    assert resolve(Plan(), few)[0].backend == "torch"
    many = Sources(weights=True, expected_faces=auto.EXPORT_BREAK_EVEN_FACES)
    assert resolve(Plan(), many)[0].backend == "openvino"
    given = Sources(onnx=Path("m.onnx"), expected_faces=1)  # nothing to export: the fastest runs
    assert resolve(Plan(), given)[0].backend == "openvino"


def test_auto_says_why_nothing_runs(monkeypatch):
    _only(monkeypatch, set())
    with pytest.raises(PlanError, match=r"nothing runs --precision fp16 on cpu .*onnxruntime is not installed"):
        resolve(Plan(precision="fp16"), Sources(weights=True))
    with pytest.raises(PlanError, match="exclude each other"):
        resolve(Plan(plugins=True, compile=True), Sources(weights=True))


def test_sources_a_backend_ignores_are_refused():
    with pytest.raises(PlanError, match="--engine-dir is read by the trt backend"):
        resolve(Plan("torch"), Sources(weights=True, engine_dir=Path("e")))
    with pytest.raises(PlanError, match="drop --ckpt/--random-weights"):
        resolve(Plan("ort"), Sources(weights=True, onnx=Path("m.onnx")))
    with pytest.raises(PlanError, match="needs --ckpt or --random-weights"):
        resolve(Plan("torch"), Sources(onnx=Path("m.onnx")))
