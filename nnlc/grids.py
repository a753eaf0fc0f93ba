"""Detection of already-quantized float tensors: values that lie exactly on a uniform grid.

A model quantized to int8 and exported back to float (TFLite, onnxruntime's DequantizeLinear:
w = float32(q - zero_point) * scale, per tensor or per output channel) holds float tensors whose
values are integer multiples of one step, or of one step per output channel. Coding those integers
with the step(s) is lossless and smaller than re-quantizing. `detect_grid` finds such a grid and
accepts it only when the decoder's own reconstruction reproduces every value bit for bit:

- per tensor: `w = float32(k) * step` (bitstream mode 1, `quantization.dequantize`);
- per channel: `w[o, ...] = float32(k[o, ...]) * step[o]` (mode 3, latent decoder 2 on axis 0,
  `decoder.latents.decode_latents`).

A grid computed another way (in float64 and then rounded, or as q * s - z * s) may miss these
products in the last bit; such tensors are simply not detected and are coded as usual.

How a step is found, for each group of values (the tensor's distinct values, or one channel):
1. d = the smallest gap between the sorted distinct values with 0 included: a multiple m * s of the
   step s. A group whose largest magnitude is 2**15 (`MAX_GRID_INDEX`) times d or more is rejected
   at once; this is what makes trained float tensors (almost every value distinct, gaps of a few
   ulps) fail in a few hundred microseconds on a sample.
2. For m = 1, 2, ...: s = d / m; indices of the values near 0 (where the error of d cannot move
   them by 1/8) must be near-integers; a least-squares step from them gives every index; all
   values / step must then be integers within 2**-6; the least-squares step of all of them, rounded
   to float32 and its neighbours (+-2 ulps), is verified exactly.
Trained tensors are rejected on a deterministic sample (4096 values, and up to 32 channels of up to
1024 values each) before the whole tensor is looked at.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nnlc import quantization
from nnlc.decoder import latents

MAX_GRID_INDEX = 1 << 15  # |k| must stay below this
MAX_MULTIPLE = 64  # the smallest gap may be up to this many steps
MIN_CHANNEL_ELEMENTS = 4  # per-channel grids need at least this many values per channel
SAMPLE_VALUES = 4096
SAMPLE_CHANNELS = 32
SAMPLE_CHANNEL_VALUES = 1024
_LOOSE = 0.25  # near-integer tolerance of the first (coarse) indices
_TIGHT = 2.0 ** -6  # near-integer tolerance of all indices under the refined step
_ULP_NEIGHBOURS = (0, 1, -1, 2, -2)
PER_TENSOR, PER_CHANNEL = "per-tensor", "per-channel"


@dataclasses.dataclass(frozen=True)
class Grid:
    """Exact grid of a tensor: `reconstruct()` equals the tensor bit for bit."""

    kind: str  # PER_TENSOR or PER_CHANNEL (axis 0)
    steps: np.ndarray  # float32: shape () per tensor, (shape[0],) per channel
    indices: np.ndarray  # int64, the tensor's shape

    @property
    def step(self) -> np.float32:
        """The per-tensor step (ValueError for a per-channel grid)."""
        if self.kind != PER_TENSOR:
            raise ValueError("a per-channel grid has one step per output channel")
        return np.float32(self.steps)

    def reconstruct(self) -> np.ndarray:
        """The decoder's float32 reconstruction."""
        if self.kind == PER_TENSOR:
            return quantization.dequantize(self.indices, self.step)
        return latents.decode_latents(latents.CHANNEL, self.indices, self.steps)


def detect_grid(array: np.ndarray, max_index: int = MAX_GRID_INDEX) -> Grid | None:
    """An exact per-tensor grid, else an exact per-output-channel grid (axis 0), else None.

    Only float32 tensors of rank >= 1 with finite values qualify (float16 values are roundings of the
    float32 products, so indices beyond a few hundred are ambiguous); the grid's reconstruction must
    equal `array` bit for bit, and every index must satisfy |k| < max_index.
    """
    array = np.asarray(array)
    if array.dtype != np.float32 or array.ndim < 1 or array.size < 2:
        return None
    flat = array.reshape(-1)
    if not np.all(np.isfinite(flat[_sample_positions(flat.size, SAMPLE_VALUES)])):
        return None
    grid = _per_tensor(array, max_index)
    channels = array.shape[0] if array.ndim >= 2 else 1
    if grid is None and channels >= 2 and array.size // channels >= MIN_CHANNEL_ELEMENTS:
        grid = _per_channel(array, max_index)
    return grid


def _sample_positions(size: int, count: int) -> np.ndarray:
    """Evenly spread positions (deterministic): all of them when size <= count."""
    if size <= count:
        return np.arange(size)
    return (np.arange(count, dtype=np.int64) * size) // count


def _per_tensor(array: np.ndarray, max_index: int) -> Grid | None:
    flat = array.reshape(-1)
    sample = flat[_sample_positions(flat.size, SAMPLE_VALUES)]
    if flat.size > SAMPLE_VALUES and _group_steps(np.unique(sample.astype(np.float64))[None, :], max_index) is None:
        return None
    if not np.all(np.isfinite(flat)):
        return None
    distinct = np.unique(flat.astype(np.float64))
    steps = _group_steps(distinct[None, :], max_index)
    if steps is None:
        return None
    step = np.float32(steps[0])
    indices = np.rint(array.astype(np.float64) / float(step)).astype(np.int64)
    return _verified(Grid(PER_TENSOR, np.asarray(step, dtype=np.float32), indices), array, max_index)


