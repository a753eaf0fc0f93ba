"""Tiny ONNX models for the calibration tests, built with onnx.helper (inputs are what matters)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "calibration_test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _out(name, rank):
    """A float output of the given rank with symbolic dims."""
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}_{axis}" for axis in range(rank)])


def float_model(dims=(None, 4), name="x"):
    """One float input -> its mean over the last axis."""
    nodes = [helper.make_node("ReduceMean", [name], ["y"], axes=[-1], keepdims=0, )]
    return _model(nodes, [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(dims))],
                  [_out("y", len(dims) - 1)], opset=13)


def two_input_model():
    """x float32 [batch, 4] and ids int64 [batch, 3]."""
    nodes = [helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x"], ["mx"], axes=[1], keepdims=1),
             helper.make_node("Add", ["mx", "idsf"], ["y"])]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4]),
                          helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 3])],
                  [_out("y", 2)], opset=13)


def image_model(dims=(None, 3, 16, 16)):
    """One float image input -> global mean (any layout)."""
    nodes = [helper.make_node("ReduceMean", ["image"], ["y"], axes=[1, 2, 3], keepdims=0)]
    return _model(nodes, [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(dims))],
                  [_out("y", 1)], opset=13)


def sequence_model(hidden=4):
    """Silero-sequence-like inputs: input [T, 576], h, c [1, 1, hidden]."""
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),
             helper.make_node("ReduceMean", ["h"], ["hm"], axes=[0, 1, 2], keepdims=0),
             helper.make_node("ReduceMean", ["c"], ["cm"], axes=[0, 1, 2], keepdims=0),
             helper.make_node("Add", ["m", "hm"], ["a"]),
             helper.make_node("Add", ["a", "cm"], ["y"])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["T", 576]),
              helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 1, hidden]),
              helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 1, hidden])]
    return _model(nodes, inputs, [_out("y", 2)], opset=13)


def stateful_model(hidden=4):
    """Silero-like recurrence: stateN = tanh(0.9 state + mean(input) + sr / 1e5), output = mean(stateN)."""
    inits = [numpy_helper.from_array(np.array(0.9, np.float32), "decay"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "sr_scale")]
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),  # [B, 1]
             helper.make_node("Mul", ["state", "decay"], ["sd"]),  # [2, B, H]
             helper.make_node("Add", ["sd", "m"], ["s1"]),  # broadcasts [B, 1] -> [2, B, H]
             helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["srf", "sr_scale"], ["srs"]),
             helper.make_node("Add", ["s1", "srs"], ["s2"]),
             helper.make_node("Tanh", ["s2"], ["stateN"]),
             helper.make_node("ReduceMean", ["stateN"], ["output"], axes=[0, 2], keepdims=0)]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, None]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, hidden]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    outputs = [_out("output", 1),
               _out("stateN", 3)]
    return _model(nodes, inputs, outputs, inits, opset=13)


def branched_stateful_model(hidden=4):
    """`stateful_model` with a network per sample rate, like silero_vad.onnx: If(sr == 16000) picks a
    branch whose output also says which ran (mean(stateN) + 1 at 16 kHz, + 2 at 8 kHz)."""
    def branch(offset):
        nodes = [helper.make_node("ReduceMean", ["input"], [f"m{offset}"], axes=[1], keepdims=1),
                 helper.make_node("Mul", ["state", "decay"], [f"sd{offset}"]),
                 helper.make_node("Add", [f"sd{offset}", f"m{offset}"], [f"s{offset}"]),
                 helper.make_node("Tanh", [f"s{offset}"], [f"state{offset}"]),
                 helper.make_node("ReduceMean", [f"state{offset}"], [f"r{offset}"], axes=[0, 2], keepdims=0),
                 helper.make_node("Constant", [], [f"c{offset}"], value=numpy_helper.from_array(
                     np.array(float(offset), np.float32))),
                 helper.make_node("Add", [f"r{offset}", f"c{offset}"], [f"out{offset}"])]
        return helper.make_graph(nodes, f"rate{offset}", [], [_out(f"out{offset}", 1), _out(f"state{offset}", 3)])
    inits = [numpy_helper.from_array(np.array(0.9, np.float32), "decay"),
             numpy_helper.from_array(np.array(16000, np.int64), "rate16k")]
    nodes = [helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
             helper.make_node("If", ["is16k"], ["output", "stateN"], then_branch=branch(1), else_branch=branch(2))]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, None]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, hidden]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    return _model(nodes, inputs, [_out("output", 1), _out("stateN", 3)], inits, opset=13)


def text_model(names=("input_ids", "attention_mask", "token_type_ids"), seq=None, dtype=TensorProto.INT64):
    """Integer text inputs [batch, seq] -> the float sum of them."""
    nodes, last = [], None
    for name in names:
        nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT))
        if last is None:
            last = f"{name}_f"
        else:
            nodes.append(helper.make_node("Add", [last, f"{name}_f"], [f"sum_{name}"]))
            last = f"sum_{name}"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    inputs = [helper.make_tensor_value_info(name, dtype, [None, seq]) for name in names]
    return _model(nodes, inputs, [_out("y", 2)], opset=13)


def run_all(model, feeds):
    """onnxruntime outputs of every feed (fails if onnxruntime refuses one)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]
