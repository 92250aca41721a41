"""The FP16 precision policy, defined once, and the FP32 -> FP16 ONNX rewrite that applies it.

TensorRT 11 builds strongly typed networks only, so the FP16 engine's precision is whatever
the ONNX says: this module is where the FP16 graph is written. The islands are
``daefr.precision.POLICY`` (the reasons are there), the same value the eager torch backend
reads for fp16 and bf16.

I/O stays float32 (``lq_image``/``restored``/features; ``code_idx`` is int32 anyway), so the
FP16 graph is a drop-in replacement for the FP32 one.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from daefr.precision import POLICY, PrecisionPolicy

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def keeps_fp32(node: onnx.NodeProto, policy: PrecisionPolicy = POLICY) -> bool:
    """Whether ``policy`` keeps this ONNX node in float32 (by op type or module scope)."""
    return policy.keeps_fp32_node(node.op_type, node_scope(node))


# Inputs that ONNX requires to be float32 whatever the data type (Resize's ``scales``).
ALWAYS_FP32_INPUTS: dict[str, frozenset[int]] = {"Resize": frozenset({2})}
# Ops that only read their input's shape: no Cast in front of them.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})


def node_scope(node: onnx.NodeProto) -> str:
    """The module path of a node: its name (TorchScript) plus dynamo's scope metadata."""
    meta = {p.key: p.value for p in node.metadata_props}
    return " ".join((node.name, meta.get("pkg.torch.onnx.name_scopes", ""), meta.get("namespace", "")))


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {t.name: t.data_type for t in g.initializer}
    for vi in (*g.input, *g.value_info, *g.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes holding a tensor become initializers, so one rule converts both."""
    keep = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def convert_to_fp16(model: onnx.ModelProto, policy: PrecisionPolicy = POLICY) -> onnx.ModelProto:
    """A float16 copy of a float32 ONNX model with ``policy``'s nodes kept in float32.

    Casts are inserted where a tensor crosses between the two precisions (one Cast per tensor
    and direction); float32 initializers get a float16 twin for float16 consumers. Graph inputs
    and outputs keep their float32 type. The result is shape-inferred strictly, so a type
    mismatch the rewrite left behind is an error here rather than in ONNX Runtime or TensorRT.
    """
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = model.graph
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for n in graph.node
        for a in n.attribute
    ):
        raise ValueError("convert_to_fp16: graphs with subgraphs (If/Loop/Scan) are not supported")
    _constants_to_initializers(graph)
    types = _elem_types(model)
    inits = {t.name: t for t in graph.initializer}
    # The precision each float32 tensor has in the new graph (graph inputs stay float32).
    current = {name: FLOAT for name, t in types.items() if t == FLOAT and name not in inits}
    casts: dict[tuple[str, int], str] = {}
    half_inits: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__to_{'fp16' if to == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to, name=f"{casts[key]}_cast"))
        return casts[key]

    def half_init(name: str) -> str:
        if name not in half_inits:
            half_inits[name] = f"{name}__fp16"
            array = numpy_helper.to_array(inits[name]).astype(np.float16)
            graph.initializer.append(numpy_helper.from_array(array, half_inits[name]))
        return half_inits[name]

    for original in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)  # the graph's own node list is replaced below
        want = FLOAT if keeps_fp32(node, policy) else HALF
        fixed = ALWAYS_FP32_INPUTS.get(node.op_type, frozenset())
        for i, name in enumerate(node.input):
            if not name or types.get(name) != FLOAT or node.op_type in SHAPE_ONLY_OPS:
                continue
            target = FLOAT if i in fixed else want
            if name in inits:
                node.input[i] = half_init(name) if target == HALF else name
            elif current[name] != target:
                node.input[i] = cast(name, target)
        if node.op_type == "Cast" and want == HALF and helper.get_attribute_value(node.attribute[0]) == FLOAT:
            node.attribute[0].i = HALF  # e.g. the attention scale computed from a shape
        for name in node.output:
            if types.get(name) == FLOAT:
                current[name] = want
        new_nodes.append(node)

    for out in graph.output:  # outputs computed in fp16 are cast back under their own name
        if types.get(out.name) == FLOAT and current[out.name] == HALF:
            inner = f"{out.name}__fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == out.name else o for o in node.output]
                node.input[:] = [inner if i == out.name else i for i in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out.name], to=FLOAT, name=f"{out.name}_cast"))

    # Custom-domain nodes (TensorRT plugins) have no ONNX schema: keep their declared output
    # types, with the precision they now compute in.
    custom_outputs = {o for n in new_nodes if n.domain not in ("", "ai.onnx") for o in n.output}
    kept_info = []
    for old in graph.value_info:
        if old.name not in custom_outputs:
            continue
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(old)
        kept_info.append(vi)
        if vi.type.tensor_type.elem_type == FLOAT:
            vi.type.tensor_type.elem_type = current[vi.name]
    used = {i for n in new_nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def fp32_node_count(model: onnx.ModelProto, policy: PrecisionPolicy = POLICY) -> dict[str, int]:
    """{op_type: count} of the nodes ``policy`` keeps in float32 (for the manifest)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type != "Cast" and keeps_fp32(node, policy):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
