"""Uniform scalar quantization with steps derived from one global quality parameter.

The step formula is NNR's (ISO/IEC 15938-17; NNCodec): step(qp) = (4 + (qp & 3)) * 2**((qp >> 2) - 2),
so qp -32 -> 2**-8 and every 4 qp halve the step, and nnlc's qp values mean what NNCodec's mean.
Tensors with ndim >= 2 use `qp`; 1-D tensors (biases, normalisation) use the finer `nonweight_qp`
(NNCodec's default -75). Reconstruction, the one float step of decoding: w_hat = float32(q) * step
computed in float32.
"""

from __future__ import annotations

import numpy as np

# float32 represents every integer of magnitude <= 2**24 exactly: keep |q| below it.
MAX_QUANTIZED_MAGNITUDE = 1 << 23


def step_from_qp(qp: int) -> float:
    """NNR step size for an integer quantization parameter."""
    qp = int(qp)
    return float((4 + (qp & 3)) * 2.0 ** ((qp >> 2) - 2))


def qp_from_step(step: float) -> int:
    """Largest integer qp whose step is <= `step` (inverse of `step_from_qp`, rounded down)."""
    qp = int(np.floor(4 * np.log2(step))) + 8
    while step_from_qp(qp) > step:
        qp -= 1
    while step_from_qp(qp + 1) <= step:
        qp += 1
    return qp


def usable_step(values: np.ndarray, step: float) -> np.float32:
    """The step as float32, enlarged where needed so that |q| stays <= MAX_QUANTIZED_MAGNITUDE."""
    largest = float(np.max(np.abs(values))) if values.size else 0.0
    step = max(float(step), largest / MAX_QUANTIZED_MAGNITUDE, np.finfo(np.float32).tiny)
    step32 = np.float32(step)
    if float(step32) < step:  # round the float32 step up, never below the requested one
        step32 = np.nextafter(step32, np.float32(np.inf))
    return step32


def round_to_int64(values: np.ndarray, what: str = "value") -> np.ndarray:
    """np.rint(values) as int64, refused with a ValueError where a value is not finite or its integer
    would exceed MAX_QUANTIZED_MAGNITUDE (NumPy's float-to-int cast is undefined out of range)."""
    values = np.asarray(values, dtype=np.float64)
    rounded = np.rint(values)
    if rounded.size:
        if not np.all(np.isfinite(rounded)):
            raise ValueError(f"a {what} is not finite (NaN or inf): it has no integer")
        largest = float(np.max(np.abs(rounded)))
        if largest > MAX_QUANTIZED_MAGNITUDE:
            raise ValueError(f"a {what} rounds to {largest:.6g}, beyond the bitstream's 2**23")
    return rounded.astype(np.int64)


def quantize(values: np.ndarray, step: np.float32) -> np.ndarray:
    """Nearest integers q with |values - dequantize(q, step)| <= step / 2 (int64); a step too fine for
    the values (|q| > 2**23, see `usable_step`) or a non-finite value is a ValueError."""
    return round_to_int64(np.asarray(values, dtype=np.float64) / float(step), "quantized weight")


def dequantize(symbols: np.ndarray, step: np.float32) -> np.ndarray:
    """The documented reconstruction: float32(q) * float32(step), in float32."""
    return np.asarray(symbols).astype(np.float32) * np.float32(step)


def group_row_steps(group_steps: np.ndarray, row_groups: np.ndarray, ndim: int = 1) -> np.ndarray:
    """The float32 step of every row along axis 0 (bitstream mode 5), shaped to broadcast over `ndim` axes."""
    steps = np.asarray(group_steps, np.float32)[np.asarray(row_groups, np.int64)]
    return steps.reshape((len(steps),) + (1,) * (ndim - 1))


def dequantize_rows(integers: np.ndarray, group_steps: np.ndarray, row_groups: np.ndarray) -> np.ndarray:
    """Mode 5's reconstruction: float32(q) * the step of the row's group, in float32."""
    integers = np.asarray(integers)
    return dequantize(integers, group_row_steps(group_steps, row_groups, integers.ndim))
