"""Dependent quantization: the trellis encoder (nnlc.calibrated.dependent), bitstream mode 6 (format 1.4)
and its reconstruction in the standalone decoder (nnlc.decoder.dependent)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnlc import encoder, onnx_io
from nnlc.calibrated import dependent, optq
from nnlc.calibrated.compress import CalibratedOptions, Calibrator
from nnlc.calibration.base import CalibrationSet
from nnlc.decoder import decode_bitstream, dependent as reconstruction, inspect_bitstream
from nnlc.errors import BitstreamError
from test_decoder_standalone import BLOCKER
from test_grouped_tensors import _with_body


def entropy_bits(integers: np.ndarray) -> float:
    _, counts = np.unique(integers, return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


def levels_by_hand(row: np.ndarray) -> list[int]:
    """The documented state machine, one integer at a time."""
    state, out = 0, []
    for k in row:
        out.append(2 * k - (int(np.sign(k)) if state >= 2 else 0))
        state = [[0, 2], [2, 0], [1, 3], [3, 1]][state][k & 1]
    return out


def test_reconstruction_follows_the_state_machine_along_each_row():
    integers = np.array([[1, -1, 2, 0, -3, 1], [0, 0, 1, 1, 1, -2]])
    expected = np.array([levels_by_hand(row) for row in integers], np.float32) * np.float32(0.25)
    assert np.array_equal(reconstruction.reconstruct(integers, np.float32(0.25), 6, False), expected)
    # transposed: the rows are the columns of the stored matrix
    assert np.array_equal(reconstruction.reconstruct(integers.T.copy(), np.float32(0.25), 6, True), expected.T)
    # rows of 3: the state restarts in the middle of each stored row
    halves = np.array([levels_by_hand(part) for part in integers.reshape(4, 3)], np.float32).reshape(2, 6) * 0.25
    assert np.array_equal(reconstruction.reconstruct(integers, np.float32(0.25), 3, False), halves)


def test_trellis_finds_the_least_squared_error_over_all_integer_sequences():
    rng = np.random.default_rng(4)
    weights = rng.normal(size=(1, 3, 5)) * 0.06  # |k| <= 4 holds the optimum
    step = 0.03
    found = dependent.quantize_layer(weights, step, None)
    grid = np.stack(np.meshgrid(*[np.arange(-4, 5)] * 5, indexing="ij"), axis=-1).reshape(-1, 5)  # 9**5 rows
    decoded = reconstruction.reconstruct(grid, np.float32(step), 5, False).astype(np.float64)
    for row in range(3):
        best = np.min(np.sum((decoded - weights[0, row]) ** 2, axis=1))
        mine = np.sum((dependent.reconstruct_matrices(found, np.float32(step))[0, row] - weights[0, row]) ** 2)
        assert mine == pytest.approx(best, rel=1e-5)


def test_trellis_beats_rounding_in_squared_error_at_equal_entropy():
    weights = np.random.default_rng(0).laplace(size=(1, 200, 300)) * 0.05
    integers = dependent.quantize_layer(weights, 0.013, None)
    decoded = dependent.reconstruct_matrices(integers, np.float32(0.013))
    assert np.array_equal(decoded[0], reconstruction.reconstruct(integers[0], np.float32(0.013), 300, False))
    error = float(np.mean((weights - decoded) ** 2))
    bits = entropy_bits(integers)
    # the rounding step with the same squared error (bisection), and its entropy
    low, high = 0.01, 0.04
    for _ in range(40):
        step = (low + high) / 2
        low, high = (step, high) if np.mean((weights - np.rint(weights / step) * step) ** 2) < error else (low, step)
    rounding_bits = entropy_bits(np.rint(weights / low))
    assert bits < rounding_bits - 0.07 * weights.size  # granular gain of the 4-state trellis: ~0.1 bit/weight


def test_trellis_with_a_hessian_lowers_the_layer_error_against_optq():
    rng = np.random.default_rng(1)
    mixing = rng.normal(size=(48, 48)) * 0.3 + np.eye(48)
    inputs = rng.normal(size=(4000, 48)) @ mixing  # correlated inputs
    hessian = (inputs.T @ inputs / len(inputs))[None]
    weights = rng.laplace(size=(1, 64, 48)) * 0.1
    step = 0.04
    optq_integers = optq.quantize_layer(weights, step, hessian, act_order=False)
    optq_error = optq.layer_error(weights, optq_integers * step, hessian)
    trellis = dependent.quantize_layer(weights, 0.65 * step, hessian)
    trellis_error = optq.layer_error(weights, dependent.reconstruct_matrices(trellis, np.float32(0.65 * step)), hessian)
    no_feedback = dependent.quantize_layer(weights, 0.65 * step, None)
    no_feedback_error = optq.layer_error(weights, dependent.reconstruct_matrices(no_feedback, np.float32(0.65 * step)),
                                         hessian)
    assert trellis_error < 0.8 * no_feedback_error  # the error feedback works along the survivors
    # at OPTQ's layer error (the coarsest trellis step that reaches it), fewer bits than OPTQ
    reached = []
    for factor in np.linspace(0.45, 0.65, 9):
        integers = dependent.quantize_layer(weights, factor * step, hessian)
        error = optq.layer_error(weights, dependent.reconstruct_matrices(integers, np.float32(factor * step)), hessian)
        if error <= optq_error:
            reached.append(entropy_bits(integers))
    assert reached and min(reached) < 0.985 * entropy_bits(optq_integers)  # measured: 2.6% fewer


def dense_model(seed: int = 0) -> onnx.ModelProto:
    """x [batch, 32] -> MatMul(W [32, 24]) -> Relu -> Gemm(V [10, 24], transB) -> y."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.normal(size=(32, 24)) / 6).astype(np.float32), "W"),
             numpy_helper.from_array((rng.normal(size=(10, 24)) / 5).astype(np.float32), "V")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "V"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def calibration(seed: int = 0) -> CalibrationSet:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(32, 32)) * 0.4 + np.eye(32)
    feeds = [{"x": (rng.normal(size=(16, 32)) @ mixing).astype(np.float32)} for _ in range(12)]
    return CalibrationSet(feeds[:9], feeds[9:], "correlated gaussian")


