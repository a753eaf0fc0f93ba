"""Bias correction after OPTQ (nnlc.calibrated.bias) and its place in the calibrated stage."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import calibrated_models
from nnlc import onnx_io
from nnlc.calibrated import bias, optq
from nnlc.calibrated.compress import CalibratedOptions, Calibrator
from nnlc.calibrated.layers import Layer, find_layers
from nnlc.calibration import CalibrationOptions, load_calibration
from nnlc.decoder import decode_bitstream


def dense_model(gemm_alpha: float = 1.0, gemm_beta: float = 1.0, shared_bias: bool = False) -> onnx.ModelProto:
    """x [n, 6] -> Gemm(A, c) -> MatMul(B) + d -> y, and (shared_bias) a second Add reading d."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(5, 6)).astype(np.float32), "A"),
             numpy_helper.from_array(rng.normal(size=5).astype(np.float32), "c"),
             numpy_helper.from_array(rng.normal(size=(5, 4)).astype(np.float32), "B"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "d")]
    nodes = [helper.make_node("Gemm", ["x", "A", "c"], ["h"], transB=1, alpha=gemm_alpha, beta=gemm_beta),
             helper.make_node("MatMul", ["h", "B"], ["m"]), helper.make_node("Add", ["m", "d"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])]
    if shared_bias:
        nodes.append(helper.make_node("Add", ["y", "d"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, 4]))
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_biases_of_conv_gemm_and_matmul_add():
    model = calibrated_models.small_cnn()
    layers, _ = find_layers(model)
    found = bias.layer_biases(model, layers, onnx_io.find_tensors(model))
    assert found == {"conv1.weight": ("conv1.bias", 1.0), "conv2.weight": ("conv2.bias", 1.0),
                     "fc.weight": ("fc.bias", 1.0)}
    model = dense_model(gemm_alpha=2.0, gemm_beta=0.5)
    layers, _ = find_layers(model)
    assert bias.layer_biases(model, layers, onnx_io.find_tensors(model)) == {"A": ("c", 0.25), "B": ("d", 1.0)}
    model = dense_model(shared_bias=True)  # d is read twice: changing it would move z too
    layers, _ = find_layers(model)
    assert bias.layer_biases(model, layers, onnx_io.find_tensors(model)) == {"A": ("c", 1.0)}


def test_shift_cancels_the_mean_output_error_and_centred_is_the_covariance():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 12)) + rng.normal(size=12) * 3  # inputs far from zero mean
    weight = rng.normal(size=(7, 12))
    layer = Layer("w", "gemm", (7, 12), 1, 7, 12, ("x",), helper.make_node("Gemm", ["x", "w"], ["y"]), 0.0, False)
    hessian, mean = (x.T @ x / len(x))[None], x.mean(axis=0)[None]
    assert np.allclose(bias.centred(hessian, mean)[0], np.cov(x.T, bias=True))
    step = 0.4
    integers = optq.quantize_layer(layer.to_matrices(weight), step, bias.centred(hessian, mean))
    decoded = layer.from_matrices(integers * step)
    shift = bias.bias_shift(layer, weight, decoded, mean, 1.0)
    error = x @ decoded.T + shift - x @ weight.T
    assert np.abs(error.mean(axis=0)).max() < 1e-9
    # against OPTQ on the raw second moment without correction, the output error is smaller
    plain = layer.from_matrices(optq.quantize_layer(layer.to_matrices(weight), step, hessian) * step)
    assert np.mean(error ** 2) < np.mean((x @ plain.T - x @ weight.T) ** 2)


@pytest.fixture(scope="module")
def cnn_problem(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bias")
    model = calibrated_models.small_cnn()
    np.savez(folder / "inputs.npz", input=calibrated_models.correlated_images(160))
    return model, load_calibration(str(folder / "inputs.npz"), model, CalibrationOptions(samples=160))


def test_correction_lowers_holdout_distortion_and_is_what_the_bitstream_holds(cnn_problem):
    model, calibration = cnn_problem
    corrected = Calibrator(model, calibration, CalibratedOptions(quiet=True, bias_correction=True))
    plain = Calibrator(model, calibration, CalibratedOptions(quiet=True))
    assert set(corrected.biases) == {"conv1.weight", "conv2.weight", "fc.weight"} and not plain.biases
    lower = 0
    for lmbda in np.geomspace(3e-6, 3e-4, 5):
        with_correction, without = corrected.quantize(lmbda), plain.quantize(lmbda)
        assert with_correction.bits == pytest.approx(without.bits, rel=0.05)
        lower += with_correction.fidelity["mean_kl"] < without.fidelity["mean_kl"]
    assert lower == 5
    point = corrected.quantize(3e-5)
    encoded = corrected.encode(point)
    decoded = onnx_io.find_tensors(decode_bitstream(encoded.bitstream))
    for name in ("conv1.bias", "conv2.bias", "fc.bias"):  # the corrected biases, not the originals
        original = onnx_io.find_tensors(model)[name].array
        expected = point.adjusted[name] if name in point.adjusted else point.decoded(name, original.shape)
        assert np.allclose(decoded[name].array, expected, atol=1e-6)
        assert not np.allclose(decoded[name].array, original, atol=1e-6)
