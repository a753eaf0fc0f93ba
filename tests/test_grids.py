"""Already-quantized float tensors (int8 exported back to float) are detected and coded exactly."""

import time
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnlc import encoder, grids, quantization
from nnlc.decoder import decode_bitstream


def _int8(rng, shape, per_channel, zero_point):
    """TFLite-style int8 weights: q int8, scale float32 (per tensor or per output channel), zp."""
    weights = (rng.laplace(size=shape) * 0.05).astype(np.float32)
    axes = tuple(range(1, len(shape))) if per_channel else None
    low, high = weights.min(axis=axes, keepdims=per_channel), weights.max(axis=axes, keepdims=per_channel)
    if zero_point:  # asymmetric: [low, high] -> [-128, 127]
        scale = ((high - low) / np.float32(255)).astype(np.float32)
        zp = np.clip(np.rint(-128 - low / scale), -128, 127).astype(np.int32)
    else:
        scale = (np.maximum(-low, high) / np.float32(127)).astype(np.float32)
        zp = np.zeros_like(scale, dtype=np.int32)
    q = np.clip(np.rint(weights / scale) + zp, -128, 127).astype(np.int8)
    # dequantized as TFLite / onnxruntime do it: float32(q - zp) * scale, in float32
    return (q.astype(np.int32) - zp).astype(np.float32) * scale, q, np.asarray(scale).ravel()


WEIGHTS = {  # name: (shape, per_channel, zero_point)
    "conv1.weight": ((64, 16, 3, 3), True, False),
    "conv2.weight": ((64, 64, 3, 3), True, True),
    "fc1.weight": ((256, 64), False, False),
    "fc2.weight": ((10, 256), False, True),
}


def _quantized_model(seed=0):
    """Conv -> Relu -> Conv -> GlobalAveragePool -> Flatten -> Gemm -> Relu -> Gemm with int8-grid
    weights and float biases; returns the model and, per weight, (float values, int8 values, scales)."""
    rng = np.random.default_rng(seed)
    weights = {name: _int8(rng, shape, per_channel, zp) for name, (shape, per_channel, zp) in WEIGHTS.items()}
    inits = [numpy_helper.from_array(values, name) for name, (values, _, _) in weights.items()]
    for name, size in [("conv1.bias", 64), ("conv2.bias", 64), ("fc1.bias", 256), ("fc2.bias", 10)]:
        inits.append(numpy_helper.from_array((rng.standard_normal(size) * 0.1).astype(np.float32), name))
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r2"]),
        helper.make_node("Gemm", ["r2", "fc2.weight", "fc2.bias"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "int8_exported",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, weights


def _decoded(bitstream):
    return {init.name: numpy_helper.to_array(init) for init in decode_bitstream(bitstream).graph.initializer}


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture(scope="module")
def quantized():
    return _quantized_model()


@pytest.mark.parametrize("qp", [-50, -38, -16])
def test_int8_grids_are_detected_and_decode_bit_exact(quantized, qp):
    model, weights = quantized
    result = encoder.compress_model(model, qp=qp)
    rows = {row["name"]: row for row in result.rows}
    decoded = _decoded(result.bitstream)
    for name, (values, _, _) in weights.items():
        per_channel = WEIGHTS[name][1]
        assert rows[name]["grid"] == ("per-channel" if per_channel else "per-tensor")
        assert rows[name]["mode"] == ("latent" if per_channel else "quantized")
        assert rows[name]["mse"] == 0 and rows[name]["max_abs_error"] == 0
        assert _same_bits(decoded[name], values), name
    for name in ("conv1.bias", "fc1.bias"):  # trained-like floats: quantized as before
        assert "grid" not in rows[name] and rows[name]["mode"] == "quantized"
    planned = {item.record.name: item for item in encoder.plan_tensors(model, qp)}
    assert all(planned[name].exact for name in weights) and not planned["fc1.bias"].exact
    assert planned["conv2.weight"].latent_decoder == encoder.latents.CHANNEL


def test_grid_coding_does_not_depend_on_qp(quantized):
    model, weights = quantized
    fine, coarse = (encoder.compress_model(model, qp=qp) for qp in (-60, -10))
    fine_rows, coarse_rows = ({row["name"]: row["bytes"] for row in r.rows} for r in (fine, coarse))
    assert all(fine_rows[name] == coarse_rows[name] for name in weights)


def test_grid_is_smaller_than_requantizing_and_int8_zlib(quantized):
    model, weights = quantized
    exact = encoder.compress_model(model, qp=-38)
    # requantized with a step 1/16 of the finest int8 scale: nearly lossless, still not exact
    finest = min(float(np.min(scales)) for _, _, scales in weights.values())
    qp = quantization.qp_from_step(finest / 16)
    requantized = encoder.compress_model(model, qp=qp, detect_grids=False)
    requantized_rows = {row["name"]: row for row in requantized.rows}
    assert all("grid" not in row for row in requantized.rows)
    assert all(0 < requantized_rows[name]["mse"] for name in weights)
    assert exact.total_bytes < requantized.total_bytes
    exact_rows = {row["name"]: row for row in exact.rows}
    grid_bytes = sum(exact_rows[name]["bytes"] for name in weights)
    requantized_bytes = sum(requantized_rows[name]["bytes"] for name in weights)
    int8_zlib = sum(len(zlib.compress(q.tobytes(), 9)) + 4 * scales.size for _, q, scales in weights.values())
    params = sum(q.size for _, q, _ in weights.values())
    print(f"\n{params} int8-grid weights: grid-coded {grid_bytes} B ({8 * grid_bytes / params:.2f} bits/param), "
          f"requantized at qp {qp} {requantized_bytes} B ({8 * requantized_bytes / params:.2f}), "
          f"int8 + zlib {int8_zlib} B ({8 * int8_zlib / params:.2f}); whole file {exact.total_bytes} B "
          f"vs {requantized.total_bytes} B")
    assert grid_bytes < requantized_bytes
    assert grid_bytes < int8_zlib


def test_detection_can_be_turned_off(quantized):
    model, weights = quantized
    planned = encoder.plan_tensors(model, -38, detect_grids=False)
    assert not any(item.exact for item in planned)
    assert all(item.mode == encoder.QUANTIZED for item in planned if item.record.name in weights)
    by_target = encoder.compress_model(model, bits_per_param=7)  # the qp search keeps the grids too
    assert sum("grid" in row for row in by_target.rows) == len(weights)


@pytest.mark.parametrize("shape", [(1000,), (64, 64), (32, 16, 3, 3), (30, 1, 3, 3)])
def test_trained_like_tensors_are_not_detected(shape):
    rng = np.random.default_rng(1)
    assert grids.detect_grid((rng.standard_normal(shape) * 0.05).astype(np.float32)) is None
    assert grids.detect_grid(rng.laplace(size=shape).astype(np.float32)) is None


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("defect", ["ulp", "midpoint"])
def test_one_off_grid_value_is_not_detected(per_channel, defect):
    rng = np.random.default_rng(2)
    values, _, _ = _int8(rng, (32, 64), per_channel, zero_point=False)
    assert grids.detect_grid(values) is not None
    broken = values.copy()
    if defect == "ulp":
        broken[5, 7] = np.nextafter(broken[5, 7], np.float32(np.inf))
    else:
        broken[5, 7] = (broken[5, 7] + broken[5, 8]) / 2 + np.float32(1e-7)
    assert grids.detect_grid(broken) is None
    # and the encoder falls back to quantizing it
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [numpy_helper.from_array(broken, "w")]))
    row = encoder.compress_model(model, qp=-38).rows[0]
    assert "grid" not in row and row["mode"] == "quantized" and row["mse"] > 0


