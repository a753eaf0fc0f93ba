"""Weight tensors as linear layers: matrices W_g [rows, columns] and the inputs X_g with W_g X_g.

OPTQ (Frantar et al., ICLR 2023) quantizes a layer's weight matrix column by column against the
Hessian H = X^T X of the layer's input rows. This module finds, for each weight of a Conv, Gemm,
MatMul or LSTM, the value that feeds it (the "tap"), turns the weight into groups of matrices
(one per conv group, one per LSTM direction; a depthwise kernel is one 1 x k*k matrix per
channel), turns tapped activations into the matching input rows, and accumulates H.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import helper

from nnlc import onnx_io


@dataclasses.dataclass
class Layer:
    """One weight tensor seen as `groups` matrices of shape [rows, columns]."""

    name: str  # qualified tensor name
    kind: str  # conv, gemm, matmul, lstm_w, lstm_r
    shape: tuple[int, ...]
    groups: int
    rows: int
    columns: int
    taps: tuple[str, ...]  # values whose contents give the input rows
    node: onnx.NodeProto
    order: float  # position of the consuming node in the main graph (topological; fractions: inside an If)
    transposed: bool = False  # gemm/matmul weight stored [in, out]
    # other nodes that read the same weight with the same input rows (an LSTM cell exported once per
    # branch of an If): their taps add rows to the same H
    alternates: list["Layer"] = dataclasses.field(default_factory=list)

    @property
    def all_taps(self) -> tuple[str, ...]:
        return tuple(tap for layer in (self, *self.alternates) for tap in layer.taps if tap)

    def to_matrices(self, array: np.ndarray) -> np.ndarray:
        """[groups, rows, columns] float64 view of the weight."""
        array = np.asarray(array, dtype=np.float64)
        if self.kind == "conv":
            return array.reshape(self.groups, self.rows, self.columns)
        if self.kind in ("gemm", "matmul"):
            return (array.T if self.transposed else array).reshape(1, self.rows, self.columns)
        return array.reshape(self.groups, self.rows, self.columns)  # lstm: [directions, 4H, in]

    def from_matrices(self, matrices: np.ndarray) -> np.ndarray:
        """Inverse of `to_matrices` (the tensor's own shape)."""
        if self.kind in ("gemm", "matmul"):
            matrix = matrices.reshape(self.rows, self.columns)
            return (matrix.T if self.transposed else matrix).reshape(self.shape)
        return matrices.reshape(self.shape)

    def input_rows(self, values: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """[groups, n, columns] input rows of this layer from the tapped values (None: unsupported)."""
        x = values.get(self.taps[0])
        if x is None or np.size(x) == 0:  # empty: the run took the other branch of the layer's If
            return None
        x = np.asarray(x, dtype=np.float32)
        if self.kind == "conv":
            return _conv_patches(x, self.node, self.groups, self.shape)
        if self.kind == "gemm":
            if onnx_io.node_attribute(self.node, "transA", 0):
                x = x.T
            return x.reshape(1, -1, self.columns)
        if self.kind == "matmul":
            return x.reshape(1, -1, self.columns)
        if self.kind == "lstm_w":
            return np.broadcast_to(x.reshape(1, -1, self.columns), (self.groups, x.size // self.columns, self.columns))
        if self.kind == "lstm_r":
            y = values.get(self.taps[1])  # Y [T, directions, batch, hidden]
            if y is None or np.size(y) == 0:
                return None
            hidden = self.columns
            initial = values.get(self.taps[2]) if len(self.taps) > 2 and self.taps[2] else None
            initial = np.zeros((self.groups, y.shape[2], hidden), np.float32) if initial is None else \
                np.asarray(initial, np.float32).reshape(self.groups, -1, hidden)
            direction = onnx_io.node_attribute(self.node, "direction", b"forward")
            direction = direction.decode() if isinstance(direction, bytes) else direction
            rows = []
            for d in range(self.groups):
                reverse = direction == "reverse" or (direction == "bidirectional" and d == 1)
                sequence = y[:, d]  # [T, batch, hidden]
                if reverse:
                    previous = np.concatenate([sequence[1:], initial[d][None]], axis=0)
                else:
                    previous = np.concatenate([initial[d][None], sequence[:-1]], axis=0)
                rows.append(previous.reshape(-1, hidden))
            return np.stack(rows)
        return None


def _conv_patches(x: np.ndarray, node: onnx.NodeProto, groups: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """im2col rows [groups, N * output positions, C/groups * prod(kernel)] of a Conv's input."""
    spatial = len(shape) - 2
    if x.ndim != spatial + 2 or spatial not in (1, 2, 3):
        return None
    auto_pad = onnx_io.node_attribute(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    kernel = tuple(shape[2:])
    strides = tuple(onnx_io.node_attribute(node, "strides", [1] * spatial))
    dilations = tuple(onnx_io.node_attribute(node, "dilations", [1] * spatial))
    if auto_pad in ("NOTSET", "VALID"):
        pads = list(onnx_io.node_attribute(node, "pads", [0] * (2 * spatial))) if auto_pad == "NOTSET" \
            else [0] * (2 * spatial)
    else:  # SAME_UPPER / SAME_LOWER
        pads = []
        begin, end = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations, strict=True):
            out = -(-size // s)
            total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            small, large = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)])
    window = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    view = sliding_window_view(x, window, axis=tuple(range(2, 2 + spatial)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + \
        tuple(slice(None, None, d) for d in dilations)
    view = view[index]  # [N, C, *out, *kernel]
    n, channels = view.shape[:2]
    per_group = channels // groups
    out_axes = tuple(range(2, 2 + spatial))
    kernel_axes = tuple(range(2 + spatial, 2 + 2 * spatial))
    view = view.reshape((n, groups, per_group) + view.shape[2:])
    # -> [groups, N, *out, per_group, *kernel]
    view = view.transpose((1, 0) + tuple(a + 1 for a in out_axes) + (2,) + tuple(a + 1 for a in kernel_axes))
    return np.ascontiguousarray(view).reshape(groups, -1, per_group * int(np.prod(kernel)))


def _constant_ints(name: str, producers: Mapping[str, onnx.NodeProto]) -> list[int] | None:
    node = producers.get(name)
    if node is None or node.op_type != "Constant" or not node.attribute:
        return None
    value = onnx.helper.get_attribute_value(node.attribute[0])
    if isinstance(value, onnx.TensorProto):
        return [int(v) for v in onnx.numpy_helper.to_array(value).ravel()]
    return [int(v) for v in np.ravel(value)]


def _row_source(value: str, producers: Mapping[str, onnx.NodeProto],
                records: Mapping[str, onnx_io.TensorRecord]) -> onnx_io.TensorRecord | None:
    """The 2-D weight whose row slices (Slice on axis 0, Concat on axis 0, Unsqueeze at axis 0) make
    `value`, or None. Row order does not matter to OPTQ: every row of an LSTM weight sees the same input."""
    node = producers.get(value)
    if node is None or node.op_type != "Unsqueeze":
        return None
    axes = _constant_ints(node.input[1], producers) if len(node.input) > 1 \
        else list(onnx_io.node_attribute(node, "axes", []))
    if axes != [0]:
        return None
    parts = [node.input[0]]
    concat = producers.get(node.input[0])
    if concat is not None and concat.op_type == "Concat" and int(onnx_io.node_attribute(concat, "axis", 0)) == 0:
        parts = list(concat.input)
    sources = set()
    for part in parts:
        piece = producers.get(part)
        if part in records:
            sources.add(part)
        elif piece is not None and piece.op_type == "Slice" and piece.input[0] in records:
            starts = _constant_ints(piece.input[1], producers)
            axes = _constant_ints(piece.input[3], producers) if len(piece.input) > 3 and piece.input[3] else \
                ([0] if starts is not None and len(starts) == 1 else None)
            steps = _constant_ints(piece.input[4], producers) if len(piece.input) > 4 and piece.input[4] else [1]
            if axes != [0] or steps != [1]:
                return None
            sources.add(piece.input[0])
        else:
            return None
    if len(sources) != 1:
        return None
    record = records[sources.pop()]
    return record if record.array.ndim == 2 else None


def _layers_of_node(node: onnx.NodeProto, records: Mapping[str, onnx_io.TensorRecord], order: float,
                    tap_name, producers: Mapping[str, onnx.NodeProto] | None = None) -> list[Layer]:
    """The layers whose weight (a float tensor in `records`, by ONNX name) `node` consumes.

    `tap_name(value)` gives the name under which a value the node reads is visible from the main graph;
    `producers` (value -> node of the node's graph) lets LSTM weights be traced through row slices."""
    inputs = list(node.input)
    found = []
    if node.op_type == "Conv" and len(inputs) > 1 and inputs[1] in records:
        record = records[inputs[1]]
        shape = record.array.shape
        groups = int(onnx_io.node_attribute(node, "group", 1))
        if len(shape) >= 3 and not shape[0] % groups:
            found.append(Layer(record.name, "conv", shape, groups, shape[0] // groups, int(np.prod(shape[1:])),
                               (tap_name(inputs[0]),), node, order))
    elif node.op_type == "Gemm" and len(inputs) > 1 and inputs[1] in records and records[inputs[1]].array.ndim == 2:
        record = records[inputs[1]]
        transposed = not onnx_io.node_attribute(node, "transB", 0)
        rows, columns = (record.array.shape[1], record.array.shape[0]) if transposed else record.array.shape
        found.append(Layer(record.name, "gemm", record.array.shape, 1, rows, columns, (tap_name(inputs[0]),),
                           node, order, transposed))
    elif node.op_type == "MatMul" and len(inputs) > 1 and inputs[1] in records and records[inputs[1]].array.ndim == 2:
        record = records[inputs[1]]
        columns, rows = record.array.shape
        found.append(Layer(record.name, "matmul", record.array.shape, 1, rows, columns, (tap_name(inputs[0]),),
                           node, order, True))
    elif node.op_type == "LSTM" and int(onnx_io.node_attribute(node, "layout", 0)) == 0:
        if not node.output or not node.output[0]:
            if not node.output:
                node.output.append("")
            node.output[0] = f"nnlc_lstm_y_{str(order).replace('.', '_')}"
        initial_h = inputs[5] if len(inputs) > 5 else ""
        for position, kind in ((1, "lstm_w"), (2, "lstm_r")):
            if len(inputs) <= position:
                continue
            record = records.get(inputs[position])
            if record is not None and record.array.ndim == 3:
                directions, rows, columns = record.array.shape
            else:  # a PyTorch LSTMCell export: W/R assembled from row slices of one [4H, in] weight
                record = _row_source(inputs[position], producers or {}, records)
                direction = onnx_io.node_attribute(node, "direction", b"forward")
                if record is None or direction not in (b"forward", "forward"):
                    continue
                directions, (rows, columns) = 1, record.array.shape
            taps = (tap_name(inputs[0]),) if kind == "lstm_w" else \
                (tap_name(inputs[0]), tap_name(node.output[0]), tap_name(initial_h) if initial_h else "")
            found.append(Layer(record.name, kind, record.array.shape, directions, rows, columns, taps, node, order))
    return found


class _BranchTaps:
    """Makes values computed inside the branches of an `If` visible in the graph that holds the If.

    Each tapped value becomes an extra output of its branch (through an Identity) and of the If node;
    the other branch outputs an empty tensor of the same type and rank, so a run that takes the other
    branch yields an empty tap (no input rows)."""

    def __init__(self, node: onnx.NodeProto, owner: str, types: Mapping[str, tuple[int, int | None]]):
        self.node = node
        self.owner = owner
        self.branches = {attribute.name: attribute.g for attribute in node.attribute
                         if attribute.type == onnx.AttributeProto.GRAPH}
        self.types = types
        self.lifted: dict[tuple[str, str], str] = {}

    def name_in_main(self, branch: str, value: str) -> str:
        """The name of `value` (as seen inside `branch`) in the If's own graph, lifting it out when needed."""
        if not value:
            return value
        # outer-scope values are lifted too, so the tap is empty in runs that take another branch
        graph = self.branches[branch]
        key = (branch, value)
        if key in self.lifted:
            return self.lifted[key]
        safe = re.sub(r"[^A-Za-z0-9_]", "_", f"{self.owner}_{branch}_{value}")
        lifted = f"nnlc_tap_{safe}"
        elem, rank = self.types.get(value, (onnx.TensorProto.FLOAT, None))
        inner = f"{lifted}_inner"
        graph.node.append(helper.make_node("Identity", [value], [inner], name=f"{lifted}_identity"))
        graph.output.append(helper.make_tensor_value_info(inner, elem, None))
        for other_name, other in self.branches.items():
            if other_name == branch:
                continue
            empty = f"{lifted}_empty"
            dims = [0] + [1] * (max(1, rank or 1) - 1)
            zero = onnx.TensorProto()
            zero.data_type = elem
            zero.dims.extend(dims)
            other.node.append(helper.make_node("Constant", [], [empty], name=f"{lifted}_empty_constant", value=zero))
            other.output.append(helper.make_tensor_value_info(empty, elem, None))
        self.node.output.append(lifted)
        self.lifted[key] = lifted
        return lifted


def find_layers(model: onnx.ModelProto) -> tuple[dict[str, Layer], onnx.ModelProto]:
    """The weights that feed Conv, Gemm, MatMul or LSTM, as `Layer`s: in the main graph and in the
    branches of `If` nodes at any depth (Silero's per-sample-rate networks and their LSTM cells).

    Returns the layers by tensor name and a copy of the model in which every LSTM's Y output has a
    name (it may be optional and unnamed; OPTQ of R needs it) and every branch value a layer reads is
    lifted out through the enclosing If nodes (`_BranchTaps`), so onnxruntime can tap it.
    """
    import copy

    model = copy.deepcopy(model)
    records = onnx_io.find_float_tensors(model)
    by_path: dict[str, dict[str, onnx_io.TensorRecord]] = {}
    for record in records.values():
        by_path.setdefault(record.graph_path, {})[record.onnx_name] = record
    layers: dict[str, Layer] = {}
    types: dict | None = None

    def visit(graph: onnx.GraphProto, path: str, first: float, width: float, to_main, outer: Mapping) -> None:
        nonlocal types
        nodes = list(graph.node)
        prefix = f"{path}/" if path else ""
        visible = {**outer, **by_path.get(path, {})}  # a subgraph reads its own and enclosing tensors
        producers = {output: node for node in nodes for output in node.output}
        for index, node in enumerate(nodes):
            position = first + width * index / max(1, len(nodes))
            for layer in _layers_of_node(node, visible, position, to_main, producers):
                if layer.name in layers:
                    layers[layer.name].alternates.append(layer)
                else:
                    layers[layer.name] = layer
            if node.op_type != "If":
                continue
            branches = list(onnx_io.subgraphs(node, prefix, index))  # the paths records carry
            if not branches:
                continue
            if types is None:
                types = onnx_io.value_types(model)
            owner = branches[0][0][len(prefix):].rsplit("/", 1)[0]  # the If's name as in those paths
            taps = _BranchTaps(node, owner, types)
            for branch_path, branch in branches:
                name = branch_path.rsplit("/", 1)[-1]  # then_branch / else_branch
                def lift(value: str, name: str = name, taps: _BranchTaps = taps, outer=to_main) -> str:
                    return outer(taps.name_in_main(name, value))
                visit(branch, branch_path, position, width / max(1, len(nodes)), lift, visible)

    visit(model.graph, "", 0.0, float(len(model.graph.node)), lambda value: value, {})
    return layers, model


class HessianAccumulator:
    """Sums X^T X (and X) per layer group over calibration batches; `mean()` gives H = E[x x^T]."""

    def __init__(self, layer: Layer):
        self.layer = layer
        self.sum = np.zeros((layer.groups, layer.columns, layer.columns), np.float64)
        self.row_sum = np.zeros((layer.groups, layer.columns), np.float64)
        self.count = 0

    def add(self, values: Mapping[str, np.ndarray]) -> bool:
        added = False
        for layer in (self.layer, *self.layer.alternates):
            rows = layer.input_rows(values)
            if rows is None or rows.shape[1] == 0:
                continue
            rows = np.asarray(rows, np.float32)
            self.sum += np.matmul(rows.transpose(0, 2, 1), rows).astype(np.float64)
            self.row_sum += rows.sum(axis=1, dtype=np.float64)
            self.count += rows.shape[1]
            added = True
        return added

    def mean(self) -> np.ndarray:
        return self.sum / max(1, self.count)

    def input_mean(self) -> np.ndarray:
        """E[x] of the input rows, [groups, columns] (bias correction)."""
        return self.row_sum / max(1, self.count)
