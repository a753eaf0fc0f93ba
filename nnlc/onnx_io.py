"""Find every weight tensor of an ONNX model, wherever ONNX keeps it, and write values back.

ONNX keeps tensors in graph initializers, in `Constant` nodes (attributes `value`, `value_float`,
`value_floats`, `value_int(s)`), in the subgraphs of control-flow nodes (`If`, `Loop`, `Scan`) and, for
large models, in external-data files. This module gives each one a stable unique name, records where
it lives and which role it plays for the op that consumes it, and writes a model back with some values
replaced and everything else unchanged.

Naming: a main-graph initializer keeps its name; a main-graph `Constant` is named by its output; inside
a subgraph the name gets the prefix `<node name, or OpType_index if unnamed>/<attribute>/` per level.

Imports numpy and onnx only: the standalone decoder uses it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from nnlc.errors import ModelError

FLOAT_TYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16",
}
INTEGER_TYPES = {
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}

# Kinds of storage (coded in the bitstream as these integers; see docs/bitstream.md).
INITIALIZER = 0
CONSTANT_TENSOR = 1  # Constant node, attribute `value`
CONSTANT_FLOAT = 2  # Constant node, attribute `value_float` (0-d)
CONSTANT_FLOATS = 3  # Constant node, attribute `value_floats` (1-D)
STORAGE_KINDS = (INITIALIZER, CONSTANT_TENSOR, CONSTANT_FLOAT, CONSTANT_FLOATS)

ROLES = (
    "conv_kernel",
    "depthwise_kernel",
    "dense",
    "bias",
    "normalization",
    "embedding",
    "recurrent_w",
    "recurrent_r",
    "recurrent_b",
    "other",
    "quantization",  # scale or zero point of a (De)QuantizeLinear, QLinear* or *Integer op: kept exact
)

# Ops that only move or re-type a tensor: look through them to find the op that really uses it.
_PASS_THROUGH_OPS = {"Identity", "Cast", "Transpose", "Reshape", "Unsqueeze", "Squeeze", "Flatten"}
# Inputs that are quantization parameters (scales, zero points), by op.
_QUANTIZATION_PARAMETERS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "QLinearConv": (1, 2, 4, 5, 6, 7),
                            "QLinearMatMul": (1, 2, 4, 5, 6, 7), "MatMulInteger": (2, 3), "ConvInteger": (2, 3)}
_NORMALIZATION_OPS = {"BatchNormalization", "LayerNormalization", "InstanceNormalization",
                      "GroupNormalization", "SimplifiedLayerNormalization", "RMSNormalization"}


@dataclasses.dataclass
class TensorRecord:
    """One tensor of a model: its unique name, where it lives, its role and its value."""

    name: str
    graph_path: str  # "" for the main graph, else e.g. "If_0/then_branch"
    onnx_name: str  # initializer name, or output name of the Constant node
    storage: int  # one of STORAGE_KINDS
    role: str
    array: np.ndarray

    @property
    def is_float(self) -> bool:
        return self.array.dtype.kind == "f" or self.array.dtype.name == "bfloat16"


def load_model(path: str | os.PathLike, load_external_data: bool = True) -> onnx.ModelProto:
    """Loads an ONNX file with one-line errors for a missing file or a file that is not ONNX."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, expected an ONNX file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # protobuf raises several types; all mean "not ONNX"
        raise ModelError(f"{path}: not an ONNX model ({type(error).__name__}: {error})") from None
    if not model.graph.node and not model.graph.initializer:
        raise ModelError(f"{path}: not an ONNX model (empty graph)")
    if load_external_data and external_data_tensors(model):
        try:
            onnx.external_data_helper.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
        except Exception as error:  # onnx raises ValidationError, OSError, ...
            raise ModelError(f"{path}: cannot read its external data ({type(error).__name__}: {error})") from None
    return model


