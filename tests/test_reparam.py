"""Latent decoders (Oktay et al., ICLR 2020): init round trips, jax == numpy, STE gradients, plans."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnlc import onnx_io, quantization
from nnlc.reparam import (DEFAULT_CONFIG, Reparameterization, TensorPlan, bitstream_steps, dct_matrix, decode,
                          decode_numpy, forward_dct, init_decoder, plan_reparam, step_shape)

KERNEL_SHAPES = [(16, 8, 3, 3), (4, 3, 5, 2), (8, 4, 7), (3, 2, 1, 5), (6, 5, 7, 7), (10, 3, 11), (5, 1, 3, 3)]
MATRIX_SHAPES = [(24, 40), (12, 8, 3, 3), (2, 64, 6), (7,)]


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| over the tensor."""
    scale = float(np.max(np.abs(expected)))
    return float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale if scale else 0.0


def _weights(rng: np.random.Generator, shape, scale: float = 0.1) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _steps_of(params) -> np.ndarray:
    return np.asarray(bitstream_steps(params), dtype=np.float64)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 256])
def test_dct_matrix_is_orthonormal_dct_ii(size):
    matrix = dct_matrix(size)
    assert matrix.dtype == np.float64
    np.testing.assert_allclose(matrix @ matrix.T, np.eye(size), atol=1e-12)
    u, x = 1 % size, size - 1
    expected = np.sqrt(2.0 / size) * np.cos(np.pi * (2 * x + 1) * u / (2 * size)) if size > 1 else 1.0
    assert matrix[u, x] == pytest.approx(expected, abs=1e-14)
    assert np.all(matrix[0] == pytest.approx(np.sqrt(1.0 / size)))


@pytest.mark.parametrize("kind,shape", [("scalar", s) for s in MATRIX_SHAPES] + [("channel", s) for s in MATRIX_SHAPES])
@pytest.mark.parametrize("qp", [None, -38])
def test_linear_decoders_round_trip_within_half_a_step(kind, shape, qp):
    theta = _weights(np.random.default_rng(1), shape)
    if kind == "channel" and len(shape) > 1:
        theta *= np.geomspace(0.01, 10, shape[0]).reshape((-1,) + (1,) * (len(shape) - 1)).astype(np.float32)
    phi, params = init_decoder(kind, theta, qp=qp)
    assert phi.dtype == jnp.float32 and params["log_step"].shape == step_shape(kind, shape)
    step = _steps_of(params)
    if qp is not None:
        np.testing.assert_allclose(step, quantization.step_from_qp(qp), rtol=1e-6)
    step = step.reshape((-1,) + (1,) * (len(shape) - 1)) if kind == "channel" else step
    decoded = np.asarray(decode(kind, jnp.round(phi), params), dtype=np.float64)
    bound = step / 2 * (1 + 1e-6) + np.spacing(np.abs(theta)).astype(np.float64)
    assert np.all(np.abs(decoded - theta) <= bound)


@pytest.mark.parametrize("shape", KERNEL_SHAPES)
def test_dct_round_trip_keeps_coefficient_rounding_error(shape):
    theta = _weights(np.random.default_rng(2), shape)
    phi, params = init_decoder("dct", theta)
    step = _steps_of(params)
    assert step.shape == shape[2:] and np.all(step == step.flat[0])  # uniform start
    np.testing.assert_allclose(step.flat[0], np.std(theta.astype(np.float64)) / 2 ** DEFAULT_CONFIG["init_bits"], rtol=1e-5)
    decoded = np.asarray(decode("dct", jnp.round(phi), params), dtype=np.float64)
    axes = tuple(range(2, len(shape)))
    error_norm = np.sqrt(np.sum((decoded - theta) ** 2, axis=axes))
    coefficient_norm = np.sqrt(np.sum(((np.round(np.asarray(phi)) - np.asarray(phi)) * step) ** 2, axis=axes))
    np.testing.assert_allclose(error_norm, coefficient_norm, rtol=1e-3, atol=1e-7)
    assert np.all(error_norm <= step.flat[0] / 2 * np.sqrt(np.prod(shape[2:])) + 1e-7)


