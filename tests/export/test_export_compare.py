"""The Polygraphy comparison of backends (``daefr.export.compare``) on the CPU: its ONNX
Runtime half against eager, and that its statistics see a wrong answer. The TensorRT half runs
in ``test_export_trt.py`` where TensorRT exists."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("polygraphy")

from daefr.export.compare import compare_backends, output_stats  # noqa: E402
from daefr.export.graphs import GRAPHS  # noqa: E402
from daefr.export.onnx_export import export_graph  # noqa: E402
from daefr.export.parity import FP32_RTOL, graph_arrays  # noqa: E402


@pytest.fixture(scope="module")
def end_to_end_case(export_model, export_stages, tmp_path_factory):
    path = export_graph(export_model, "daefr", tmp_path_factory.mktemp("compare") / "daefr.onnx")
    graph = GRAPHS["daefr"]
    stage = export_stages[3]
    return path, graph_arrays(stage, graph.inputs), graph_arrays(stage, graph.outputs)


def test_onnxrt_through_polygraphy_matches_eager(end_to_end_case):
    path, feed, eager = end_to_end_case
    stats = compare_backends(feed, eager, onnx_path=path)
    assert set(stats) == {"onnxrt_vs_eager"}  # no engine: no TensorRT columns
    per_output = stats["onnxrt_vs_eager"]
    assert set(per_output) == {"restored", "code_idx"}
    assert per_output["code_idx"] == {"agreement": 1.0}
    assert per_output["restored"]["max_rel"] <= FP32_RTOL, per_output["restored"]


def test_stats_see_flipped_codes_and_float_errors():
    want = {"code_idx": np.arange(8, dtype=np.int32).reshape(2, 4), "restored": np.ones((2, 3), np.float32)}
    got = {"code_idx": want["code_idx"].copy(), "restored": want["restored"] + 0.5}
    got["code_idx"][0, :2] += 1
    stats = output_stats(got, want)
    assert stats["code_idx"]["agreement"] == pytest.approx(6 / 8)
    assert stats["restored"]["max_abs"] == pytest.approx(0.5)
    assert stats["restored"]["max_rel"] == pytest.approx(0.5)


def test_compare_needs_something_to_run():
    with pytest.raises(ValueError, match="give onnx_path, engine_path or both"):
        compare_backends({}, {})


def test_stats_name_a_missing_or_misshaped_output():
    want = {"restored": np.zeros((2, 3), np.float32), "code_idx": np.zeros((2, 4), np.int32)}
    with pytest.raises(KeyError, match=r"\['code_idx'\] missing"):
        output_stats({"restored": want["restored"]}, want)
    with pytest.raises(ValueError, match="output 'restored': shape"):
        output_stats({"restored": np.zeros((1, 3)), "code_idx": want["code_idx"]}, want)
