"""Lookup tables (Gather on axis 0): a step per row from how often the calibration inputs read it.

A word-embedding table is half of a BERT-like network's weights, yet a few hundred sentences read
about a thousand of its 30,000 rows, and [CLS], [SEP] and "the" are read in every sentence. The
output distortion of quantizing row r grows with how often the inputs read it, so the table's
measured sensitivity a_t (distortion per step^2 of the whole table) splits over its rows as
a_r = a_t * p_r, with p_r the chance that a token read is row r. The equal-slope rule of
`allocation` then gives each row its own step, step_r = sqrt(lmbda * n_r / (2 ln 2 * a_r)) (n_r the
row's entries), so that one lmbda means the same trade-off in every row of every tensor. Rows the
calibration never read get the probability mass that Good and Turing's estimate assigns to unseen
events (the share of rows read exactly once), spread evenly: inputs outside the calibration set read
them too, so they are coarser, not gone. Frequency-aware steps for embeddings follow the same idea as
mixed-dimension embeddings (Ginart et al., 2021), with steps instead of widths.

Rows whose steps snap to the same quarter-octave share a group; each group is coded with its own
step and table (bitstream mode 5, "grouped", format 1.3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import onnx

from nnlc import onnx_io, quantization
from nnlc.quantization import dequantize_rows  # noqa: F401 (the reconstruction, shared with the encoder)
from nnlc.bitstream.syntax import MAX_GROUPS
from nnlc.calibrated import allocation

LN2 = math.log(2.0)


def lookup_tables(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, str]:
    """{table: value name of its indices} for main-graph tensors read only by Gather on axis 0.

    `names`: initializer names of the main graph eligible for row steps; tables of fewer than two
    axes, read by any other node (a tied output projection, say), or read by a Gather inside a
    subgraph (an If branch: its indices cannot be tapped from the main graph) are left out.
    """
    wanted = set(names)
    main_nodes = {id(node) for node in model.graph.node}
    # readers in every graph: a subgraph reading the table by name makes it not a lookup table
    readers = {value: [node for node, _ in found] for value, found in onnx_io.consumers(model).items()
               if value in wanted}
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    tables = {}
    for name, nodes in readers.items():
        if len(shapes.get(name, ())) < 2:
            continue
        if all(node.op_type == "Gather" and node.input[0] == name and onnx_io.node_attribute(node, "axis", 0) == 0
               and id(node) in main_nodes for node in nodes):
            indices = {node.input[1] for node in nodes}
            if len(indices) == 1:
                tables[name] = indices.pop()
    return tables


def usage_counts(indices: Iterable[np.ndarray], rows: int) -> np.ndarray:
    """How often each of `rows` rows is read by the given index arrays (negative indices wrap)."""
    counts = np.zeros(rows, np.float64)
    for array in indices:
        flat = np.asarray(array, np.int64).ravel()
        flat = np.where(flat < 0, flat + rows, flat)
        flat = flat[(flat >= 0) & (flat < rows)]
        counts += np.bincount(flat, minlength=rows)
    return counts


def row_probabilities(counts: np.ndarray, prior: float = 1.0) -> np.ndarray:
    """p_r: each row's share of reads, with the Good-Turing unseen mass (singletons / reads, times
    `prior`) spread evenly over the rows never read. Sums to 1."""
    counts = np.asarray(counts, np.float64)
    rows, total = counts.size, float(counts.sum())
    if total <= 0:
        return np.full(rows, 1.0 / max(1, rows))
    unseen = counts == 0
    if not unseen.any():
        return counts / total
    singletons = float(np.sum(counts == 1))
    mass = min(0.5, prior * max(singletons, 1.0) / total)  # at least one read's worth, at most half
    seen_share = (1.0 - mass) * counts / total
    return np.where(unseen, mass / unseen.sum(), seen_share)


def row_steps(lmbda: float, sensitivity: float, row_size: int, probabilities: np.ndarray,
              max_step: float) -> np.ndarray:
    """Equal-slope step of every row: sqrt(lmbda * n_r / (2 ln 2 * a_t * p_r)), at most `max_step`."""
    sensitivities = sensitivity * np.maximum(np.asarray(probabilities, np.float64), 1e-300)
    steps = np.sqrt(lmbda * row_size / (2.0 * LN2 * sensitivities))
    return np.clip(steps, 1e-30, max_step)


def group_rows(steps: np.ndarray, snap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(float32 step of each group, group of each row): rows whose steps snap to the same qp share one.

    More than MAX_GROUPS distinct qps (a span of 64 octaves) merge neighbours on a coarser grid.
    Without `snap`, a group's step is the geometric mean of its rows' steps.
    """
    steps = np.asarray(steps, np.float64)
    qps = np.array([allocation.snap_to_qp(float(s))[0] for s in steps], np.int64)
    width = 1
    while len(np.unique(qps // width)) > MAX_GROUPS:
        width *= 2
    keys = qps // width
    unique, row_groups = np.unique(keys, return_inverse=True)
    group_steps = []
    for group, key in enumerate(unique):
        if snap:
            group_steps.append(quantization.step_from_qp(int(key * width)))
        else:
            group_steps.append(float(np.exp(np.mean(np.log(steps[row_groups == group])))))
    return np.asarray(group_steps, np.float32), row_groups.astype(np.int64)


def quantize_rows(array: np.ndarray, group_steps: np.ndarray,
                  row_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(integers, the float32 step of every group made usable for its rows) by rounding each group."""
    array = np.asarray(array, np.float32)
    flat = array.reshape(array.shape[0], -1)
    integers = np.zeros(flat.shape, np.int64)
    usable = np.asarray(group_steps, np.float32).copy()
    for group in range(len(usable)):
        members = row_groups == group
        if not members.any():
            continue
        usable[group] = quantization.usable_step(flat[members], float(usable[group]))
        integers[members] = quantization.quantize(flat[members], usable[group]).reshape(int(members.sum()), -1)
    return integers.reshape(array.shape), usable


def count_reads(tables: Mapping[str, str], feeds: list[Mapping[str, np.ndarray]], tapped, rows: Mapping[str, int]
                ) -> dict[str, np.ndarray]:
    """Usage counts of every table over `feeds`: indices taken from the feeds, or from `tapped(feed,
    names)` (a run returning the named values) when they are computed inside the graph."""
    counts = {name: np.zeros(rows[name]) for name in tables}
    computed = sorted({index for index in tables.values() if not feeds or index not in feeds[0]})
    for feed in feeds:
        values = dict(feed)
        if computed:
            values.update(zip(computed, tapped(feed, computed), strict=True))
        for name, index in tables.items():
            counts[name] += usage_counts([values[index]], rows[name])
    return counts
