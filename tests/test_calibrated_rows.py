"""Lookup tables with a step per row (nnlc.calibrated.rows) and their place in the calibrated stage."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnlc import onnx_io
from nnlc.calibrated import allocation, rows
from nnlc.calibrated.compress import CalibratedOptions, Calibrator
from nnlc.calibration.base import CalibrationSet
from nnlc.decoder import decode_bitstream

VOCAB, WIDTH, SEQ = 2000, 64, 12


def embedding_model(tied: bool = False) -> onnx.ModelProto:
    """ids [batch, seq] -> Gather(table) -> MatMul(W) -> mean over seq -> y [batch, 8]."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(VOCAB, WIDTH)).astype(np.float32)
    weight = rng.normal(size=(WIDTH, 8)).astype(np.float32) / 4
    nodes = [helper.make_node("Gather", ["table", "ids"], ["embedded"]),
             helper.make_node("MatMul", ["embedded", "W"], ["projected"]),
             helper.make_node("ReduceMean", ["projected"], ["y"], axes=[1], keepdims=0)]
    if tied:  # the table is also read densely: no row steps
        nodes.append(helper.make_node("MatMul", ["y", "W_t"], ["logits"]))
        nodes.append(helper.make_node("MatMul", ["logits", "table"], ["z"]))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8])]
    inits = [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "W")]
    if tied:
        inits.append(numpy_helper.from_array(rng.normal(size=(8, VOCAB)).astype(np.float32), "W_t"))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [None, WIDTH]))
    graph = helper.make_graph(nodes, "embedding", [helper.make_tensor_value_info("ids", TensorProto.INT64,
                                                                                 [None, SEQ])], outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def zipf_feeds(batches: int, seed: int) -> list[dict[str, np.ndarray]]:
    """Token ids drawn with p(r) ~ 1 / (r + 1): a few rows read often, most rarely or never."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, VOCAB + 1)
    p /= p.sum()
    return [{"ids": rng.choice(VOCAB, size=(8, SEQ), p=p).astype(np.int64)} for _ in range(batches)]


def calibration_set() -> CalibrationSet:
    return CalibrationSet(zipf_feeds(24, 1), zipf_feeds(12, 2), "zipf token ids")


def test_lookup_tables_are_gathers_on_axis_0_only():
    model = embedding_model()
    assert rows.lookup_tables(model, ["table", "W"]) == {"table": "ids"}
    assert rows.lookup_tables(embedding_model(tied=True), ["table", "W"]) == {}
    model.graph.node[0].attribute.append(helper.make_attribute("axis", 1))
    assert rows.lookup_tables(model, ["table"]) == {}


def branch_gather_model() -> onnx.ModelProto:
    """A main-graph table read by a Gather inside an If branch (the other branch reads nothing)."""
    table = np.random.default_rng(0).normal(size=(VOCAB, WIDTH)).astype(np.float32)
    then_branch = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["rows_then"])], "then", [],
                                    [helper.make_tensor_value_info("rows_then", TensorProto.FLOAT, None)])
    zero = numpy_helper.from_array(np.zeros((1, SEQ, WIDTH), np.float32), "zero_value")
    else_branch = helper.make_graph([helper.make_node("Constant", [], ["rows_else"], value=zero)], "else", [],
                                    [helper.make_tensor_value_info("rows_else", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("If", ["flag"], ["embedded"], then_branch=then_branch, else_branch=else_branch),
             helper.make_node("ReduceMean", ["embedded"], ["y"], axes=[1], keepdims=0)]
    graph = helper.make_graph(nodes, "branch_gather", [
        helper.make_tensor_value_info("ids", TensorProto.INT64, [None, SEQ]),
        helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, WIDTH])], [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_table_read_inside_a_branch_keeps_one_step():
    model = branch_gather_model()
    onnx.checker.check_model(model)
    assert rows.lookup_tables(model, ["table"]) == {}
    feeds = [{"ids": feed["ids"], "flag": np.array(True)} for feed in zipf_feeds(6, 3)]
    calibration = CalibrationSet(feeds[:4], feeds[4:], "zipf ids through an If")
    calibrator = Calibrator(model, calibration, CalibratedOptions(kind="mse", quiet=True))
    assert calibrator.lookup_tables == {}
    point = calibrator.quantize(1e-4)
    assert "table" in point.symbols and point.grouped == {}  # one step for the whole table, and it decodes
    decoded = onnx_io.find_float_tensors(decode_bitstream(calibrator.encode(point).bitstream))["table"].array
    np.testing.assert_array_equal(decoded, point.decoded("table", decoded.shape))


def test_usage_counts_and_good_turing_probabilities():
    counts = rows.usage_counts([np.array([[0, 1, 1, -1]]), np.array([2, 2, 2, 9])], rows=6)
    assert counts.tolist() == [1, 2, 3, 0, 0, 1]  # -1 wraps to row 5; 9 is outside and ignored
    p = rows.row_probabilities(counts)
    assert p.sum() == pytest.approx(1.0)
    unseen_mass = 2 / 7  # rows 0 and 5 were read once: Good-Turing's estimate of the unseen share
    assert p[3] == p[4] == pytest.approx(unseen_mass / 2)
    assert p[2] / p[1] == pytest.approx(1.5)
    assert np.array_equal(rows.row_probabilities(np.array([2.0, 6.0])), [0.25, 0.75])  # all rows seen


def test_row_steps_have_equal_slopes_and_snap_into_groups():
    probabilities = np.array([0.5, 0.3, 0.15, 0.05])
    lmbda, sensitivity, row_size = 1e-6, 3.0, 64
    steps = rows.row_steps(lmbda, sensitivity, row_size, probabilities, max_step=1.0)
    slopes = [allocation.slope(s, row_size, sensitivity * p) for s, p in zip(steps, probabilities, strict=True)]
    assert np.allclose(slopes, lmbda)
    capped = rows.row_steps(lmbda, sensitivity, row_size, probabilities, max_step=float(steps[1]))
    assert capped[2] == capped[3] == pytest.approx(steps[1]) and capped[0] == steps[0]
    group_steps, row_groups = rows.group_rows(np.array([0.1, 0.101, 0.4, 0.1, 1.6]))
    assert row_groups.tolist() == [0, 0, 1, 0, 2]
    assert all(math.log2(s / t) == pytest.approx(0.0, abs=0.13) for s, t in zip(group_steps, [0.1, 0.4, 1.6]))
    integers, usable = rows.quantize_rows(np.ones((5, 3)), group_steps, row_groups)
    assert np.allclose(rows.dequantize_rows(integers, usable, row_groups), 1.0, atol=float(usable.max()) / 2)


def test_calibrated_tables_get_row_steps_that_beat_one_step_at_equal_bytes():
    model, calibration = embedding_model(), calibration_set()
    with_rows = Calibrator(model, calibration, CalibratedOptions(quiet=True, kind="mse", method="allocation"))
    one_step = Calibrator(model, calibration, CalibratedOptions(quiet=True, kind="mse", method="allocation",
                                                                row_steps=False))
    state = with_rows.tensors["table"]
    assert state.rows_read == int(np.sum(rows.usage_counts([f["ids"] for f in calibration.optimise], VOCAB) > 0))
    assert state.row_probabilities is not None and one_step.tensors["table"].row_probabilities is None
    uniform = {lm: one_step.quantize(lm) for lm in np.geomspace(1e-7, 1e-3, 13)}
    grouped = {lm: with_rows.quantize(lm) for lm in np.geomspace(1e-8, 1e-3, 16)}
    point = grouped[sorted(grouped)[8]]
    assert "table" in point.grouped and len(point.grouped["table"][0]) > 1
    encoded = with_rows.encode(point)
    assert {row["name"]: row["mode"] for row in encoded.rows}["table"] == "grouped"
    assert encoded.bitstream[4:6] == bytes((1, 3))
    decoded = onnx_io.find_tensors(decode_bitstream(encoded.bitstream))["table"].array
    assert np.array_equal(decoded, point.decoded("table", decoded.shape))
    # distortion against bits: at the bits of every one-step point (where the model still works), the
    # row-step curve (interpolated in log-log) has a lower hold-out distortion
    curve = sorted((p.bits, p.fidelity["distortion"]) for p in grouped.values())
    bits, distortion = np.log([c[0] for c in curve]), np.log([c[1] for c in curve])
    compared = [p for p in uniform.values() if p.fidelity["distortion"] < 0.3 and bits[0] <= math.log(p.bits) <= bits[-1]]
    assert len(compared) >= 4
    for reference in compared:
        assert np.interp(math.log(reference.bits), bits, distortion) < math.log(reference.fidelity["distortion"]) - 0.3


def test_embedding_holdout_searches_neighbours_among_the_optimisation_samples_too():
    model, calibration = embedding_model(), calibration_set()
    calibrator = Calibrator(model, calibration, CalibratedOptions(quiet=True, kind="embedding", method="allocation"))
    metrics = calibrator.quantize(1e-5).fidelity
    assert metrics["neighbour_gallery"] == 8 * (len(calibration.holdout) + len(calibration.optimise))
    assert 0.0 <= metrics["neighbour_agreement"] <= 1.0 and "neighbour_agreement_holdout_only" in metrics
    alone = Calibrator(model, calibration, CalibratedOptions(quiet=True, kind="embedding", method="allocation",
                                                             neighbour_gallery=False))
    assert "neighbour_gallery" not in alone.quantize(1e-5).fidelity