def test_grid_computed_another_way_is_used_only_when_exact():
    """float64 products rounded to float32, and q*s - z*s, need not be float32(k) * s in float32: any
    grid found must still reproduce them bit for bit."""
    rng = np.random.default_rng(3)
    q = rng.integers(-128, 128, size=(48, 40))
    scale, zero = 0.0123456789, 7
    candidates = [(((q - zero) * scale).astype(np.float32)),
                  (q.astype(np.float32) * np.float32(scale) - np.float32(zero) * np.float32(scale))]
    for values in candidates:
        grid = grids.detect_grid(values)
        if grid is not None:
            assert _same_bits(grid.reconstruct(), values)


def test_grids_of_other_shapes_and_types():
    rng = np.random.default_rng(4)
    ones = np.ones(64, np.float32)  # e.g. a LayerNorm scale: a grid with step 1
    grid = grids.detect_grid(ones)
    assert grid.kind == "per-tensor" and _same_bits(grid.reconstruct(), ones)
    sixteen_bit = rng.integers(-30000, 30000, size=5000).astype(np.float32) * np.float32(1.7e-5)
    grid = grids.detect_grid(sixteen_bit)
    assert grid is not None and _same_bits(grid.reconstruct(), sixteen_bit)
    assert grids.detect_grid(rng.integers(-60000, 60000, size=5000).astype(np.float32) * np.float32(3e-5)) is None
    half = (rng.integers(-100, 100, size=(16, 32)).astype(np.float32) * np.float32(0.01)).astype(np.float16)
    assert grids.detect_grid(half) is None  # float32 tensors only
    depthwise, _, _ = _int8(rng, (32, 1, 3, 3), per_channel=True, zero_point=True)
    grid = grids.detect_grid(depthwise)
    assert grid.kind == "per-channel" and _same_bits(grid.reconstruct(), depthwise)
    negative_zero = np.array([0.5, -0.0, 1.0, -1.5] * 8, np.float32)  # float32(0) * s is +0: not exact
    assert grids.detect_grid(negative_zero) is None
    assert grids.detect_grid(np.array([1.0, np.nan, 2.0] * 8, np.float32)) is None


def test_detection_of_a_large_trained_tensor_bails_out_early():
    rng = np.random.default_rng(5)
    values = (rng.standard_normal(1 << 20) * 0.05).astype(np.float32).reshape(1024, 1024)
    start = time.perf_counter()
    assert grids.detect_grid(values) is None
    print(f"\nno grid in 2**20 trained-like values: {1e3 * (time.perf_counter() - start):.1f} ms")