def test_calibrated_points_with_dependent_quantization_decode_exactly_and_as_version_1_4(tmp_path):
    model = dense_model()
    calibrator = Calibrator(model, calibration(), CalibratedOptions(kind="mse", quiet=True, dependent_quantization=True))
    point = calibrator.quantize(1e-4)
    assert point.dependent == {"W": (32, True), "V": (24, False)}  # MatMul [in, out]: rows are columns
    result = calibrator.encode(point)
    assert result.bitstream[4:6] == bytes((1, 4))
    decoded_model = decode_bitstream(result.bitstream)
    decoded = onnx_io.find_tensors(decoded_model)
    for name in ("W", "V"):
        assert np.array_equal(decoded[name].array, point.decoded(name, decoded[name].array.shape))
    modes = {row["name"]: row["mode"] for row in inspect_bitstream(result.bitstream)["tensors"]}
    assert modes["W"] == modes["V"] == "dependent"
    assert {row["name"]: row["mode"] for row in result.rows}["W"] == "dependent"
    assert point.start_steps().keys().isdisjoint(point.dependent)  # a trainer's step * k cannot hold them
    # the same calibration without the trellis is a 1.1 file; two runs give the same bytes
    again = Calibrator(model, calibration(), CalibratedOptions(kind="mse", quiet=True, dependent_quantization=True))
    assert again.encode(again.quantize(1e-4)).bitstream == result.bitstream
    plain = Calibrator(model, calibration(), CalibratedOptions(kind="mse", quiet=True))
    assert plain.encode(plain.quantize(1e-4)).bitstream[4:6] == bytes((1, 1))
    # the standalone decoder, in a process where importing jax raises
    bitstream, output = tmp_path / "d.nnlc", tmp_path / "d.onnx"
    bitstream.write_bytes(result.bitstream)
    script = BLOCKER + textwrap.dedent(f"""
        from nnlc.decoder.__main__ import main
        sys.exit(main([{str(bitstream)!r}, '-o', {str(output)!r}, '--quiet']))
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    standalone = onnx_io.find_tensors(onnx.load(str(output)))
    assert all(np.array_equal(standalone[name].array, decoded[name].array) for name in ("W", "V"))


def _dependent_body(step=0.25, transposed=0, row_length=6, values=np.zeros(12, np.int64)) -> bytes:
    from nnlc.bitstream.syntax import write_fields
    from nnlc.coding.symbols import encode_symbols
    return write_fields("tensor_dependent", {"step": step, "transposed": transposed, "row_length": row_length,
                                             "symbols": encode_symbols(np.asarray(values, np.int64))})


@pytest.mark.parametrize("body, message", [
    (dict(step=0.0), "invalid step"),
    (dict(step=float("nan")), "invalid step"),
    (dict(transposed=2), "transposed=2"),
    (dict(row_length=5), "row length 5"),
    (dict(row_length=0), "row length 0"),
    (dict(transposed=1, row_length=6), "row length 6"),
    (dict(values=np.full(12, 1 << 24)), "beyond 2\\*\\*23"),
])
def test_corrupt_dependent_bodies_are_bitstream_errors(body, message):
    table = np.zeros((2, 6), np.float32)
    graph = helper.make_graph([helper.make_node("Identity", ["t"], ["y"])], "one",
                              [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6])],
                              [numpy_helper.from_array(table, "t")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    record = onnx_io.find_tensors(model)["t"]
    item = encoder.CodedTensor(record, encoder.DEPENDENT, np.float32(0.25), np.zeros(12, np.int64), row_length=6)
    good = encoder.write_bitstream(model, [item]).bitstream
    assert np.array_equal(onnx_io.find_tensors(decode_bitstream(good))["t"].array, table)
    with pytest.raises(BitstreamError, match=message):
        decode_bitstream(_with_body(good, _dependent_body(**body)))
