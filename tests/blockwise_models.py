"""Small residual CNN, transformer and LSTM models for the block-wise tests (built in code)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _init(rng, name, shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _finish(nodes, inputs, outputs, inits, name):
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def residual_cnn(blocks: int = 3, channels: int = 8, seed: int = 0) -> onnx.ModelProto:
    """Stem conv, `blocks` residual blocks (conv-relu-conv + skip, relu), global pool, Gemm."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "stem.w", (channels, 3, 3, 3)), _init(rng, "stem.b", (channels,), 0.1)]
    nodes = [helper.make_node("Conv", ["x", "stem.w", "stem.b"], ["h0"], pads=[1, 1, 1, 1])]
    for b in range(blocks):
        inits += [_init(rng, f"b{b}.c1.w", (channels, channels, 3, 3), 0.15), _init(rng, f"b{b}.c1.b", (channels,), 0.1),
                  _init(rng, f"b{b}.c2.w", (channels, channels, 3, 3), 0.15), _init(rng, f"b{b}.c2.b", (channels,), 0.1)]
        nodes += [helper.make_node("Conv", [f"h{b}", f"b{b}.c1.w", f"b{b}.c1.b"], [f"b{b}.a"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"b{b}.a"], [f"b{b}.r"]),
                  helper.make_node("Conv", [f"b{b}.r", f"b{b}.c2.w", f"b{b}.c2.b"], [f"b{b}.c"], pads=[1, 1, 1, 1]),
                  helper.make_node("Add", [f"b{b}.c", f"h{b}"], [f"b{b}.s"]),
                  helper.make_node("Relu", [f"b{b}.s"], [f"h{b + 1}"])]
    inits += [_init(rng, "fc.w", (10, channels)), _init(rng, "fc.b", (10,), 0.1)]
    nodes += [helper.make_node("GlobalAveragePool", [f"h{blocks}"], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], transB=1)]
    return _finish(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])], inits, "residual_cnn")


def transformer(layers: int = 2, width: int = 16, seed: int = 0) -> onnx.ModelProto:
    """BERT-like: embedding Gather, an extended attention mask from `attention_mask`, `layers` encoder
    layers (single-head attention + residual + LayerNorm, MLP + residual + LayerNorm)."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "emb", (50, width), 1.0),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(-1e4, np.float32), "big"),
             numpy_helper.from_array(np.array(0.25, np.float32), "scale"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h0"]),
             helper.make_node("Unsqueeze", ["attention_mask", "axis1"], ["m1"]),
             helper.make_node("Cast", ["m1"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["one", "mf"], ["inv"]),
             helper.make_node("Mul", ["inv", "big"], ["mask"])]  # [B, 1, L]
    for i in range(layers):
        for name in ("q", "k", "v", "o"):
            inits.append(_init(rng, f"l{i}.{name}", (width, width), 0.25))
        inits += [_init(rng, f"l{i}.up", (width, 2 * width), 0.25), _init(rng, f"l{i}.down", (2 * width, width), 0.25),
                  numpy_helper.from_array(np.ones(width, np.float32), f"l{i}.ln1.s"),
                  numpy_helper.from_array(np.zeros(width, np.float32), f"l{i}.ln1.b"),
                  numpy_helper.from_array(np.ones(width, np.float32), f"l{i}.ln2.s"),
                  numpy_helper.from_array(np.zeros(width, np.float32), f"l{i}.ln2.b")]
        h, p = f"h{i}", f"l{i}."
        nodes += [helper.make_node("MatMul", [h, p + "q"], [p + "Q"]), helper.make_node("MatMul", [h, p + "k"], [p + "K"]),
                  helper.make_node("MatMul", [h, p + "v"], [p + "V"]),
                  helper.make_node("Transpose", [p + "K"], [p + "Kt"], perm=[0, 2, 1]),
                  helper.make_node("MatMul", [p + "Q", p + "Kt"], [p + "S"]),
                  helper.make_node("Mul", [p + "S", "scale"], [p + "Ss"]),
                  helper.make_node("Add", [p + "Ss", "mask"], [p + "Sm"]),
                  helper.make_node("Softmax", [p + "Sm"], [p + "A"], axis=-1),
                  helper.make_node("MatMul", [p + "A", p + "V"], [p + "C"]),
                  helper.make_node("MatMul", [p + "C", p + "o"], [p + "O"]),
                  helper.make_node("Add", [p + "O", h], [p + "r1"]),
                  helper.make_node("LayerNormalization", [p + "r1", p + "ln1.s", p + "ln1.b"], [p + "n1"], axis=-1),
                  helper.make_node("MatMul", [p + "n1", p + "up"], [p + "U"]),
                  helper.make_node("Relu", [p + "U"], [p + "Ur"]),
                  helper.make_node("MatMul", [p + "Ur", p + "down"], [p + "D"]),
                  helper.make_node("Add", [p + "D", p + "n1"], [p + "r2"]),
                  helper.make_node("LayerNormalization", [p + "r2", p + "ln2.s", p + "ln2.b"], [f"h{i + 1}"], axis=-1)]
    nodes.append(helper.make_node("Identity", [f"h{layers}"], ["last_hidden_state"]))
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [None, None]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [None, None])]
    return _finish(nodes, inputs, [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [None, None, width])],
                   inits, "transformer")


def lstm_stack(hidden: int = 8, features: int = 6, seed: int = 0) -> onnx.ModelProto:
    """MatMul projection -> LSTM (states as inputs) -> Squeeze -> LSTM -> Squeeze -> MatMul head."""
    rng = np.random.default_rng(seed)
    inits = [_init(rng, "proj", (features, hidden)),
             _init(rng, "l1.W", (1, 4 * hidden, hidden)), _init(rng, "l1.R", (1, 4 * hidden, hidden)),
             _init(rng, "l2.W", (1, 4 * hidden, hidden)), _init(rng, "l2.R", (1, 4 * hidden, hidden)),
             _init(rng, "head", (hidden, 3)), numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes = [helper.make_node("MatMul", ["x", "proj"], ["p"]),
             helper.make_node("LSTM", ["p", "l1.W", "l1.R", "", "", "h0", "c0"], ["y1", "h1", "c1"], hidden_size=hidden),
             helper.make_node("Squeeze", ["y1", "axis1"], ["s1"]),
             helper.make_node("LSTM", ["s1", "l2.W", "l2.R"], ["y2"], hidden_size=hidden),
             helper.make_node("Squeeze", ["y2", "axis1"], ["s2"]),
             helper.make_node("MatMul", ["s2", "head"], ["out"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [7, 1, features]),
              helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, 1, hidden]),
              helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, 1, hidden])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [7, 1, 3]),
               helper.make_tensor_value_info("h1", TensorProto.FLOAT, [1, 1, hidden]),
               helper.make_tensor_value_info("c1", TensorProto.FLOAT, [1, 1, hidden])]
    return _finish(nodes, inputs, outputs, inits, "lstm_stack")
