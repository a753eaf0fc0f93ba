"""from_onnx: weight naming, partial weights, control flow, errors, and jit / grad / vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from onnx import TensorProto, helper

from nnlc.graph import TraceTimeValueError, UnsupportedOpsError, from_onnx
from nnlc.graph.testing import (FLOAT, assert_matches_onnxruntime, constant_node, initializer, make_model,
                                random_array, run_onnxruntime, tensor_info, tiny_attention_model)
from nnlc.onnx_io import find_float_tensors, replace_tensors


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1)


def _branch(name: str, rng, scale: float):
    """A subgraph whose weights live in Constant nodes: y = tanh(x @ w) * s."""
    nodes = [constant_node(f"w_{name}", random_array(rng, 4, 3)), constant_node(f"s_{name}", np.float32(scale)),
             helper.make_node("MatMul", ["x", f"w_{name}"], [f"m_{name}"]),
             helper.make_node("Tanh", [f"m_{name}"], [f"t_{name}"]),
             helper.make_node("Mul", [f"t_{name}", f"s_{name}"], [f"y_{name}"])]
    return helper.make_graph(nodes, name, [], [tensor_info(f"y_{name}", FLOAT, [2, 3])])


def if_model(rng, node_name: str = "choose"):
    node = helper.make_node("If", ["flag"], ["y"], name=node_name, then_branch=_branch("then", rng, 2.0),
                            else_branch=_branch("else", rng, -1.0))
    return make_model([node], [tensor_info("flag", TensorProto.BOOL, []), tensor_info("x", shape=[2, 4])],
                      [tensor_info("y", shape=[2, 3])])


def test_weights_inside_if_branches_are_named_like_the_codec(rng):
    model = if_model(rng)
    _, weights = from_onnx(model)
    assert list(weights) == list(find_float_tensors(model))
    assert "choose/then_branch/w_then" in weights and "choose/else_branch/s_else" in weights


def test_unnamed_if_node_prefix_uses_op_type_and_index(rng):
    _, weights = from_onnx(if_model(rng, node_name=""))
    assert "If_0/then_branch/w_then" in weights


@pytest.mark.parametrize("flag", [True, False])
@pytest.mark.parametrize("static_flag", [True, False])
def test_if_with_weights_in_constant_nodes(rng, flag, static_flag):
    model = if_model(rng)
    feeds = {"flag": np.array(flag), "x": random_array(rng, 2, 4)}
    assert_matches_onnxruntime(model, feeds, static=("flag",) if static_flag else ())


def test_changed_branch_weights_match_onnxruntime_on_the_changed_model(rng):
    model = if_model(rng)
    apply, weights = from_onnx(model)
    changed = {"choose/then_branch/w_then": weights["choose/then_branch/w_then"] * 0.5 + 0.1}
    feeds = {"flag": np.array(True), "x": random_array(rng, 2, 4)}
    expected = run_onnxruntime(replace_tensors(model, changed), feeds)["y"]
    np.testing.assert_allclose(np.asarray(jax.jit(apply)(changed, feeds)["y"]), expected, rtol=1e-5, atol=1e-6)


def test_missing_weights_fall_back_to_the_model(rng):
    model, feeds = tiny_attention_model(rng)
    apply, weights = from_onnx(model)
    full = apply(weights, feeds)["y"]
    partial = apply({"w_q": weights["w_q"]}, feeds)["y"]
    nothing = apply({}, feeds)["y"]
    np.testing.assert_allclose(np.asarray(partial), np.asarray(full), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nothing), np.asarray(full), rtol=1e-6)


def test_unknown_weight_names_are_rejected(rng):
    model, feeds = tiny_attention_model(rng)
    apply, _ = from_onnx(model)
    with pytest.raises(KeyError, match="no_such_weight"):
        apply({"no_such_weight": np.zeros(1)}, feeds)


def test_unsupported_ops_are_all_listed_before_tracing():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("MadeUpOp", ["a"], ["b"], name="first"),
             helper.make_node("Relu", ["b"], ["c"]),
             helper.make_node("OtherOp", ["c"], ["y"], name="second", domain="com.example")]
    model = make_model(nodes, [tensor_info("x", shape=[2])], [tensor_info("y")])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(UnsupportedOpsError) as raised:
        from_onnx(model)
    assert isinstance(raised.value, ValueError)
    assert [(op, name) for op, _, _, name in raised.value.nodes] == [("MadeUpOp", "first"), ("OtherOp", "second")]
    assert "MadeUpOp" in str(raised.value) and "opset 17" in str(raised.value) and "'second'" in str(raised.value)


def test_shape_arithmetic_never_reaches_the_traced_program(rng):
    model, feeds = tiny_attention_model(rng)
    apply, weights = from_onnx(model)
    jaxpr = jax.make_jaxpr(apply)(weights, feeds)
    primitives = {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}
    assert "concatenate" not in primitives and "gather" not in primitives
    assert "dot_general" in primitives


def test_integer_numpy_inputs_are_known_at_trace_time(rng):
    model = make_model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
                       [tensor_info("x", shape=[2, 6]), tensor_info("shape", TensorProto.INT64, [2])],
                       [tensor_info("y")])
    apply, weights = from_onnx(model)
    x = random_array(rng, 2, 6)
    shape = np.array([3, -1], np.int64)
    assert jax.jit(lambda w, x: apply(w, {"x": x, "shape": shape}))(weights, x)["y"].shape == (3, 4)
    with pytest.raises(TraceTimeValueError, match="Reshape"):
        jax.jit(apply)(weights, {"x": x, "shape": shape})


def test_pow_of_negative_base_with_traced_exponent_is_finite(rng):
    """Silero squares with Pow(x, 2.0) where 2.0 is a weight: traced, it must not give NaN."""
    model = make_model([helper.make_node("Pow", ["x", "two"], ["y"])], [tensor_info("x", shape=[5])],
                       [tensor_info("y")], [initializer("two", np.array(2.0, np.float32))])
    apply, weights = from_onnx(model)
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0], np.float32)
    np.testing.assert_allclose(np.asarray(apply(weights, {"x": x})["y"]), x ** 2)
    grads = jax.grad(lambda w: apply(w, {"x": x})["y"].sum())(weights)
    assert np.isfinite(np.asarray(grads["two"]))


def _double_model(rng):
    """A tiny float64 network for finite-difference checks."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1]),
             helper.make_node("Tanh", ["c"], ["t"]),
             helper.make_node("Flatten", ["t"], ["f"]),
             helper.make_node("MatMul", ["f", "dense"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["y"], axis=-1)]
    weights = [initializer("w", rng.standard_normal((2, 1, 3))), initializer("b", rng.standard_normal(2)),
               initializer("dense", rng.standard_normal((8, 3)) * 0.5)]
    double = TensorProto.DOUBLE
    return make_model(nodes, [tensor_info("x", double, [1, 1, 4])], [tensor_info("y", double)], weights)


