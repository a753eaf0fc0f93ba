"""Ops of nnlc.graph on small hand-built ONNX models, compared with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from nnlc.graph.testing import (FLOAT, assert_matches_onnxruntime, initializer, make_model, random_array, run_jax,
                                tensor_info, tiny_attention_model)

INT64 = TensorProto.INT64


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_conv_batchnorm_gemm_matches_onnxruntime(rng):
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], epsilon=1e-3),
        helper.make_node("Relu", ["n"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], transB=1, alpha=0.5, beta=2.0),
    ]
    weights = [
        initializer("w", random_array(rng, 8, 3, 3, 3)), initializer("b", random_array(rng, 8)),
        initializer("scale", random_array(rng, 8)), initializer("shift", random_array(rng, 8)),
        initializer("mean", random_array(rng, 8)), initializer("var", rng.uniform(0.5, 2, 8).astype(np.float32)),
        initializer("fc_w", random_array(rng, 5, 8)), initializer("fc_b", random_array(rng, 5)),
    ]
    model = make_model(nodes, [tensor_info("x", shape=[2, 3, 9, 9])], [tensor_info("y")], weights)
    assert_matches_onnxruntime(model, {"x": random_array(rng, 2, 3, 9, 9)})


@pytest.mark.parametrize("attrs", [
    dict(group=6, pads=[1, 2, 1, 0], strides=[1, 2]),
    dict(group=6, dilations=[2, 2], pads=[2, 1, 2, 2]),
    dict(group=6, auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(group=3, auto_pad="SAME_LOWER", strides=[2, 2]),
    dict(group=6, auto_pad="VALID"),
])
def test_depthwise_and_grouped_conv(rng, attrs):
    channels_per_group = 6 // attrs["group"]
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], **attrs)],
                       [tensor_info("x", shape=[1, 6, 8, 7])], [tensor_info("y")],
                       [initializer("w", random_array(rng, 6, channels_per_group, 3, 3))])
    assert_matches_onnxruntime(model, {"x": random_array(rng, 1, 6, 8, 7)})


def test_conv1d_and_conv_transpose(rng):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[2, 2]),
             helper.make_node("ConvTranspose", ["c", "wt", "bt"], ["y"], strides=[2], pads=[1, 0],
                              output_padding=[1], group=2)]
    model = make_model(nodes, [tensor_info("x", shape=[2, 4, 10])], [tensor_info("y")],
                       [initializer("w", random_array(rng, 4, 4, 5)), initializer("wt", random_array(rng, 4, 3, 3)),
                        initializer("bt", random_array(rng, 6))])
    assert_matches_onnxruntime(model, {"x": random_array(rng, 2, 4, 10)})


def test_pooling(rng):
    nodes = [helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[3, 2], pads=[1, 1, 1, 0],
                              count_include_pad=0),
             helper.make_node("AveragePool", ["x"], ["i"], kernel_shape=[2, 2], pads=[1, 1, 1, 1],
                              count_include_pad=1, strides=[2, 2])]
    model = make_model(nodes, [tensor_info("x", shape=[1, 2, 7, 6])],
                       [tensor_info("m"), tensor_info("a"), tensor_info("i")])
    assert_matches_onnxruntime(model, {"x": random_array(rng, 1, 2, 7, 6)})


def _recurrent_model(op_type: str, rng, gates: int, hidden: int = 4, inputs: int = 3, batch: int = 2,
                     steps: int = 5, with_lengths: bool = False, **attrs):
    directions = 2
    names = ["x", "w", "r", "b", "lengths" if with_lengths else "", "h0"] + (["c0"] if op_type == "LSTM" else [])
    outputs = ["y", "y_h"] + (["y_c"] if op_type == "LSTM" else [])
    node = helper.make_node(op_type, names, outputs, hidden_size=hidden, direction="bidirectional", **attrs)
    weights = [initializer("w", random_array(rng, directions, gates * hidden, inputs, scale=0.5)),
               initializer("r", random_array(rng, directions, gates * hidden, hidden, scale=0.5)),
               initializer("b", random_array(rng, directions, 2 * gates * hidden, scale=0.5))]
    graph_inputs = [tensor_info("x", shape=[steps, batch, inputs]),
                    tensor_info("h0", shape=[directions, batch, hidden])]
    feeds = {"x": random_array(rng, steps, batch, inputs), "h0": random_array(rng, directions, batch, hidden)}
    if op_type == "LSTM":
        graph_inputs.append(tensor_info("c0", shape=[directions, batch, hidden]))
        feeds["c0"] = random_array(rng, directions, batch, hidden)
    if with_lengths:
        graph_inputs.append(tensor_info("lengths", TensorProto.INT32, [batch]))
        feeds["lengths"] = np.array([steps, steps - 2], np.int32)[:batch]
    model = make_model([node], graph_inputs, [tensor_info(o) for o in outputs], weights)
    return model, feeds


def test_lstm_bidirectional_with_initial_states(rng):
    model, feeds = _recurrent_model("LSTM", rng, gates=4)
    assert_matches_onnxruntime(model, feeds)


def test_lstm_with_sequence_lengths(rng):
    model, feeds = _recurrent_model("LSTM", rng, gates=4, with_lengths=True)
    assert_matches_onnxruntime(model, feeds)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_bidirectional_with_initial_state(rng, linear_before_reset):
    model, feeds = _recurrent_model("GRU", rng, gates=3, linear_before_reset=linear_before_reset)
    assert_matches_onnxruntime(model, feeds)


def test_rnn_bidirectional(rng):
    model, feeds = _recurrent_model("RNN", rng, gates=1)
    assert_matches_onnxruntime(model, feeds)


def test_tiny_attention_block(rng):
    model, feeds = tiny_attention_model(rng)
    assert_matches_onnxruntime(model, feeds)


@pytest.mark.parametrize("opset", [11, 13])
def test_axes_as_attribute_or_input(rng, opset):
    """Split/Squeeze/Unsqueeze/ReduceSum take axes as attributes before opset 13 and inputs after."""
    if opset < 13:
        nodes = [helper.make_node("Split", ["x"], ["s0", "s1"], axis=1, split=[1, 2]),
                 helper.make_node("Unsqueeze", ["s0"], ["u"], axes=[0]),
                 helper.make_node("Squeeze", ["u"], ["q"], axes=[0, 2]),
                 helper.make_node("ReduceSum", ["s1"], ["r"], axes=[1], keepdims=0),
                 helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1])]
        extra = []
    else:
        nodes = [helper.make_node("Split", ["x", "sizes"], ["s0", "s1"], axis=1),
                 helper.make_node("Unsqueeze", ["s0", "axes0"], ["u"]),
                 helper.make_node("Squeeze", ["u", "axes02"], ["q"]),
                 helper.make_node("ReduceSum", ["s1", "axes1"], ["r"], keepdims=0),
                 helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1])]
        extra = [initializer("sizes", np.array([1, 2], np.int64)), initializer("axes0", np.array([0], np.int64)),
                 initializer("axes02", np.array([0, 2], np.int64)), initializer("axes1", np.array([1], np.int64))]
    model = make_model(nodes, [tensor_info("x", shape=[2, 3, 4])],
                       [tensor_info("q"), tensor_info("r"), tensor_info("m")], extra, opset=opset)
    assert_matches_onnxruntime(model, {"x": random_array(rng, 2, 3, 4)})


@pytest.mark.parametrize("opset", [6, 12])
def test_clip_bounds_as_attributes_or_inputs(rng, opset):
    if opset < 11:
        nodes, extra = [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.7)], []
    else:
        nodes = [helper.make_node("Clip", ["x", "low", "high"], ["y"]),
                 helper.make_node("Clip", ["x", "", "high"], ["z"])]
        extra = [initializer("low", np.array(-0.5, np.float32)), initializer("high", np.array(0.7, np.float32))]
    outputs = [tensor_info("y")] + ([tensor_info("z")] if opset >= 11 else [])
    model = make_model(nodes, [tensor_info("x", shape=[3, 4])], outputs, extra, opset=opset)
    assert_matches_onnxruntime(model, {"x": random_array(rng, 3, 4)})


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_modes(rng, mode):
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["y"], mode=mode)]
    extra = [initializer("pads", np.array([0, 2, 1, 0, 1, -1], np.int64)),
             initializer("value", np.array(1.5, np.float32))]
    model = make_model(nodes, [tensor_info("x", shape=[2, 4, 5])], [tensor_info("y")], extra)
    assert_matches_onnxruntime(model, {"x": random_array(rng, 2, 4, 5)})


def test_slice_with_negative_steps_and_clamping(rng):
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])]
    extra = [initializer("starts", np.array([-1, 1], np.int64)),
             initializer("ends", np.array([-1000, np.iinfo(np.int64).max], np.int64)),
             initializer("axes", np.array([0, 2], np.int64)), initializer("steps", np.array([-2, 2], np.int64))]
    model = make_model(nodes, [tensor_info("x", shape=[5, 3, 6])], [tensor_info("y")], extra)
    assert_matches_onnxruntime(model, {"x": random_array(rng, 5, 3, 6)})


@pytest.mark.parametrize("attrs", [
    dict(mode="nearest"), dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="linear"), dict(mode="linear", coordinate_transformation_mode="align_corners"),
    dict(mode="cubic"), dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
])
def test_resize_modes(rng, attrs):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["up"], **attrs),
             helper.make_node("Resize", ["x", "", "", "sizes"], ["down"], **attrs)]
    extra = [initializer("scales", np.array([1, 1, 2, 1.5], np.float32)),
             initializer("sizes", np.array([1, 2, 3, 5], np.int64))]
    model = make_model(nodes, [tensor_info("x", shape=[1, 2, 5, 6])], [tensor_info("up"), tensor_info("down")], extra)
    assert_matches_onnxruntime(model, {"x": random_array(rng, 1, 2, 5, 6)})


def test_elementwise_and_logic_ops(rng):
    names = ["Relu", "Sigmoid", "Tanh", "Exp", "Abs", "Neg", "Erf", "HardSwish", "Softplus", "IsNaN"]
    nodes = [helper.make_node(op, ["x"], [f"y_{op}"]) for op in names]
    nodes += [helper.make_node("LeakyRelu", ["x"], ["y_leaky"], alpha=0.2),
              helper.make_node("HardSigmoid", ["x"], ["y_hs"], alpha=0.3, beta=0.4),
              helper.make_node("Gelu", ["x"], ["y_gelu"]),
              helper.make_node("Pow", ["x", "two"], ["y_pow"]),
              helper.make_node("Greater", ["x", "zero"], ["gt"]), helper.make_node("Less", ["x", "zero"], ["lt"]),
              helper.make_node("Or", ["gt", "lt"], ["either"]), helper.make_node("Not", ["either"], ["neither"]),
              helper.make_node("Where", ["gt", "x", "zero"], ["y_where"]),
              helper.make_node("Max", ["x", "zero"], ["y_max"]), helper.make_node("Min", ["x", "zero"], ["y_min"]),
              helper.make_node("Cast", ["gt"], ["y_cast"], to=TensorProto.FLOAT),
              helper.make_node("LogSoftmax", ["x"], ["y_lsm"], axis=1)]
    outputs = [f"y_{op}" for op in names] + ["y_leaky", "y_hs", "y_gelu", "y_pow", "neither", "y_where", "y_max",
                                            "y_min", "y_cast", "y_lsm"]
    types = {"neither": TensorProto.BOOL, "y_IsNaN": TensorProto.BOOL}
    model = make_model(nodes, [tensor_info("x", shape=[3, 5])], [tensor_info(o, types.get(o, FLOAT)) for o in outputs],
                       [initializer("two", np.array(2.0, np.float32)), initializer("zero", np.array(0.0, np.float32))],
                       opset=20)
    assert_matches_onnxruntime(model, {"x": random_array(rng, 3, 5)})


def test_shape_ops_fold_into_constants(rng):
    """Shape -> Gather -> ConstantOfShape -> Range -> Expand/Tile chains run with numpy at trace time."""
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["cols"], axis=0),
             helper.make_node("Range", ["zero", "cols", "one"], ["positions"]),
             helper.make_node("Cast", ["positions"], ["positions_f"], to=TensorProto.FLOAT),
             helper.make_node("Expand", ["positions_f", "shape"], ["grid"]),
             helper.make_node("ConstantOfShape", ["shape"], ["ones"], value=helper.make_tensor("v", FLOAT, [1], [1.0])),
             helper.make_node("Tile", ["x", "reps"], ["tiled"]),
             helper.make_node("Add", ["grid", "ones"], ["g1"]),
             helper.make_node("Mul", ["x", "g1"], ["y"])]
    extra = [initializer("zero", np.array(0, np.int64)), initializer("one", np.array(1, np.int64)),
             initializer("reps", np.array([2, 1], np.int64))]
    model = make_model(nodes, [tensor_info("x", shape=[3, 4])], [tensor_info("y"), tensor_info("tiled")], extra)
    assert_matches_onnxruntime(model, {"x": random_array(rng, 3, 4)})


def test_uniform_constant_kernels_then_a_reduction(rng):
    """Kernels whose elements are all equal (e.g. from ConstantOfShape) stay exact under jit: XLA's
    CPU YNNPACK fusion in jax 0.10.2 returns NaN for sum(x @ constant_splat) (docs/graph.md)."""
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=helper.make_tensor("v", FLOAT, [1], [0.02])),
             helper.make_node("ConstantOfShape", ["k_shape"], ["k"], value=helper.make_tensor("v", FLOAT, [1], [0.5])),
             helper.make_node("MatMul", ["x", "w"], ["m"]),
             helper.make_node("ReduceSum", ["m", "axis0"], ["y"], keepdims=0),
             helper.make_node("Conv", ["image", "k"], ["c"], pads=[1, 1, 1, 1], strides=[2, 1], group=2),
             helper.make_node("GlobalAveragePool", ["c"], ["z"])]
    extra = [initializer("w_shape", np.array([512, 1000], np.int64)), initializer("axis0", np.array([0], np.int64)),
             initializer("k_shape", np.array([6, 2, 3, 3], np.int64))]
    model = make_model(nodes, [tensor_info("x", shape=[169, 512]), tensor_info("image", shape=[1, 4, 9, 8])],
                       [tensor_info("y"), tensor_info("z")], extra)
    assert_matches_onnxruntime(model, {"x": rng.uniform(0, 1, (169, 512)).astype(np.float32),
                                       "image": random_array(rng, 1, 4, 9, 8)}, rtol=1e-4)


@pytest.mark.parametrize("attrs, out_channels, kernel", [
    (dict(group=4, strides=[2, 1], pads=[1, 0, 1, 2]), 8, [3, 2]),   # depthwise, channel multiplier 2
    (dict(group=1, strides=[2, 2], pads=[1, 1, 0, 0]), 5, [1, 1]),   # pointwise with stride and pads
    (dict(group=4, dilations=[2, 1], pads=[2, 1, 2, 1]), 4, [3, 3]),  # dilated depthwise
])
def test_depthwise_and_pointwise_fast_paths(rng, attrs, out_channels, kernel):
    in_per_group = 4 // attrs["group"]
    model = make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)],
                       [tensor_info("x", shape=[2, 4, 7, 6])], [tensor_info("y")],
                       [initializer("w", random_array(rng, out_channels, in_per_group, *kernel)),
                        initializer("b", random_array(rng, out_channels))])
    assert_matches_onnxruntime(model, {"x": random_array(rng, 2, 4, 7, 6)})


# Float -> integer Cast: ONNX's spec leaves out-of-range values undefined ("fixed point: undefined if
# OOR"); nnlc truncates toward zero and saturates (NaN -> 0) on every machine, for traced inputs and
# for trace-time (numpy) constants alike. Expected values are written out by hand.
INF, NAN = float("inf"), float("nan")
FLOAT_TO_INTEGER_CASES = [
    # target, opset (2-bit types need 25), inputs, expected outputs
    (TensorProto.INT4, 21, [0, 2.5, -2.5, 7, 7.9, -8, -8.9, 8, -9, 100, 1e10, INF, -INF, NAN],
     [0, 2, -2, 7, 7, -8, -8, 7, -8, 7, 7, 7, -8, 0]),
    (TensorProto.UINT4, 21, [0, 2.5, -0.9, 15, 15.9, 16, -1, 100, INF, -INF, NAN],
     [0, 2, 0, 15, 15, 15, 0, 15, 15, 0, 0]),
    (TensorProto.INT2, 25, [0, 1.5, -1.5, 1, -2, 1.9, -2.9, 2, -3, INF, -INF, NAN],
     [0, 1, -1, 1, -2, 1, -2, 1, -2, 1, -2, 0]),
    (TensorProto.UINT2, 25, [0, 1.5, 3, 3.9, 4, -1, -0.5, INF, -INF, NAN],
     [0, 1, 3, 3, 3, 0, 0, 3, 0, 0]),
    (TensorProto.INT8, 21, [0, 126.9, -128.9, 127, -128, 128, -129, 1e10, INF, -INF, NAN],
     [0, 126, -128, 127, -128, 127, -128, 127, 127, -128, 0]),
    (TensorProto.UINT8, 21, [0, 254.9, -0.9, 255, 256, -1, INF, -INF, NAN],
     [0, 254, 0, 255, 255, 0, 255, 0, 0]),
    (TensorProto.INT32, 21, [-7.5, 3e9, -3e9, INF, -INF, NAN],
     [-7, 2147483647, -2147483648, 2147483647, -2147483648, 0]),
]


def _cast_model(to: int, opset: int, size: int, source: int = FLOAT, like: bool = False):
    if like:
        node = helper.make_node("CastLike", ["x", "like"], ["y"])
        inputs = [tensor_info("x", source, [size]), tensor_info("like", to, [1])]
    else:
        node = helper.make_node("Cast", ["x"], ["y"], to=to)
        inputs = [tensor_info("x", source, [size])]
    return make_model([node], inputs, [tensor_info("y", to, [size])], opset=opset)


@pytest.mark.parametrize("static", [False, True], ids=["traced", "numpy-constant"])
@pytest.mark.parametrize("to, opset, inputs, expected", FLOAT_TO_INTEGER_CASES,
                         ids=[TensorProto.DataType.Name(case[0]) for case in FLOAT_TO_INTEGER_CASES])
def test_float_to_integer_cast_truncates_and_saturates(to, opset, inputs, expected, static):
    x = np.array(inputs, np.float32)
    y = run_jax(_cast_model(to, opset, x.size), {"x": x}, static=("x",) if static else ())["y"]
    assert y.dtype == helper.tensor_dtype_to_np_dtype(to)
    assert y.astype(np.int64).tolist() == expected


@pytest.mark.parametrize("static", [False, True], ids=["traced", "numpy-constant"])
def test_float16_castlike_to_int4_and_uint4(static):
    x = np.array([0, 7.9, -8.9, 15.9, 16, 65504, -65504, INF, -INF, NAN], np.float16)
    for to, expected in [(TensorProto.INT4, [0, 7, -8, 7, 7, 7, -8, 7, -8, 0]),
                         (TensorProto.UINT4, [0, 7, 0, 15, 15, 15, 0, 15, 0, 0])]:
        like = np.zeros(1, helper.tensor_dtype_to_np_dtype(to))
        model = _cast_model(to, 21, x.size, source=TensorProto.FLOAT16, like=True)
        y = run_jax(model, {"x": x, "like": like}, static=("x", "like") if static else ())["y"]
        assert y.dtype == like.dtype
        assert y.astype(np.int64).tolist() == expected, TensorProto.DataType.Name(to)
