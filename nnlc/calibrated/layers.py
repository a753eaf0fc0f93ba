"""Weight tensors as linear layers: matrices W_g [rows, columns] and the inputs X_g with W_g X_g.

OPTQ (Frantar et al., ICLR 2023) quantizes a layer's weight matrix column by column against the
Hessian H = X^T X of the layer's input rows. This module finds, for each weight of a Conv, Gemm,
MatMul or LSTM, the value that feeds it (the "tap"), turns the weight into groups of matrices
(one per conv group, one per LSTM direction; a depthwise kernel is one 1 x k*k matrix per
channel), turns tapped activations into the matching input rows, and accumulates H.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view

from nnlc import onnx_io


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


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
    order: int  # position of the consuming node in the main graph (topological)
    transposed: bool = False  # gemm/matmul weight stored [in, out]

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
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float32)
        if self.kind == "conv":
            return _conv_patches(x, self.node, self.groups, self.shape)
        if self.kind == "gemm":
            if _attribute(self.node, "transA", 0):
                x = x.T
            return x.reshape(1, -1, self.columns)
        if self.kind == "matmul":
            return x.reshape(1, -1, self.columns)
        if self.kind == "lstm_w":
            return np.broadcast_to(x.reshape(1, -1, self.columns), (self.groups, x.size // self.columns, self.columns))
        if self.kind == "lstm_r":
            y = values.get(self.taps[1])  # Y [T, directions, batch, hidden]
            if y is None:
                return None
            hidden = self.columns
            initial = values.get(self.taps[2]) if len(self.taps) > 2 and self.taps[2] else None
            initial = np.zeros((self.groups, y.shape[2], hidden), np.float32) if initial is None else \
                np.asarray(initial, np.float32).reshape(self.groups, -1, hidden)
            direction = _attribute(self.node, "direction", b"forward")
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
    auto_pad = _attribute(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    kernel = tuple(shape[2:])
    strides = tuple(_attribute(node, "strides", [1] * spatial))
    dilations = tuple(_attribute(node, "dilations", [1] * spatial))
    if auto_pad in ("NOTSET", "VALID"):
        pads = list(_attribute(node, "pads", [0] * (2 * spatial))) if auto_pad == "NOTSET" else [0] * (2 * spatial)
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


def find_layers(model: onnx.ModelProto) -> tuple[dict[str, Layer], onnx.ModelProto]:
    """The main-graph weights that feed Conv, Gemm, MatMul or LSTM, as `Layer`s.

    Returns the layers by tensor name and a copy of the model in which every LSTM's Y output has a
    name (it may be optional and unnamed; OPTQ of R needs it).
    """
    import copy

    model = copy.deepcopy(model)
    records = onnx_io.find_float_tensors(model)
    main = {record.onnx_name: record for record in records.values() if record.graph_path == ""}
    layers: dict[str, Layer] = {}
    for order, node in enumerate(model.graph.node):
        inputs = list(node.input)
        if node.op_type == "Conv" and len(inputs) > 1 and inputs[1] in main:
            record = main[inputs[1]]
            shape = record.array.shape
            groups = int(_attribute(node, "group", 1))
            if len(shape) < 3 or shape[0] % groups:
                continue
            layers[record.name] = Layer(record.name, "conv", shape, groups, shape[0] // groups,
                                        int(np.prod(shape[1:])), (inputs[0],), node, order)
        elif node.op_type == "Gemm" and len(inputs) > 1 and inputs[1] in main and main[inputs[1]].array.ndim == 2:
            record = main[inputs[1]]
            transposed = not _attribute(node, "transB", 0)
            rows, columns = (record.array.shape[1], record.array.shape[0]) if transposed else record.array.shape
            layers[record.name] = Layer(record.name, "gemm", record.array.shape, 1, rows, columns, (inputs[0],),
                                        node, order, transposed)
        elif node.op_type == "MatMul" and len(inputs) > 1 and inputs[1] in main and main[inputs[1]].array.ndim == 2:
            record = main[inputs[1]]
            columns, rows = record.array.shape
            layers[record.name] = Layer(record.name, "matmul", record.array.shape, 1, rows, columns, (inputs[0],),
                                        node, order, True)
        elif node.op_type == "LSTM" and int(_attribute(node, "layout", 0)) == 0:
            if not node.output or not node.output[0]:
                if not node.output:
                    node.output.append("")
                node.output[0] = f"nnlc_lstm_y_{order}"
            initial_h = inputs[5] if len(inputs) > 5 else ""
            for position, kind in ((1, "lstm_w"), (2, "lstm_r")):
                if len(inputs) > position and inputs[position] in main:
                    record = main[inputs[position]]
                    directions, rows, columns = record.array.shape
                    taps = (inputs[0],) if kind == "lstm_w" else (inputs[0], node.output[0], initial_h)
                    layers[record.name] = Layer(record.name, kind, record.array.shape, directions, rows, columns,
                                                taps, node, order)
    return layers, model


class HessianAccumulator:
    """Sums X^T X per layer group over calibration batches; `mean()` gives H = E[x x^T]."""

    def __init__(self, layer: Layer):
        self.layer = layer
        self.sum = np.zeros((layer.groups, layer.columns, layer.columns), np.float64)
        self.count = 0

    def add(self, values: Mapping[str, np.ndarray]) -> bool:
        rows = self.layer.input_rows(values)
        if rows is None:
            return False
        rows = np.asarray(rows, np.float32)
        self.sum += np.matmul(rows.transpose(0, 2, 1), rows).astype(np.float64)
        self.count += rows.shape[1]
        return True

    def mean(self) -> np.ndarray:
        return self.sum / max(1, self.count)