def test_fixed_decoder_returns_the_original_and_latents_stay_float32_exact():
    theta = np.array([np.inf, -0.0, 1e-30, 3.5], np.float32)
    phi, params = init_decoder("fixed", theta)
    assert phi is None and np.array_equal(np.asarray(decode("fixed", None, params)), theta)
    variance = np.abs(np.random.default_rng(3).standard_normal(64) * 1e5).astype(np.float32)
    phi, params = init_decoder("scalar", variance, qp=-75)  # qp -75 step would give |phi| ~ 1e11
    assert np.max(np.abs(np.round(np.asarray(phi)))) <= 2 ** 23
    assert np.max(np.abs(np.asarray(decode("scalar", jnp.round(phi), params)) - variance)) <= _steps_of(params)


@pytest.mark.parametrize("kind,shape", [("dct", s) for s in KERNEL_SHAPES + [(258, 1, 256)]]
                         + [("channel", s) for s in MATRIX_SHAPES[:3]] + [("scalar", s) for s in MATRIX_SHAPES])
def test_jax_and_numpy_decoders_agree(kind, shape):
    rng = np.random.default_rng(4)
    decode_jit = jax.jit(functools.partial(decode, kind))
    for _ in range(3):
        q = rng.integers(-2000, 2000, size=shape)
        params = {"log_step": jnp.asarray(rng.uniform(-9, 0, size=step_shape(kind, shape)), jnp.float32)}
        expected = decode_numpy(kind, q, bitstream_steps(params))
        actual = np.asarray(decode_jit(jnp.asarray(q, jnp.float32), params))
        assert expected.dtype == np.float32 and expected.shape == shape
        if kind == "dct":
            assert _relative_error(actual, expected) <= 1e-6
        else:  # one float32 product: bit-identical
            assert np.array_equal(actual, expected)


def test_numpy_dct_matches_float64_inverse_transform():
    rng = np.random.default_rng(5)
    for shape in KERNEL_SHAPES:
        q, steps = rng.integers(-99, 99, size=shape), np.exp(rng.uniform(-6, -2, shape[2:])).astype(np.float32)
        coefficients = q * steps.astype(np.float64)
        height = dct_matrix(shape[2])
        exact = (np.einsum("ux,oiu->oix", height, coefficients) if len(shape) == 3 else
                 np.einsum("ux,oiuv,vy->oixy", height, coefficients, dct_matrix(shape[3])))
        assert _relative_error(decode_numpy("dct", q, steps), exact) <= 1e-6
        np.testing.assert_allclose(forward_dct(exact), coefficients, atol=1e-12)


def test_reparam_numpy_decoders_match_standalone_decoder():
    latents = pytest.importorskip("nnlc.decoder.latents")
    codes = {"scalar": latents.SCALAR, "channel": latents.CHANNEL, "dct": latents.DCT}
    rng = np.random.default_rng(6)
    for kind, shape in [("dct", (8, 4, 3, 3)), ("dct", (6, 2, 5)), ("channel", (9, 20)), ("scalar", (3, 4, 5))]:
        q = rng.integers(-500, 500, size=shape)
        steps = np.exp(rng.uniform(-8, -1, step_shape(kind, shape))).astype(np.float32)
        assert np.array_equal(decode_numpy(kind, q, steps), latents.decode_latents(codes[kind], q, steps.ravel()))


def test_decode_numpy_rejects_bad_input():
    q = np.zeros((4, 3, 3, 3), np.int64)
    with pytest.raises(ValueError, match="steps"):
        decode_numpy("dct", q, np.ones(4, np.float32))
    with pytest.raises(ValueError, match="float32"):
        decode_numpy("scalar", q, np.ones((), np.float64))
    with pytest.raises(ValueError, match="integers"):
        decode_numpy("scalar", q.astype(np.float32), np.ones((), np.float32))
    with pytest.raises(ValueError, match="2\\*\\*23"):
        decode_numpy("scalar", q + (1 << 23) + 1, np.ones((), np.float32))
    with pytest.raises(ValueError, match="dct"):
        decode_numpy("dct", np.zeros((4, 4), np.int64), np.ones((4,), np.float32))
    with pytest.raises(ValueError, match="kind"):
        decode_numpy("fixed", q, np.ones((), np.float32))


@pytest.mark.parametrize("kind,shape", [("scalar", (6, 10)), ("channel", (6, 10)), ("channel", (4, 3, 3, 3)),
                                        ("dct", (4, 3, 3, 3)), ("dct", (4, 3, 5))])
