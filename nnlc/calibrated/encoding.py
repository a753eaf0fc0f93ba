"""The calibrated stage's bitstream: the encoder's plan with a rate point's steps and integers in place
of the data-free ones, its estimated size, and the per-tensor report (sensitivity, qp, slope, share)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from nnlc import encoder
from nnlc.calibrated import allocation
from nnlc.calibrated.point import Point

PRODUCER = "nnlc 0.1 calibrated"


def planned(calibrator, point: Point) -> list[encoder.CodedTensor]:
    """The encoder's plan with the point's steps and integers in place of the data-free ones."""
    planned = []
    for item in calibrator.plan:
        name = item.record.name
        state = calibrator.tensors.get(name)
        if state is not None and state.status == "breaks when perturbed":
            item = encoder.CodedTensor(item.record, encoder.RAW, lossless_reason="breaks the model when perturbed")
        elif name in point.adjusted:
            item = encoder.CodedTensor(dataclasses.replace(item.record, array=point.adjusted[name]), encoder.RAW,
                                       lossless_reason="bias with its layer's correction")
        elif name in point.dependent:
            row_length, transposed = point.dependent[name]
            item = encoder.CodedTensor(item.record, encoder.DEPENDENT, np.float32(point.steps[name]),
                                       np.asarray(point.symbols[name], np.int64).ravel(), row_length=row_length,
                                       transposed=transposed)
        elif name in point.grouped:
            group_steps, row_groups = point.grouped[name]
            item = encoder.CodedTensor(item.record, encoder.GROUPED, symbols=np.asarray(point.symbols[name], np.int64)
                                       .ravel(), steps=group_steps, row_groups=row_groups)
        elif name in point.symbols:
            item = encoder.CodedTensor(item.record, encoder.QUANTIZED, np.float32(point.steps[name]),
                                       np.asarray(point.symbols[name], np.int64).ravel())
        planned.append(item)
    return planned


def estimated_bits(calibrator, symbols: Mapping[str, np.ndarray],
                   grouped: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> float:
    """Estimated size in bits of every tensor at these integers (others as the data-free plan);
    `grouped`: the lookup tables with a step per row (`Point.grouped`)."""
    total = 0.0
    grouped = grouped or {}
    for item in calibrator.plan:
        name = item.record.name
        if name in grouped:
            total += encoder.grouped_estimated_bits(encoder.CodedTensor(
                item.record, encoder.GROUPED, symbols=np.asarray(symbols[name]).ravel(), steps=grouped[name][0],
                row_groups=grouped[name][1]))
        elif name in symbols:
            total += optq_plan_bits(symbols[name])
        elif calibrator.tensors.get(name) is not None and calibrator.tensors[name].status == "breaks when perturbed":
            total += 8 * item.record.array.nbytes
        elif item.mode == encoder.RAW:
            total += 8 * item.record.array.nbytes
        else:
            item.coding_plan = item.coding_plan or _plan(item.symbols)
            total += item.coding_plan.estimated_bits
    return total


def encode(calibrator, point: Point, carry_topology: bool = True, progress=None) -> encoder.EncodeResult:
    """The bitstream of a rate point, with per-tensor report rows (sensitivity, qp, share of bits)."""
    producer = f"{PRODUCER} kind={calibrator.kind} method={calibrator.options.method} lmbda={point.lmbda:.6g}"
    result = encoder.write_bitstream(calibrator.model, calibrator.planned(point), carry_topology, producer, progress)
    total = max(1, sum(row["bytes"] for row in result.rows))
    for row in result.rows:
        state = calibrator.tensors.get(row["name"])
        row["share"] = row["bytes"] / total
        if state is not None:
            row["sensitivity"] = state.sensitivity
            row["calibration"] = state.status
            if row["name"] in point.steps:
                row["qp"] = allocation.snap_to_qp(point.steps[row["name"]])[0]
                row["slope"] = allocation.slope(point.steps[row["name"]], state.params, state.sensitivity)
    return result


def _plan(symbols: np.ndarray):
    from nnlc.coding import symbols as symbol_coding

    return symbol_coding.plan_coding(np.asarray(symbols, np.int64).ravel())


def optq_plan_bits(symbols: np.ndarray) -> float:
    """Estimated bits of integers under the coding plan nnlc would choose for them."""
    return _plan(symbols).estimated_bits