def test_grad_matches_finite_differences(rng):
    model = _double_model(rng)
    x = rng.standard_normal((1, 1, 4))
    with jax.enable_x64(True):
        apply, weights = from_onnx(model)

        def loss(w):
            return jnp.sum(apply(w, {"x": x})["y"] * jnp.arange(3.0))

        grads = jax.jit(jax.grad(loss))(weights)
        direction = {k: rng.standard_normal(v.shape) for k, v in weights.items()}
        step = 1e-6
        plus = loss({k: weights[k] + step * direction[k] for k in weights})
        minus = loss({k: weights[k] - step * direction[k] for k in weights})
        numeric = (plus - minus) / (2 * step)
        analytic = sum(jnp.vdot(grads[k], direction[k]) for k in weights)
        np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6, atol=1e-9)


def test_grad_through_dynamic_if_and_recurrent_layers_is_finite(rng):
    model = if_model(rng)
    apply, weights = from_onnx(model)
    x = random_array(rng, 2, 4)
    grads = jax.jit(jax.grad(lambda w, flag: apply(w, {"flag": flag, "x": x})["y"].sum()))(weights, np.array(True))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads.values())
    assert np.any(np.asarray(grads["choose/then_branch/w_then"]) != 0)
    assert not np.any(np.asarray(grads["choose/else_branch/w_else"]))


def test_vmap_over_inputs_and_over_weights(rng):
    model, _ = tiny_attention_model(rng)
    apply, weights = from_onnx(model)
    xs = random_array(rng, 3, 1, 4, 8)
    batched = jax.jit(jax.vmap(lambda x: apply(weights, {"x": x})["y"]))(xs)
    single = jax.jit(lambda x: apply(weights, {"x": x})["y"])
    one_by_one = np.stack([np.asarray(single(x)) for x in xs])
    np.testing.assert_allclose(np.asarray(batched), one_by_one, rtol=1e-5, atol=1e-6)
    ensemble = {k: np.stack([v, v * 0.9]) for k, v in weights.items() if v.ndim == 2}
    outputs = jax.jit(jax.vmap(lambda w: apply(w, {"x": xs[0]})["y"]))(ensemble)
    np.testing.assert_allclose(np.asarray(outputs[0]), np.asarray(single(xs[0])),
                               rtol=1e-5, atol=1e-6)
