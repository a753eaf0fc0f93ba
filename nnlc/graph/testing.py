"""Builders for small ONNX models and a comparison with onnxruntime (used by tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from nnlc.graph import from_onnx

FLOAT = TensorProto.FLOAT


def tensor_info(name: str, elem_type: int = FLOAT, shape: Sequence[Any] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


def initializer(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def constant_node(output: str, array: np.ndarray, name: str = "") -> onnx.NodeProto:
    return helper.make_node("Constant", [], [output], name=name or f"const_{output}",
                            value=numpy_helper.from_array(np.asarray(array), output))


def make_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
               outputs: Sequence[onnx.ValueInfoProto], initializers: Sequence[onnx.TensorProto] = (),
               opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "test_graph", list(inputs), list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def run_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, dict(feeds))))


def run_jax(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray],
            static: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The model through `from_onnx` and `jax.jit`, weights traced, `static` inputs held fixed."""
    apply, weights = from_onnx(model, static_inputs=static)
    fixed = {k: v for k, v in feeds.items() if k in static}
    traced = {k: v for k, v in feeds.items() if k not in static}
    outputs = jax.jit(lambda w, x: apply(w, {**x, **fixed}))(weights, traced)
    return {k: np.asarray(v) for k, v in outputs.items()}


def assert_matches_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rtol: float = 1e-5,
                               atol: float = 1e-6, static: Sequence[str] = ()) -> dict[str, np.ndarray]:
    expected = run_onnxruntime(model, feeds)
    actual = run_jax(model, feeds, static)
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert actual[name].shape == value.shape, name
        scale = max(float(np.max(np.abs(value))), 1.0) if value.size and value.dtype.kind == "f" else 1.0
        np.testing.assert_allclose(actual[name], value, rtol=rtol, atol=atol * scale, err_msg=name)
    return actual


def random_array(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def tiny_attention_model(rng, hidden: int = 8, heads: int = 2) -> tuple:
    """One self-attention block with exported-style shape arithmetic (Shape/Gather/Concat/Reshape)."""
    head = hidden // heads
    nodes = [
        helper.make_node("Shape", ["x"], ["x_shape"]),
        constant_node("i0", np.array(0, np.int64)), constant_node("i1", np.array(1, np.int64)),
        helper.make_node("Gather", ["x_shape", "i0"], ["batch"], axis=0),
        helper.make_node("Gather", ["x_shape", "i1"], ["length"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axis0"], ["batch_1d"]),
        helper.make_node("Unsqueeze", ["length", "axis0"], ["length_1d"]),
        helper.make_node("Concat", ["batch_1d", "length_1d", "heads_head"], ["split_shape"], axis=0),
        helper.make_node("Concat", ["batch_1d", "length_1d", "hidden_1d"], ["merge_shape"], axis=0),
        helper.make_node("LayerNormalization", ["x", "ln_scale", "ln_bias"], ["normed"], axis=-1, epsilon=1e-5),
    ]
    for part in "qkv":
        nodes += [helper.make_node("MatMul", ["normed", f"w_{part}"], [f"{part}_flat"]),
                  helper.make_node("Reshape", [f"{part}_flat", "split_shape"], [f"{part}_split"]),
                  helper.make_node("Transpose", [f"{part}_split"], [f"{part}_heads"],
                                   perm=[0, 2, 3, 1] if part == "k" else [0, 2, 1, 3])]
    nodes += [
        helper.make_node("MatMul", ["q_heads", "k_heads"], ["scores_raw"]),
        helper.make_node("Div", ["scores_raw", "sqrt_head"], ["scores"]),
        helper.make_node("Add", ["scores", "mask_bias"], ["masked"]),
        helper.make_node("Softmax", ["masked"], ["probs"], axis=-1),
        helper.make_node("MatMul", ["probs", "v_heads"], ["context"]),
        helper.make_node("Transpose", ["context"], ["context_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["context_t", "merge_shape"], ["merged"]),
        helper.make_node("MatMul", ["merged", "w_o"], ["projected"]),
        helper.make_node("Div", ["projected", "sqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["erf1"]),
        helper.make_node("Mul", ["projected", "erf1"], ["gelu2"]),
        helper.make_node("Mul", ["gelu2", "half"], ["gelu"]),
        helper.make_node("Add", ["x", "gelu"], ["y"]),
    ]
    weights = [initializer(f"w_{p}", random_array(rng, hidden, hidden, scale=0.3)) for p in "qkvo"] + [
        initializer("ln_scale", random_array(rng, hidden)), initializer("ln_bias", random_array(rng, hidden)),
        initializer("axis0", np.array([0], np.int64)), initializer("heads_head", np.array([heads, head], np.int64)),
        initializer("hidden_1d", np.array([hidden], np.int64)),
        initializer("sqrt_head", np.array(np.sqrt(head), np.float32)),
        initializer("sqrt2", np.array(np.sqrt(2), np.float32)), initializer("one", np.array(1, np.float32)),
        initializer("half", np.array(0.5, np.float32)),
        initializer("mask_bias", np.array([0, 0, 0, -1e4], np.float32)),
    ]
    model = make_model(nodes, [tensor_info("x", shape=["batch", "length", hidden])], [tensor_info("y")], weights)
    return model, {"x": random_array(rng, 2, 4, hidden)}