def iter_tensor_protos(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of a model: initializers (sparse too) and node attributes, in subgraphs and
    functions."""
    graphs = [graph for _, graph in iter_graphs(model.graph)]
    for function in model.functions:
        for node in function.node:
            for attribute in node.attribute:
                graphs += [graph for owner in (attribute.g, *attribute.graphs) for _, graph in iter_graphs(owner)]
    nodes = [node for graph in graphs for node in graph.node] + [node for f in model.functions for node in f.node]
    for graph in graphs:
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)


def external_data_tensors(model: onnx.ModelProto) -> list[str]:
    """Names of the tensors whose data lives in an external file (not loaded into the model)."""
    return [tensor.name for tensor in iter_tensor_protos(model)
            if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data)]


def subgraphs(node: onnx.NodeProto, prefix: str, index: int) -> Iterator[tuple[str, onnx.GraphProto]]:
    """(path, graph) of the node's subgraph attributes; `prefix` is the path of its graph plus '/'."""
    owner = node.name or f"{node.op_type}_{index}"
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield f"{prefix}{owner}/{attribute.name}", attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            for position, graph in enumerate(attribute.graphs):
                yield f"{prefix}{owner}/{attribute.name}[{position}]", graph


def iter_graphs(graph: onnx.GraphProto, path: str = "") -> Iterator[tuple[str, onnx.GraphProto]]:
    """Yields (path, graph) for the graph and every nested subgraph, depth first."""
    yield path, graph
    prefix = f"{path}/" if path else ""
    for index, node in enumerate(graph.node):
        for sub_path, subgraph in subgraphs(node, prefix, index):
            yield from iter_graphs(subgraph, sub_path)


def value_types(model: onnx.ModelProto) -> dict[str, tuple[int, int | None]]:
    """(element type, rank or None) of every value shape inference can name, in the main graph and
    every subgraph; best effort (a model shape inference rejects gives the types it declares)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=False)
    except Exception:  # shape inference is best effort
        inferred = model
    types: dict[str, tuple[int, int | None]] = {}
    for _, graph in iter_graphs(inferred.graph):
        for value in (*graph.value_info, *graph.input, *graph.output):
            if value.type.HasField("tensor_type"):
                tensor = value.type.tensor_type
                types[value.name] = (tensor.elem_type, len(tensor.shape.dim) if tensor.HasField("shape") else None)
    return types


def _qualified(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def consumers(model: onnx.ModelProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    """Maps each value name to the (node, input index) pairs that read it, over all graphs."""
    found: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for _, graph in iter_graphs(model.graph):
        for node in graph.node:
            for position, value in enumerate(node.input):
                if value:
                    found.setdefault(value, []).append((node, position))
    return found


def node_attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of `node`'s attribute `name` (strings as bytes), or `default` when it has none."""
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _role_for_use(node: onnx.NodeProto, position: int, array: np.ndarray) -> str | None:
    op = node.op_type
    if position in _QUANTIZATION_PARAMETERS.get(op, ()):
        return "quantization"
    if op in ("Conv", "ConvTranspose", "ConvInteger"):
        if position == 1:
            return "depthwise_kernel" if int(node_attribute(node, "group", 1)) > 1 else "conv_kernel"
        if position == 2:
            return "bias"
    if op == "Gemm":
        return "bias" if position == 2 else "dense"
    if op in ("MatMul", "MatMulInteger") and array.ndim >= 2:
        return "dense"
    if op in _NORMALIZATION_OPS and position >= 1:
        return "normalization"
    if op == "Gather" and position == 0:
        return "embedding"
    if op in ("LSTM", "GRU", "RNN") and position in (1, 2, 3):
        return ("recurrent_w", "recurrent_r", "recurrent_b")[position - 1]
    if op == "Add" and array.ndim == 1:
        return "bias"
    return None


def _infer_role(value_name: str, array: np.ndarray, consumers: Mapping, depth: int = 0) -> str:
    for node, position in consumers.get(value_name, ()):
        role = _role_for_use(node, position, array)
        if role is not None:
            return role
        if node.op_type in _PASS_THROUGH_OPS and position == 0 and depth < 4:
            for output in node.output:
                role = _infer_role(output, array, consumers, depth + 1)
                if role != "other":
                    return role
    return "other"


def _constant_value(node: onnx.NodeProto) -> tuple[int, np.ndarray] | None:
    for attribute in node.attribute:
        if attribute.name == "value":
            return CONSTANT_TENSOR, numpy_helper.to_array(attribute.t)
        if attribute.name == "value_float":
            return CONSTANT_FLOAT, np.asarray(attribute.f, dtype=np.float32)
        if attribute.name == "value_floats":
            return CONSTANT_FLOATS, np.asarray(list(attribute.floats), dtype=np.float32)
    return None


def _is_wanted(data_type: int, include_integer: bool) -> bool:
    return data_type in FLOAT_TYPES or (include_integer and data_type in INTEGER_TYPES)


def find_tensors(model: onnx.ModelProto, include_integer: bool = False) -> dict[str, TensorRecord]:
    """Every float (and optionally integer/bool) tensor of the model, in a stable order.

    Order: graphs depth first; within a graph, initializers then Constant nodes in node order.
    Raises ModelError when tensor data lives in an external file that was not loaded.
    """
    external = external_data_tensors(model)
    if external:
        raise ModelError(f"tensor {external[0]!r}: its data is in an external file that was not loaded "
                         "(load the model with its external data)")
    readers = consumers(model)
    records: dict[str, TensorRecord] = {}

    def add(path: str, onnx_name: str, storage: int, array: np.ndarray) -> None:
        name = _qualified(path, onnx_name)
        if name in records:
            raise ModelError(f"two tensors share the name {name!r}; the model is not valid ONNX")
        role = _infer_role(onnx_name, array, readers)
        records[name] = TensorRecord(name, path, onnx_name, storage, role, array)

    for path, graph in iter_graphs(model.graph):
        for initializer in graph.initializer:
            if _is_wanted(initializer.data_type, include_integer):
                add(path, initializer.name, INITIALIZER, numpy_helper.to_array(initializer))
        for node in graph.node:
            if node.op_type != "Constant" or not node.output:
                continue
            found = _constant_value(node)
            if found is None:
                continue
            storage, array = found
            tensor_type = next((a.t.data_type for a in node.attribute if a.name == "value"), onnx.TensorProto.FLOAT)
            if _is_wanted(tensor_type, include_integer):
                add(path, node.output[0], storage, array)
    return records


def find_float_tensors(model: onnx.ModelProto) -> dict[str, TensorRecord]:
    """The float weight tensors of a model (see `find_tensors`)."""
    return find_tensors(model, include_integer=False)


def _graph_at(model: onnx.ModelProto, path: str) -> onnx.GraphProto:
    for graph_path, graph in iter_graphs(model.graph):
        if graph_path == path:
            return graph
    raise ModelError(f"the model has no subgraph {path!r}")


def bfloat16_bits(array: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns of float values, rounded to nearest even (as onnx's helper rounds).

    NaNs keep their sign and top payload bits (so bfloat16 NaNs that went through float32 come back
    unchanged). Vectorised: no Python list of the values.
    """
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(np.asarray(array, dtype=np.float32))
    if nan.any():
        truncated = (bits[nan] >> np.uint32(16)).astype(np.uint16)
        rounded[nan] = np.where(truncated & 0x7F, truncated, truncated | 0x40)
    return rounded


def _tensor_proto(array: np.ndarray, name: str, data_type: int) -> onnx.TensorProto:
    if data_type == onnx.TensorProto.BFLOAT16:
        tensor = onnx.TensorProto(name=name, data_type=data_type, dims=np.shape(array))
        tensor.raw_data = bfloat16_bits(array).astype("<u2").tobytes()
        return tensor
    target = onnx.helper.tensor_dtype_to_np_dtype(data_type)
    return numpy_helper.from_array(np.asarray(array).astype(target, copy=False), name=name)


def _slots(model: onnx.ModelProto) -> dict[str, tuple[int, object, onnx.NodeProto | None]]:
    """Maps each qualified tensor name to (storage, proto holding it, owning Constant node or None)."""
    slots: dict[str, tuple[int, object, onnx.NodeProto | None]] = {}
    for path, graph in iter_graphs(model.graph):
        for initializer in graph.initializer:
            slots[_qualified(path, initializer.name)] = (INITIALIZER, initializer, None)
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for attribute in node.attribute:
                    if attribute.name in ("value", "value_float", "value_floats"):
                        slots[_qualified(path, node.output[0])] = (STORAGE_KINDS[1 + ("value", "value_float", "value_floats").index(attribute.name)], attribute, node)
    return slots


def replace_tensors(model: onnx.ModelProto, values: Mapping[str, np.ndarray], in_place: bool = False) -> onnx.ModelProto:
    """Returns the model with the named tensors' values replaced (dtype and shape of the original kept).

    Everything else is left exactly as it was. Unknown names and shape changes raise ModelError.
    """
    if not in_place:
        model = copy.deepcopy(model)
    slots = _slots(model)
    for name, value in values.items():
        if name not in slots:
            raise ModelError(f"the model has no tensor named {name!r}")
        storage, proto, _ = slots[name]
        value = np.asarray(value)
        if storage == INITIALIZER:
            data_type = proto.data_type
            if tuple(proto.dims) != value.shape:
                raise ModelError(f"{name}: shape {value.shape} does not match the model's {tuple(proto.dims)}")
            proto.CopyFrom(_tensor_proto(value, proto.name, data_type))
        elif storage == CONSTANT_TENSOR:
            data_type = proto.t.data_type
            if tuple(proto.t.dims) != value.shape:
                raise ModelError(f"{name}: shape {value.shape} does not match the model's {tuple(proto.t.dims)}")
            proto.t.CopyFrom(_tensor_proto(value, proto.t.name, data_type))
        elif storage == CONSTANT_FLOAT:
            proto.f = float(np.asarray(value, np.float32).reshape(()))
        else:
            del proto.floats[:]
            proto.floats.extend(np.asarray(value, np.float32).ravel().tolist())
    return model


def _clear_tensor_data(tensor: onnx.TensorProto) -> None:
    for field in ("raw_data", "float_data", "double_data", "int32_data", "int64_data", "uint64_data", "string_data", "external_data"):
        tensor.ClearField(field)
    tensor.ClearField("data_location")


def strip_tensors(model: onnx.ModelProto, names: set[str] | Mapping) -> onnx.ModelProto:
    """A copy of the model with the named tensors' values removed; names, dtypes and shapes stay.

    This is the topology the bitstream carries: `replace_tensors` on it with every stripped value
    gives back a complete model.
    """
    model = copy.deepcopy(model)
    slots = _slots(model)
    for name in names:
        storage, proto, _ = slots[name]
        if storage == INITIALIZER:
            _clear_tensor_data(proto)
        elif storage == CONSTANT_TENSOR:
            _clear_tensor_data(proto.t)
        elif storage == CONSTANT_FLOAT:
            proto.f = 0.0
        else:
            del proto.floats[:]
    return model


def _slot_shape(storage: int, proto) -> tuple[tuple[int, ...], int, int]:
    if storage == INITIALIZER:
        return tuple(proto.dims), proto.data_type, storage
    if storage == CONSTANT_TENSOR:
        return tuple(proto.t.dims), proto.t.data_type, storage
    if storage == CONSTANT_FLOAT:
        return (), onnx.TensorProto.FLOAT, storage
    return (len(proto.floats),), onnx.TensorProto.FLOAT, storage


def slot_shapes(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], int, int]]:
    """(shape, onnx data type, storage) of every tensor slot of a (possibly stripped) model, by name."""
    return {name: _slot_shape(storage, proto) for name, (storage, proto, _) in _slots(model).items()}


def stripped_shape(model: onnx.ModelProto, name: str) -> tuple[tuple[int, ...], int, int] | None:
    """(shape, onnx data type, storage) of one tensor slot, or None (see `slot_shapes`)."""
    slot = _slots(model).get(name)
    return None if slot is None else _slot_shape(slot[0], slot[1])