def test_ste_gradient_is_the_decoders_linear_map(kind, shape):
    rng = np.random.default_rng(7)
    phi, params = init_decoder(kind, _weights(rng, shape))
    phi = phi + jnp.asarray(rng.uniform(-0.5, 0.5, shape), jnp.float32)  # off the integers
    direction = jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def projection(latent, decoder_params, rounding):
        plan = {"w": TensorPlan(kind, "w", "dense", shape)}
        return jnp.sum(Reparameterization.weights({"w": latent}, {"w": decoder_params}, plan, rounding)["w"] * direction)

    gradient = jax.jit(jax.grad(projection, argnums=(0, 1)), static_argnums=2)
    grad_ste, grad_log_step = gradient(phi, params, "ste")
    grad_none, _ = gradient(phi, params, "none")
    np.testing.assert_allclose(grad_ste, grad_none, rtol=1e-6, atol=1e-9)
    steps = np.asarray(bitstream_steps(params), dtype=np.float64)
    if kind == "dct":  # adjoint of the orthonormal inverse DCT, then the steps
        expected = forward_dct(np.asarray(direction)) * steps
    elif kind == "channel":
        expected = np.asarray(direction) * steps.reshape((-1,) + (1,) * (len(shape) - 1))
    else:  # scaled identity
        expected = np.asarray(direction) * steps
    np.testing.assert_allclose(grad_ste, expected, rtol=1e-5, atol=1e-9)
    assert np.all(np.isfinite(grad_log_step["log_step"])) and np.any(grad_log_step["log_step"] != 0)
    plan = {"w": TensorPlan(kind, "w", "dense", shape)}
    forward = jax.jit(lambda latent, p: Reparameterization.weights({"w": latent}, {"w": p}, plan)["w"])(phi, params)
    assert np.array_equal(np.asarray(forward), np.asarray(jax.jit(functools.partial(decode, kind))(jnp.round(phi), params)))


