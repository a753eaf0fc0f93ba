"""A small classifier with correlated inputs for the calibrated-mode tests (built in code, no files)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def small_cnn(seed: int = 0, classes: int = 10) -> onnx.ModelProto:
    """Conv 3->8 -> Relu -> Conv 8->16 (stride 2) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits."""
    rng = np.random.default_rng(seed)

    def weights(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = [
        numpy_helper.from_array(weights((8, 3, 3, 3), 27), "conv1.weight"),
        numpy_helper.from_array((0.05 * rng.standard_normal(8)).astype(np.float32), "conv1.bias"),
        numpy_helper.from_array(weights((16, 8, 3, 3), 72), "conv2.weight"),
        numpy_helper.from_array((0.05 * rng.standard_normal(16)).astype(np.float32), "conv2.bias"),
        numpy_helper.from_array(weights((classes, 16), 16) * 20, "fc.weight"),
        numpy_helper.from_array((0.1 * rng.standard_normal(classes)).astype(np.float32), "fc.bias"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                  [None, 3, 12, 12])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def correlated_images(count: int, seed: int = 0) -> np.ndarray:
    """Smooth random images [count, 3, 12, 12] (neighbouring pixels and channels correlated)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, 3, 14, 14)).astype(np.float32)
    smooth = (noise[:, :, :-2, :-2] + noise[:, :, 1:-1, 1:-1] + noise[:, :, 2:, 2:]) / 3.0
    mixed = 0.6 * smooth + 0.4 * smooth.mean(axis=1, keepdims=True)
    return mixed.astype(np.float32)


def stateful_rnn(seed: int = 0, hidden: int = 128) -> onnx.ModelProto:
    """Silero-like stateful net with weights: stateN = tanh(state @ R + mean(input) * u), output = sigmoid(stateN . v)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((0.9 * rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32),
                                     "recurrent"),
             numpy_helper.from_array(rng.standard_normal((1, hidden)).astype(np.float32) * 3, "input_gain"),
             numpy_helper.from_array(rng.standard_normal((hidden, 4)).astype(np.float32), "readout")]
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),  # [B, 1]
             helper.make_node("MatMul", ["m", "input_gain"], ["drive"]),  # [B, H]
             helper.make_node("MatMul", ["state", "recurrent"], ["carried"]),  # [2, B, H]
             helper.make_node("Add", ["carried", "drive"], ["pre"]),
             helper.make_node("Tanh", ["pre"], ["stateN"]),
             helper.make_node("MatMul", ["stateN", "readout"], ["read"]),  # [2, B, 4]
             helper.make_node("ReduceMean", ["read"], ["logit"], axes=[0, 2], keepdims=0),
             helper.make_node("Sigmoid", ["logit"], ["output"])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, None]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, hidden]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None]),
               helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, None, hidden])]
    graph = helper.make_graph(nodes, "stateful_rnn", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model
