"""Bias correction: the mean output shift of a quantized layer moved into its bias, for free.

A layer y = W x + b quantized to W' shifts its mean output by (W' - W) mu, mu = E[x] over the
calibration inputs; setting b' = b + (W - W') mu cancels that shift exactly (Nagel et al., "Data-Free
Quantization Through Weight Equalization and Bias Correction", ICCV 2019, sec. 4.2, with the measured
mean instead of the BatchNorm prior). The error left is that of the centred inputs, tr(dW C dW^T)
with C = E[x x^T] - mu mu^T, so OPTQ is run with C: it spends nothing on the mean direction, which
the bias takes care of. Applies to Conv (bias input), Gemm (a C of one value per output) and MatMul
followed by Add of a bias vector; the bias must itself be a coded float tensor of the main graph.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from nnlc import onnx_io
from nnlc.calibrated.layers import Layer


def layer_biases(model: onnx.ModelProto, layers: Mapping[str, Layer],
                 records: Mapping[str, onnx_io.TensorRecord]) -> dict[str, tuple[str, float]]:
    """{layer name: (bias tensor name, scale)}: the bias whose entry i adds scale * bias[i] to output i.

    Only main-graph layers without alternates, whose bias is a 1-D float tensor with one entry per
    output and read by nothing else."""
    readers = onnx_io.consumers(model)
    main_outputs = {output for node in model.graph.node for output in node.output if output}
    found: dict[str, tuple[str, float]] = {}
    for name, layer in layers.items():
        node = layer.node
        if (layer.alternates or not node.output or node.output[0] not in main_outputs or records.get(name) is None
                or records[name].graph_path):
            continue
        outputs = layer.groups * layer.rows
        bias, scale = None, 1.0
        if layer.kind == "conv" and len(node.input) > 2:
            bias = node.input[2]
        elif layer.kind == "gemm" and len(node.input) > 2 and not onnx_io.node_attribute(node, "transA", 0):
            beta = float(onnx_io.node_attribute(node, "beta", 1.0))
            if beta != 0:
                bias, scale = node.input[2], beta / float(onnx_io.node_attribute(node, "alpha", 1.0))
        elif layer.kind == "matmul":
            following = [reader for reader, _ in readers.get(node.output[0], [])]
            if len(following) == 1 and following[0].op_type == "Add":
                other = [value for value in following[0].input if value != node.output[0]]
                bias = other[0] if len(other) == 1 else None
        record = records.get(bias) if bias else None
        if (record is None or record.graph_path or record.array.dtype.kind != "f"
                or record.array.shape != (outputs,) or len(readers.get(bias, ())) != 1):
            continue
        found[name] = (bias, scale)
    return found


def centred(hessian: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """C = H - mu mu^T per group ([groups, columns, columns] and [groups, columns])."""
    mean = np.asarray(mean, np.float64)
    return np.asarray(hessian, np.float64) - mean[:, :, None] * mean[:, None, :]


def bias_shift(layer: Layer, original: np.ndarray, decoded: np.ndarray, mean: np.ndarray, scale: float) -> np.ndarray:
    """(W - W') mu per output, divided by the bias's scale: what to add to the bias (float64)."""
    delta = layer.to_matrices(original) - layer.to_matrices(decoded)  # [groups, rows, columns]
    shift = np.einsum("grc,gc->gr", delta, np.asarray(mean, np.float64))
    return shift.reshape(-1) / scale
