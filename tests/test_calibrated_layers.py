"""Layers for OPTQ inside If branches (nnlc.calibrated.layers): found, tapped and given the right H."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnlc.calibrated.layers import HessianAccumulator, find_layers
from nnlc.calibrated.runner import WeightFedSession

IN, HIDDEN, OUT = 6, 4, 3


def _constant(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def _lstm_cell_nodes(prefix: str, initial_h: str, initial_c: str) -> list[onnx.NodeProto]:
    """A PyTorch-LSTMCell-style export: W and R built from row slices of 2-D weights, then one LSTM step."""
    nodes = []
    for weight in ("w_ih", "w_hh"):
        for part, (start, end) in enumerate(((0, 2 * HIDDEN), (2 * HIDDEN, 4 * HIDDEN))):
            nodes += [_constant(f"{prefix}{weight}_s{part}", np.array([start], np.int64)),
                      _constant(f"{prefix}{weight}_e{part}", np.array([end], np.int64)),
                      _constant(f"{prefix}{weight}_a{part}", np.array([0], np.int64)),
                      helper.make_node("Slice", [weight, f"{prefix}{weight}_s{part}", f"{prefix}{weight}_e{part}",
                                                 f"{prefix}{weight}_a{part}"], [f"{prefix}{weight}_slice{part}"])]
        nodes += [helper.make_node("Concat", [f"{prefix}{weight}_slice0", f"{prefix}{weight}_slice1"],
                                   [f"{prefix}{weight}_rows"], axis=0),
                  _constant(f"{prefix}{weight}_axis", np.array([0], np.int64)),
                  helper.make_node("Unsqueeze", [f"{prefix}{weight}_rows", f"{prefix}{weight}_axis"],
                                   [f"{prefix}{weight}_3d"])]
    nodes += [_constant(f"{prefix}x_axis", np.array([0], np.int64)),
              helper.make_node("Unsqueeze", ["x", f"{prefix}x_axis"], [f"{prefix}x_seq"]),
              helper.make_node("LSTM", [f"{prefix}x_seq", f"{prefix}w_ih_3d", f"{prefix}w_hh_3d", "", "",
                                        initial_h, initial_c], [f"{prefix}y", f"{prefix}h", f"{prefix}c"],
                               hidden_size=HIDDEN),
              _constant(f"{prefix}h_axis", np.array([0], np.int64)),
              helper.make_node("Squeeze", [f"{prefix}h", f"{prefix}h_axis"], [f"{prefix}out"])]
    return nodes


def branched_model(seed: int = 0) -> onnx.ModelProto:
    """If(flag): then -> an LSTM cell inside a nested If(has_state) (with or without the given state),
    then a MatMul readout; else -> a MatMul. Every weight is a Constant inside the outer branches."""
    rng = np.random.default_rng(seed)
    w_ih = rng.standard_normal((4 * HIDDEN, IN)).astype(np.float32)
    w_hh = rng.standard_normal((4 * HIDDEN, HIDDEN)).astype(np.float32)
    readout = rng.standard_normal((HIDDEN, OUT)).astype(np.float32)
    other = rng.standard_normal((IN, OUT)).astype(np.float32)
    with_state = helper.make_graph(_lstm_cell_nodes("s_", "h0", "c0"), "with_state", [],
                                   [helper.make_tensor_value_info("s_out", TensorProto.FLOAT, None)])
    zero_state = helper.make_graph(_lstm_cell_nodes("z_", "", ""), "zero_state", [],
                                   [helper.make_tensor_value_info("z_out", TensorProto.FLOAT, None)])
    then_branch = helper.make_graph(
        [_constant("w_ih", w_ih), _constant("w_hh", w_hh), _constant("readout", readout),
         helper.make_node("If", ["has_state"], ["cell"], then_branch=with_state, else_branch=zero_state,
                          name="cell_if"),
         helper.make_node("MatMul", ["cell", "readout"], ["then_y"])],
        "then", [], [helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)])
    else_branch = helper.make_graph(
        [_constant("other", other), helper.make_node("MatMul", ["x", "other"], ["else_y"])],
        "else", [], [helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["y"], then_branch=then_branch, else_branch=else_branch, name="rate_if")],
        "branched",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, IN]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, None, HIDDEN]),
         helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, None, HIDDEN]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
         helper.make_tensor_value_info("has_state", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, OUT])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model


def _feeds(rng, flag: bool, has_state: bool, batch: int = 5) -> dict[str, np.ndarray]:
    return {"x": rng.standard_normal((batch, IN)).astype(np.float32),
            "h0": rng.standard_normal((1, batch, HIDDEN)).astype(np.float32),
            "c0": rng.standard_normal((1, batch, HIDDEN)).astype(np.float32),
            "flag": np.array(flag), "has_state": np.array(has_state)}


def _by_suffix(layers, suffix):
    (name,) = [name for name in layers if name.endswith("/" + suffix)]
    return layers[name]


def test_layers_are_found_in_nested_if_branches_through_row_slices():
    layers, _ = find_layers(branched_model())
    assert sorted(name.split("/")[-1] for name in layers) == ["other", "readout", "w_hh", "w_ih"]
    w_ih, w_hh = _by_suffix(layers, "w_ih"), _by_suffix(layers, "w_hh")
    assert (w_ih.kind, w_ih.rows, w_ih.columns, len(w_ih.alternates)) == ("lstm_w", 4 * HIDDEN, IN, 1)
    assert (w_hh.kind, w_hh.rows, w_hh.columns, len(w_hh.alternates)) == ("lstm_r", 4 * HIDDEN, HIDDEN, 1)
    assert _by_suffix(layers, "other").kind == "matmul"


@pytest.mark.parametrize("flag,has_state", [(True, True), (True, False), (False, True)])
def test_tapped_model_keeps_the_outputs_and_gives_each_layer_its_input_rows(flag, has_state):
    model = branched_model()
    layers, tapped = find_layers(model)
    taps = sorted({tap for layer in layers.values() for tap in layer.all_taps})
    session = WeightFedSession(tapped, list(layers), taps)
    rng = np.random.default_rng(1)
    feeds = [_feeds(rng, flag, has_state) for _ in range(3)]
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    hessians = {name: HessianAccumulator(layer) for name, layer in layers.items()}
    for feed in feeds:
        np.testing.assert_allclose(session.run(feed)[0], reference.run(None, feed)[0], rtol=1e-6, atol=1e-6)
        values = dict(zip(taps, session.run(feed, None, taps), strict=True))
        for accumulator in hessians.values():
            accumulator.add(values)
    x = np.concatenate([feed["x"] for feed in feeds]).astype(np.float64)
    h0 = np.concatenate([feed["h0"][0] for feed in feeds]).astype(np.float64)
    expected_x = x.T @ x / len(x)
    by_name = {name.split("/")[-1]: accumulator for name, accumulator in hessians.items()}
    if flag:
        np.testing.assert_allclose(by_name["w_ih"].mean()[0], expected_x, rtol=1e-5, atol=1e-6)
        expected_h = h0.T @ h0 / len(h0) if has_state else np.zeros((HIDDEN, HIDDEN))
        np.testing.assert_allclose(by_name["w_hh"].mean()[0], expected_h, rtol=1e-5, atol=1e-6)
        assert by_name["readout"].count == len(x) and by_name["other"].count == 0
    else:
        np.testing.assert_allclose(by_name["other"].mean()[0], expected_x, rtol=1e-5, atol=1e-6)
        assert by_name["w_ih"].count == 0 and by_name["readout"].count == 0
