"""Bitstream mode 5 ("grouped", format 1.3): rows in groups, each with its own step and table."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnlc import encoder, onnx_io
from nnlc.bitstream.container import UnitType, read_container, write_container
from nnlc.bitstream.syntax import MAX_GROUPS, read_exact, write_fields
from nnlc.coding.symbols import encode_symbols
from nnlc.decoder import decode_bitstream, inspect_bitstream
from nnlc.errors import BitstreamError
from test_decoder_standalone import BLOCKER


def table_model(rows: int = 60, width: int = 8, seed: int = 0) -> tuple[onnx.ModelProto, np.ndarray]:
    """Gather(table, ids) -> y, with a float32 table [rows, width]."""
    table = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["y"])], "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, width])],
        [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), table


def grouped_item(model: onnx.ModelProto, table: np.ndarray, steps=(0.01, 0.1, 0.7)) -> encoder.CodedTensor:
    record = onnx_io.find_tensors(model)["table"]
    steps = np.asarray(steps, np.float32)
    row_groups = np.arange(table.shape[0]) % len(steps)
    integers = np.rint(table / steps[row_groups][:, None]).astype(np.int64)
    return encoder.CodedTensor(record, encoder.GROUPED, symbols=integers.ravel(), steps=steps, row_groups=row_groups)


def test_round_trip_is_the_documented_reconstruction_and_version_1_3():
    model, table = table_model()
    item = grouped_item(model, table)
    result = encoder.write_bitstream(model, [item])
    assert result.bitstream[4:6] == bytes((1, 3))
    decoded = onnx_io.find_tensors(decode_bitstream(result.bitstream))["table"].array
    expected = item.symbols.reshape(table.shape).astype(np.float32) * item.steps[item.row_groups][:, None]
    assert np.array_equal(decoded, expected)
    row = result.rows[0]
    assert row["mode"] == "grouped" and row["groups"] == 3
    assert row["mse"] == pytest.approx(float(np.mean((expected - table).astype(np.float64) ** 2)))
    assert inspect_bitstream(result.bitstream)["tensors"][0]["mode"] == "grouped"
    as_quantized = onnx_io.find_tensors(decode_bitstream(result.bitstream, quantized=True))["table"].array
    assert np.array_equal(as_quantized, expected)  # --quantized keeps a grouped tensor float
    estimate = encoder.estimated_bits([item])
    payload_bits = 8 * row["payload_bytes"]
    assert abs(payload_bits - row["ideal_payload_bits"]) < 0.02 * payload_bits + 64
    assert estimate == pytest.approx(8 * row["bytes"], rel=0.15)


def test_coarse_groups_cost_less_than_one_fine_step():
    model, table = table_model(rows=400, width=16)
    fine = np.float32(0.01)
    uniform = encoder.CodedTensor(onnx_io.find_tensors(model)["table"], encoder.QUANTIZED, fine,
                                  np.rint(table / fine).astype(np.int64).ravel())
    item = grouped_item(model, table, steps=(0.01, 0.5, 1.0, 2.0))
    assert encoder.write_bitstream(model, [item]).rows[0]["bytes"] < 0.5 * encoder.write_bitstream(
        model, [uniform]).rows[0]["bytes"]


def test_empty_groups_and_a_single_group_decode():
    model, table = table_model(rows=5)
    record = onnx_io.find_tensors(model)["table"]
    steps = np.asarray([0.1, 0.2, 0.3], np.float32)
    row_groups = np.array([2, 2, 0, 2, 0])  # group 1 has no row
    integers = np.rint(table / steps[row_groups][:, None]).astype(np.int64)
    item = encoder.CodedTensor(record, encoder.GROUPED, symbols=integers.ravel(), steps=steps, row_groups=row_groups)
    decoded = onnx_io.find_tensors(decode_bitstream(encoder.write_bitstream(model, [item]).bitstream))["table"].array
    assert np.array_equal(decoded, integers.astype(np.float32) * steps[row_groups][:, None])
    with pytest.raises(ValueError, match="row groups"):
        encoder.write_bitstream(model, [encoder.CodedTensor(record, encoder.GROUPED, symbols=integers.ravel(),
                                                            steps=steps, row_groups=np.array([0, 1, 3, 0, 0]))])


def _with_body(bitstream: bytes, body: bytes) -> bytes:
    units = read_container(bitstream)
    rebuilt = []
    for unit in units:
        payload = bytes(unit.payload)
        if unit.type == UnitType.TENSOR:
            fields = read_exact("tensor", payload)
            fields["body"] = body
            payload = write_fields("tensor", fields)
        rebuilt.append((unit.type, payload))
    return write_container(rebuilt)


def _body(steps, row_groups, groups) -> bytes:
    return write_fields("tensor_grouped", {"steps": np.asarray(steps, "<f4").tobytes(),
                                           "row_groups": encode_symbols(np.asarray(row_groups)),
                                           "groups": [encode_symbols(np.asarray(g)) for g in groups]})


@pytest.mark.parametrize("case, message", [
    ("no_steps", "group steps"),
    ("odd_step_bytes", "group steps"),
    ("negative_step", "invalid group steps"),
    ("nan_step", "invalid group steps"),
    ("fewer_groups", "groups coded"),
    ("row_group_outside", "row group outside"),
    ("short_group", "remain"),
    ("huge_value", "beyond 2\\*\\*23"),
])
def test_corrupt_bodies_are_bitstream_errors(case, message):
    model, table = table_model(rows=4, width=2)
    result = encoder.write_bitstream(model, [grouped_item(model, table, steps=(0.1, 0.2))])
    rows_of = {0: 2, 1: 2}
    good_groups = [np.zeros(rows_of[g] * 2, np.int64) for g in range(2)]
    bodies = {
        "no_steps": _body([], [0, 1, 0, 1], good_groups),
        "odd_step_bytes": write_fields("tensor_grouped", {"steps": b"\x00\x00\x80\x3f\x00", "row_groups":
                                       encode_symbols(np.array([0, 1, 0, 1])), "groups": [
                                       encode_symbols(g) for g in good_groups]}),
        "negative_step": _body([0.1, -0.2], [0, 1, 0, 1], good_groups),
        "nan_step": _body([0.1, np.nan], [0, 1, 0, 1], good_groups),
        "fewer_groups": _body([0.1, 0.2], [0, 1, 0, 1], good_groups[:1]),
        "row_group_outside": _body([0.1, 0.2], [0, 2, 0, 1], good_groups),
        "short_group": _body([0.1, 0.2], [0, 1, 0, 1], [np.array([3, -7, 100, 2, 9, -40]), good_groups[1]])[:-3],
        "huge_value": _body([0.1, 0.2], [0, 1, 0, 1], [np.full(4, 1 << 24), good_groups[1]]),
    }
    corrupt = _with_body(result.bitstream, bodies[case])
    with pytest.raises(BitstreamError, match=message):
        decode_bitstream(corrupt)


def test_group_count_is_limited_by_the_syntax():
    with pytest.raises(ValueError, match="format limit"):
        write_fields("tensor_grouped", {"steps": np.ones(MAX_GROUPS + 1, "<f4").tobytes(),
                                        "row_groups": encode_symbols(np.zeros(3, np.int64)),
                                        "groups": [encode_symbols(np.zeros(1, np.int64))] * (MAX_GROUPS + 1)})


def test_standalone_decoder_reads_grouped_tensors_without_jax(tmp_path):
    model, table = table_model()
    item = grouped_item(model, table)
    bitstream, output = tmp_path / "t.nnlc", tmp_path / "t.onnx"
    bitstream.write_bytes(encoder.write_bitstream(model, [item]).bitstream)
    script = BLOCKER + textwrap.dedent(f"""
        from nnlc.decoder.__main__ import main
        sys.exit(main([{str(bitstream)!r}, '-o', {str(output)!r}, '--quiet']))
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    decoded = onnx_io.find_tensors(onnx.load(str(output)))["table"].array
    assert np.array_equal(decoded, item.symbols.reshape(table.shape).astype(np.float32)
                          * item.steps[item.row_groups][:, None])