def _per_channel(array: np.ndarray, max_index: int) -> Grid | None:
    rows = array.reshape(array.shape[0], -1)
    channels = _sample_positions(rows.shape[0], SAMPLE_CHANNELS)
    columns = _sample_positions(rows.shape[1], SAMPLE_CHANNEL_VALUES)
    if (len(channels) < rows.shape[0] or len(columns) < rows.shape[1]) and \
            _group_steps(rows[channels][:, columns].astype(np.float64), max_index) is None:
        return None
    if not np.all(np.isfinite(rows)):
        return None
    values = rows.astype(np.float64)
    steps = _group_steps(values, max_index)
    if steps is None:
        return None
    steps = steps.astype(np.float32)
    indices = np.rint(values / steps[:, None].astype(np.float64)).astype(np.int64).reshape(array.shape)
    return _verified(Grid(PER_CHANNEL, steps, indices), array, max_index)


def _verified(grid: Grid, array: np.ndarray, max_index: int) -> Grid | None:
    """`grid` when its indices are in range and the decoder's reconstruction is bit-identical."""
    limit = min(max_index, quantization.MAX_QUANTIZED_MAGNITUDE + 1)
    if grid.indices.size and int(np.max(np.abs(grid.indices))) >= limit:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        decoded = grid.reconstruct()
    if not np.array_equal(decoded.view(np.uint32), np.ascontiguousarray(array).view(np.uint32)):
        return None
    return grid


def _group_steps(values: np.ndarray, max_index: int) -> np.ndarray | None:
    """float32 steps (one per row of `values`, float64 [groups, n]) under which every row is an exact
    grid with |k| < max_index, or None when some row has none."""
    groups = values.shape[0]
    magnitude = np.max(np.abs(values), axis=1)
    ordered = np.sort(np.concatenate([values, np.zeros((groups, 1))], axis=1), axis=1)
    gaps = np.diff(ordered, axis=1)
    gaps[gaps <= 0] = np.inf
    position = np.argmin(gaps, axis=1)
    gap = gaps[np.arange(groups), position]
    steps = np.ones(groups, dtype=np.float32)
    zero = magnitude == 0  # all zero: any step codes it (k = 0)
    if np.any(~zero & (magnitude >= max_index * gap)):
        return None
    # relative error of the gap: each end of it is a float32 rounding of k * s
    ends = np.abs(ordered[np.arange(groups), position]) + np.abs(ordered[np.arange(groups), position + 1])
    gap_error = np.where(zero, 0.0, ends * 2.0 ** -24 / np.where(zero, 1.0, gap))
    open_rows = np.flatnonzero(~zero)
    for multiple in range(1, MAX_MULTIPLE + 1):
        if not open_rows.size:
            return steps
        block = values[open_rows]
        trial = gap[open_rows] / multiple
        if np.any(magnitude[open_rows] >= max_index * trial):  # finer steps only make k larger
            return None
        found = _refined_steps(block, trial, gap_error[open_rows])
        done = np.zeros(open_rows.size, dtype=bool)
        for offset in _ULP_NEIGHBOURS:
            pending = np.flatnonzero(np.isfinite(found) & ~done)
            if not pending.size:
                break
            candidate = _ulp_shift(found[pending].astype(np.float32), offset)
            exact = _rows_exact(block[pending], candidate)
            steps[open_rows[pending[exact]]] = candidate[exact]
            done[pending[exact]] = True
        open_rows = open_rows[~done]
    return steps if not open_rows.size else None


def _refined_steps(block: np.ndarray, trial: np.ndarray, gap_error: np.ndarray) -> np.ndarray:
    """Least-squares steps (float64, nan where a row is no grid under its trial step)."""
    ratios = block / trial[:, None]
    # indices the gap's error cannot move by more than 1/8 (at least the smallest nonzero value)
    reach = np.maximum(1.0 / (8.0 * np.maximum(gap_error, 2.0 ** -30)), 1.0)
    near = np.abs(ratios) <= reach[:, None]
    smallest = np.min(np.where(ratios != 0, np.abs(ratios), np.inf), axis=1)
    near |= np.abs(ratios) <= smallest[:, None]
    coarse = np.rint(ratios)
    loose = np.max(np.where(near, np.abs(ratios - coarse), 0.0), axis=1) <= _LOOSE
    coarse = np.where(near, coarse, 0.0)
    step = _least_squares(block, coarse, trial)
    fine = np.rint(block / step[:, None])
    tight = np.max(np.abs(block / step[:, None] - fine), axis=1) <= _TIGHT
    step = _least_squares(block, fine, step)
    return np.where(loose & tight & (step > 0), step, np.nan)


def _least_squares(block: np.ndarray, indices: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    weight = np.sum(indices * indices, axis=1)
    step = np.sum(indices * block, axis=1) / np.where(weight > 0, weight, 1.0)
    return np.where(weight > 0, step, fallback)


def _ulp_shift(steps: np.ndarray, offset: int) -> np.ndarray:
    """float32 steps moved by `offset` ulps (positive, finite steps: the bit pattern is monotone)."""
    if offset == 0:
        return steps
    shifted = (steps.view(np.int32) + np.int32(offset)).view(np.float32)
    return np.where(np.isfinite(shifted) & (shifted > 0), shifted, steps)


def _rows_exact(block: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Rows of `block` (float64 holding float32 values) equal to float32(k) * step in float32."""
    indices = np.rint(block / steps[:, None].astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        decoded = indices.astype(np.float32) * steps[:, None]
    return np.all(decoded.astype(np.float64) == block, axis=1)
