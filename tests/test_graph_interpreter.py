"""The interpreter: trace-time folding, control flow, static inputs, errors, and the op registry."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from onnx import TensorProto, helper

from nnlc.graph import from_onnx, supported_ops
from nnlc.graph.testing import (FLOAT, assert_matches_onnxruntime, constant_node, initializer, make_model,
                                random_array, tensor_info)

REQUIRED_OPS = """Conv ConvTranspose Gemm MatMul BatchNormalization LayerNormalization InstanceNormalization Relu
LeakyRelu Clip Sigmoid Tanh HardSigmoid HardSwish Erf Gelu Softmax LogSoftmax Add Sub Mul Div Pow Sqrt Exp Log
Neg Abs Max Min Where Equal Greater Less And Or Not IsNaN Cast Reshape Flatten Transpose Concat Split Slice
Gather Squeeze Unsqueeze Expand Tile Pad Shape Size ConstantOfShape Range Identity Constant Dropout MaxPool
AveragePool GlobalAveragePool ReduceMean ReduceSum ReduceMax Resize LSTM GRU If""".split()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(2)


def test_every_required_op_is_registered():
    assert not set(REQUIRED_OPS) - set(supported_ops())


def _loop_model(with_scan_output: bool):
    """Loop: acc = acc * 0.5 + x each step (scan output: acc per step)."""
    outputs = [tensor_info("cond_out", TensorProto.BOOL, []), tensor_info("acc_out")]
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             constant_node("half", np.float32(0.5), name="half_const"),
             helper.make_node("Mul", ["acc_in", "half"], ["scaled"]),
             helper.make_node("Add", ["scaled", "x"], ["acc_out"])]
    if with_scan_output:
        nodes.append(helper.make_node("Identity", ["acc_out"], ["step_value"]))
        outputs.append(tensor_info("step_value"))
    body = helper.make_graph(nodes, "body", [tensor_info("i", TensorProto.INT64, []),
                                             tensor_info("cond_in", TensorProto.BOOL, []), tensor_info("acc_in")],
                             outputs)
    loop_outputs = ["acc_final"] + (["steps"] if with_scan_output else [])
    node = helper.make_node("Loop", ["trip_count", "", "acc0"], loop_outputs, name="loop", body=body)
    return make_model([node], [tensor_info("trip_count", TensorProto.INT64, []), tensor_info("acc0", shape=[3]),
                               tensor_info("x", shape=[3])], [tensor_info(o) for o in loop_outputs])


def test_loop_with_known_trip_count_is_unrolled(rng):
    model = _loop_model(with_scan_output=True)
    feeds = {"trip_count": np.array(4, np.int64), "acc0": random_array(rng, 3), "x": random_array(rng, 3)}
    assert_matches_onnxruntime(model, feeds, static=("trip_count",))
    _, weights = from_onnx(model)
    assert "loop/body/half" in weights


def test_loop_with_traced_trip_count_becomes_a_while_loop(rng):
    model = _loop_model(with_scan_output=False)
    feeds = {"trip_count": np.array(5, np.int64), "acc0": random_array(rng, 3), "x": random_array(rng, 3)}
    apply, weights = from_onnx(model)
    jaxpr = jax.make_jaxpr(apply)(weights, {**feeds, "trip_count": jax.numpy.asarray(5)})
    assert "while" in {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}
    assert_matches_onnxruntime(model, feeds)


def test_scan_op(rng):
    body = helper.make_graph(
        [helper.make_node("Add", ["sum_in", "row"], ["sum_out"]),
         helper.make_node("Mul", ["sum_out", "row"], ["scan_out"])],
        "body", [tensor_info("sum_in", shape=[4]), tensor_info("row", shape=[4])],
        [tensor_info("sum_out", shape=[4]), tensor_info("scan_out", shape=[4])])
    node = helper.make_node("Scan", ["init", "rows"], ["total", "products"], body=body, num_scan_inputs=1,
                            scan_input_directions=[1])
    model = make_model([node], [tensor_info("init", shape=[4]), tensor_info("rows", shape=[5, 4])],
                       [tensor_info("total"), tensor_info("products")])
    assert_matches_onnxruntime(model, {"init": random_array(rng, 4), "rows": random_array(rng, 5, 4)})


def test_traced_weight_in_a_shape_input_falls_back_to_the_model_value(rng):
    """Resize's scales are a float initializer, so a weight; traced, its model value decides the shape."""
    model = make_model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
                       [tensor_info("x", shape=[1, 1, 2, 3])], [tensor_info("y")],
                       [initializer("scales", np.array([1, 1, 2, 2], np.float32))])
    apply, weights = from_onnx(model)
    assert "scales" in weights
    y = jax.jit(apply)(weights, {"x": random_array(rng, 1, 1, 2, 3)})["y"]
    assert y.shape == (1, 1, 4, 6)


def test_errors_inside_ops_name_the_node():
    model = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="bad_reshape")],
                       [tensor_info("x", shape=[2, 3])], [tensor_info("y")],
                       [initializer("shape", np.array([4, 4], np.int64))])
    apply, weights = from_onnx(model)
    with pytest.raises(Exception) as raised:
        apply(weights, {"x": np.zeros((2, 3), np.float32)})
    assert any("bad_reshape" in note for note in getattr(raised.value, "__notes__", []))


def test_missing_and_unknown_inputs_are_reported():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [tensor_info("x", shape=[2])], [tensor_info("y")])
    apply, weights = from_onnx(model)
    with pytest.raises(KeyError, match="missing graph inputs"):
        apply(weights, {})
    with pytest.raises(KeyError, match="unknown graph inputs"):
        apply(weights, {"x": np.zeros(2, np.float32), "z": np.zeros(2, np.float32)})


def test_constant_attribute_kinds_are_weights_when_float():
    nodes = [helper.make_node("Constant", [], ["f"], value_float=1.5),
             helper.make_node("Constant", [], ["fs"], value_floats=[1.0, 2.0]),
             helper.make_node("Constant", [], ["i"], value_int=3),
             helper.make_node("Cast", ["i"], ["i_f"], to=FLOAT),
             helper.make_node("Mul", ["fs", "f"], ["m"]), helper.make_node("Add", ["m", "i_f"], ["y"])]
    model = make_model(nodes, [], [tensor_info("y")])
    apply, weights = from_onnx(model)
    assert sorted(weights) == ["f", "fs"]
    np.testing.assert_allclose(np.asarray(apply({"f": np.float32(2.0)}, {})["y"]), [5.0, 7.0])