def _small_model() -> onnx.ModelProto:
    """Conv 3x3 (+bias) -> depthwise 3x3 -> 1x1 conv -> pool -> Gemm (+bias) -> Mul by a 0-d constant."""
    rng = np.random.default_rng(8)
    inits = [
        numpy_helper.from_array(_weights(rng, (32, 8, 3, 3)), "conv.weight"),
        numpy_helper.from_array(_weights(rng, (32,)), "conv.bias"),
        numpy_helper.from_array(_weights(rng, (32, 1, 3, 3)), "dw.weight"),
        numpy_helper.from_array(_weights(rng, (40, 32, 1, 1)), "pw.weight"),
        numpy_helper.from_array(_weights(rng, (20, 40)), "fc.weight"),
        numpy_helper.from_array(_weights(rng, (20,)), "fc.bias"),
        numpy_helper.from_array(np.array(0.5, np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c", "dw.weight"], ["d"], group=32, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["d", "pw.weight"], ["p"]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["z"], transB=1),
        helper.make_node("Mul", ["z", "scale"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "reparam_test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 20])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def _kinds(plan) -> dict[str, str]:
    return {name: tensor_plan.kind for name, tensor_plan in plan.items()}


def test_plan_picks_documented_decoders():
    records = onnx_io.find_float_tensors(_small_model())
    plan = plan_reparam(records)
    assert _kinds(plan) == {"conv.weight": "dct", "conv.bias": "scalar", "dw.weight": "dct", "pw.weight": "channel",
                            "fc.weight": "channel", "fc.bias": "scalar", "scale": "fixed"}
    assert plan["conv.bias"].step_qp == -75 and not plan["conv.bias"].trains_step and plan["conv.weight"].trains_step
    assert plan["scale"].group == "" and plan["conv.weight"].group == "conv.weight"
    sparse_steps = plan_reparam(records, {"min_channel_elements": 40})  # pw.weight has 32 per channel
    assert sparse_steps["pw.weight"].kind == "scalar" and "per channel" in sparse_steps["pw.weight"].reason
    assert sparse_steps["fc.weight"].kind == "channel"
    custom = plan_reparam(records, {"conv_decoder": "channel", "dense_decoder": "scalar", "bias_decoder": "fixed"})
    assert _kinds(custom) == {"conv.weight": "channel", "conv.bias": "fixed", "dw.weight": "scalar",  # 9 per channel
                              "pw.weight": "scalar", "fc.weight": "scalar", "fc.bias": "fixed", "scale": "fixed"}
    by_role = plan_reparam(records, {"share_entropy_model": "role"})
    assert by_role["conv.weight"].group == "conv_kernel/dct" and by_role["dw.weight"].group == "depthwise_kernel/dct"
    assert by_role["conv.bias"].group == by_role["fc.bias"].group == "bias/scalar"
    shared = plan_reparam(records, {"share_entropy_model": "global"})
    assert {shared[name].group for name in ("conv.weight", "dw.weight", "pw.weight", "fc.weight")} == {"global"}
    assert shared["conv.bias"].group == "bias/scalar"  # fixed fine steps: latents on another scale
    assert plan_reparam(records, {"lossless_names": ["fc\\..*"]})["fc.weight"].kind == "fixed"


def test_plan_covers_conv1d_and_rejects_unknown_config():
    ml_collections = pytest.importorskip("ml_collections")
    records = {"conv1d": onnx_io.TensorRecord("conv1d", "", "conv1d", 0, "conv_kernel", np.ones((8, 4, 5), np.float32)),
               "conv3d": onnx_io.TensorRecord("conv3d", "", "conv3d", 0, "conv_kernel", np.ones((8, 4, 3, 3, 3), np.float32)),
               "lstm.W": onnx_io.TensorRecord("lstm.W", "", "lstm.W", 0, "recurrent_w", np.ones((2, 64, 6), np.float32)),
               "lstm.B": onnx_io.TensorRecord("lstm.B", "", "lstm.B", 0, "recurrent_b", np.ones((2, 128), np.float32))}
    assert _kinds(plan_reparam(records, ml_collections.ConfigDict({"conv_decoder": "dct"}))) == {
        "conv1d": "dct", "conv3d": "channel", "lstm.W": "channel", "lstm.B": "scalar"}
    with pytest.raises(ValueError, match="unknown reparam config key"):
        plan_reparam(records, {"conv_decoders": "dct"})
    with pytest.raises(ValueError, match="expected one of"):
        plan_reparam(records, {"dense_decoder": "dct"})


def test_reparameterization_starts_at_the_original_and_jits():
    records = onnx_io.find_float_tensors(_small_model())
    latents, decoder_params, plan = Reparameterization.init(records, {"share_entropy_model": "role"})
    assert set(latents) == {name for name, tensor_plan in plan.items() if tensor_plan.kind != "fixed"}
    weights_fn = jax.jit(functools.partial(Reparameterization.weights, plan=plan))
    weights = weights_fn(latents, decoder_params)
    eager = Reparameterization.weights(latents, decoder_params, plan)
    steps = Reparameterization.bitstream_steps(decoder_params, plan)
    integers = Reparameterization.integer_latents(latents)
    for name, record in records.items():
        assert weights[name].dtype == jnp.float32 and weights[name].shape == record.array.shape
        assert _relative_error(np.asarray(weights[name]), np.asarray(eager[name])) <= 1e-6
        if plan[name].kind == "fixed":
            assert np.array_equal(np.asarray(weights[name]), record.array)
            continue
        tolerance = np.max(steps[name]) * (np.sqrt(9) if plan[name].kind == "dct" else 0.5 + 1e-6)
        assert np.max(np.abs(np.asarray(weights[name]) - record.array)) <= tolerance
        decoded = decode_numpy(plan[name].kind, integers[name], steps[name])
        assert _relative_error(np.asarray(weights[name]), decoded) <= 1e-6
    mask = Reparameterization.trainable_mask(decoder_params, plan)
    assert mask["conv.weight"] == {"log_step": True} and mask["conv.bias"] == {"log_step": False}
    assert mask["scale"] == {"value": False}

    def loss(latent_tree, params):
        return sum(jnp.sum(value ** 2) for value in weights_fn(latent_tree, params).values())

    grad_latents, grad_params = jax.jit(jax.grad(loss, argnums=(0, 1)))(latents, decoder_params)
    assert all(np.all(np.isfinite(value)) for value in jax.tree_util.tree_leaves((grad_latents, grad_params)))
    assert np.all(np.asarray(grad_params["conv.bias"]["log_step"]) == 0)  # fixed fine step: not trained
    assert np.any(np.asarray(grad_params["conv.weight"]["log_step"]) != 0)
    with pytest.raises(ValueError, match="rounding"):
        Reparameterization.weights(latents, decoder_params, plan, rounding="noise")


def test_numpy_decoders_import_without_jax():
    script = textwrap.dedent("""
        import sys
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('jax', 'jaxlib', 'flax', 'optax'):
                    raise ImportError(name + ' is blocked')
        sys.meta_path.insert(0, Blocker())
        import numpy as np
        from nnlc.reparam.numpy_decoders import decode_numpy
        from nnlc.reparam import groups
        print(decode_numpy('dct', np.ones((2, 2, 3, 3), np.int64), np.ones((3, 3), np.float32)).shape)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(2, 2, 3, 3)"
