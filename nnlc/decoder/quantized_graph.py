"""ONNX output with integer weights + DequantizeLinear (inference without full reconstruction)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nnlc import onnx_io

MIN_DEQUANTIZE_OPSET = 10


def _opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0


def _integer_array(symbols: np.ndarray, opset: int) -> np.ndarray:
    low, high = (int(symbols.min()), int(symbols.max())) if symbols.size else (0, 0)
    if -128 <= low and high <= 127:
        return symbols.astype(np.int8)
    if opset >= 21 and -32768 <= low and high <= 32767:
        return symbols.astype(np.int16)
    return symbols.astype(np.int32)


def _scale_and_axis(step, opset: int) -> tuple[np.ndarray, dict] | None:
    """The DequantizeLinear scale (scalar, or per output channel on axis 0 from opset 13)."""
    scale = np.asarray(step, np.float32)
    if scale.size == 1:
        return scale.reshape(()), {}
    if opset < 13:
        return None
    return scale.reshape(-1), {"axis": 0}


def insert_dequantize_nodes(model: onnx.ModelProto, tensors: dict[str, tuple[np.ndarray, float]]) -> int:
    """Replaces float32 tensors by integer tensors + a scale + DequantizeLinear, in place.

    Tensors of other float types, and initializers that are also graph inputs, stay float.
    Returns how many tensors were replaced.
    """
    opset = _opset(model)
    if opset < MIN_DEQUANTIZE_OPSET:
        return 0
    replaced = 0
    for path, graph in onnx_io.iter_graphs(model.graph):
        graph_inputs = {value.name for value in graph.input}
        new_nodes = []
        kept_initializers = []
        for initializer in graph.initializer:
            name = f"{path}/{initializer.name}" if path else initializer.name
            scaling = _scale_and_axis(tensors[name][1], opset) if name in tensors else None
            if scaling is not None and initializer.data_type == onnx.TensorProto.FLOAT and initializer.name not in graph_inputs:
                symbols = tensors[name][0]
                scale, attributes = scaling
                integer_name, scale_name = initializer.name + "__q", initializer.name + "__scale"
                kept_initializers.append(numpy_helper.from_array(_integer_array(symbols, opset), integer_name))
                kept_initializers.append(numpy_helper.from_array(scale, scale_name))
                new_nodes.append(helper.make_node("DequantizeLinear", [integer_name, scale_name], [initializer.name],
                                                  name=initializer.name + "__dequantize", **attributes))
                replaced += 1
            else:
                kept_initializers.append(initializer)
        nodes = list(new_nodes)
        for node in graph.node:
            output = node.output[0] if node.output else ""
            name = f"{path}/{output}" if path else output
            value = next((a for a in node.attribute if a.name == "value"), None)
            scaling = _scale_and_axis(tensors[name][1], opset) if name in tensors else None
            if (node.op_type == "Constant" and scaling is not None and value is not None
                    and value.t.data_type == onnx.TensorProto.FLOAT):
                symbols = tensors[name][0]
                scale, attributes = scaling
                integer_name, scale_name = output + "__q", output + "__scale"
                nodes.append(helper.make_node("Constant", [], [integer_name], name=(node.name or output) + "__q",
                                              value=numpy_helper.from_array(_integer_array(symbols, opset), integer_name)))
                nodes.append(helper.make_node("Constant", [], [scale_name], name=(node.name or output) + "__scale",
                                              value=numpy_helper.from_array(scale, scale_name)))
                nodes.append(helper.make_node("DequantizeLinear", [integer_name, scale_name], [output],
                                              name=(node.name or output) + "__dequantize", **attributes))
                replaced += 1
            else:
                nodes.append(node)
        del graph.initializer[:]
        graph.initializer.extend(kept_initializers)
        del graph.node[:]
        graph.node.extend(nodes)
    return replaced
