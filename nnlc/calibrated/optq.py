"""Rate-constrained OPTQ: column-wise quantization with error feedback and a code-length term.

OPTQ/GPTQ (Frantar et al., ICLR 2023) quantizes the columns of W [rows, columns] one at a time and
spreads each column's error over the columns not yet quantized, through the upper Cholesky factor
U of H^-1 (H = E[x x^T] of the layer input, damped). Choosing the integer of entry (i, j) to
minimise

    weight * (w_ij - step * k)^2 / U_jj^2  +  lmbda * L(k)

where L(k) is k's code length in bits under the tensor's coding table (the table nnlc writes),
adds the rate term of CERWU (Conzelmann & Bamler, NeurIPS 2025). `weight` converts the layer's
output error tr(dW H dW^T) into the model-level distortion, so one `lmbda` (distortion per bit)
means the same trade-off in every layer. With H = I (U = I) no error is fed forward and the rule
is plain rate-distortion optimised rounding: the data-free fallback.

Framework-free numpy; layers with several groups (conv groups, a depthwise kernel's channels, LSTM
directions) are processed together, batched over the group axis.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nnlc.coding import symbols as symbol_coding
from nnlc.coding.binning import to_bins

DAMPING = 0.01  # OPTQ's default: 1% of the mean diagonal
BLOCK = 128  # lazy-batch width of OPTQ's column updates
ESCAPE_BITS = 40.0  # code length charged to integers outside the table (escapes are rare and dear)


@dataclasses.dataclass(frozen=True)
class CodeLengths:
    """Bits of every integer in [low, low + len(bits)); anything outside costs `outside` bits."""

    low: int
    bits: np.ndarray
    outside: float = ESCAPE_BITS

    def __call__(self, values: np.ndarray) -> np.ndarray:
        index = np.asarray(values, np.int64) - self.low
        inside = (index >= 0) & (index < len(self.bits))
        return np.where(inside, self.bits[np.clip(index, 0, len(self.bits) - 1)], self.outside)


def code_lengths_for(symbols: np.ndarray, margin: int = 2, floor_count: float = 0.5) -> CodeLengths:
    """Code lengths of the coding plan nnlc would choose for `symbols` (bins + raw bits).

    Bins the symbols never use get the cost of a count of `floor_count`, so that moving an entry to
    a new value is dear but finite (the refit table will hold it). Integers up to `margin` beyond
    the used range are covered.
    """
    symbols = np.asarray(symbols, np.int64).ravel()
    plan = symbol_coding.plan_coding(symbols)
    low, high = int(symbols.min()) - margin, int(symbols.max()) + margin
    values = np.arange(low, high + 1, dtype=np.int64)
    bins, _, nbits = to_bins(values, plan.binning)
    table = plan.table
    frequencies = table.frequencies.astype(np.float64)
    total = float(1 << table.precision)
    index = bins - table.first
    inside = (index >= 0) & (index < len(frequencies))
    frequency = np.where(inside, frequencies[np.clip(index, 0, len(frequencies) - 1)], 0.0)
    # a used bin's cost comes from the table; unused bins get a pseudo-count
    pseudo = floor_count / max(1, symbols.size) * total
    frequency = np.where(frequency > 0, frequency, pseudo)
    bits = np.log2(total / frequency) + nbits
    return CodeLengths(low, bits.astype(np.float64))


def _choose(target: np.ndarray, step: float, inverse_weight: np.ndarray, lmbda: float,
            lengths: CodeLengths | None) -> np.ndarray:
    """Integers minimising (target - step k)^2 * inverse_weight + lmbda * L(k), per entry."""
    scaled = target / step
    nearest = np.rint(scaled)
    if lengths is None or lmbda <= 0:
        return nearest.astype(np.int64)
    base = np.floor(scaled)
    candidates = np.stack([base - 1, base, base + 1, base + 2, np.zeros_like(base)])
    candidates = candidates.astype(np.int64)
    error = (target[None] - step * candidates) ** 2 * inverse_weight[None]
    cost = error + lmbda * lengths(candidates)
    best = np.argmin(cost, axis=0)
    return np.take_along_axis(candidates, best[None], axis=0)[0]


def upper_inverse_cholesky(hessian: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """U with U^T U = (H + damping * mean(diag H) I)^-1, upper triangular, batched over groups."""
    hessian = np.array(hessian, dtype=np.float64, copy=True)
    groups, size, _ = hessian.shape
    diagonal = np.einsum("gii->gi", hessian)
    dead = diagonal <= 0
    mean_diagonal = np.where(diagonal.mean(axis=1) > 0, diagonal.mean(axis=1), 1.0)
    for g in range(groups):
        hessian[g][dead[g], dead[g]] = mean_diagonal[g]
    hessian += (damping * mean_diagonal)[:, None, None] * np.eye(size)[None]
    for attempt in range(6):
        try:
            lower = np.linalg.cholesky(hessian)
            break
        except np.linalg.LinAlgError:  # more damping until H is numerically positive definite
            hessian += (10.0 ** attempt * damping * mean_diagonal)[:, None, None] * np.eye(size)[None]
    else:
        raise np.linalg.LinAlgError("Hessian is not positive definite even with damping")
    eye = np.broadcast_to(np.eye(size), hessian.shape)
    inverse_lower = np.linalg.solve(lower, eye)  # L^-1
    inverse = np.matmul(inverse_lower.transpose(0, 2, 1), inverse_lower)  # H^-1 = L^-T L^-1
    return np.linalg.cholesky(inverse).transpose(0, 2, 1)


def quantize_layer(weights: np.ndarray, step: float, hessian: np.ndarray | None, lmbda: float = 0.0,
                   weight: float = 1.0, lengths: CodeLengths | None = None, act_order: bool = True,
                   damping: float = DAMPING) -> np.ndarray:
    """Integers k [groups, rows, columns] for W [groups, rows, columns] with reconstruction step * k.

    `hessian` [groups, columns, columns] (None: H = I, i.e. rate-distortion optimised rounding),
    `weight` the model distortion per unit of tr(dW H dW^T), `lmbda` the distortion per bit.
    """
    weights = np.asarray(weights, np.float64)
    groups, rows, columns = weights.shape
    scale = lmbda / weight if weight > 0 else 0.0  # decide in layer-error units
    if hessian is None:
        return _choose(weights, step, np.ones(1), scale, lengths)
    if act_order:
        order = np.argsort(-np.einsum("gii->gi", hessian), axis=1, kind="stable")
    else:
        order = np.broadcast_to(np.arange(columns), (groups, columns))
    hessian = np.take_along_axis(np.take_along_axis(hessian, order[:, :, None], axis=1), order[:, None, :], axis=2)
    work = np.take_along_axis(weights, order[:, None, :], axis=2).copy()
    upper = upper_inverse_cholesky(hessian, damping)
    result = np.zeros(work.shape, np.int64)
    for start in range(0, columns, BLOCK):
        end = min(columns, start + BLOCK)
        block = work[:, :, start:end].copy()
        errors = np.zeros_like(block)
        block_upper = upper[:, start:end, start:end]
        for j in range(end - start):
            diagonal = block_upper[:, j, j]  # [groups]
            column = block[:, :, j]
            inverse_weight = (1.0 / diagonal ** 2)[:, None]
            integers = _choose(column, step, inverse_weight, scale, lengths)
            result[:, :, start + j] = integers
            error = (column - step * integers) / diagonal[:, None]
            block[:, :, j:] -= error[:, :, None] * block_upper[:, j, j:][:, None, :]
            errors[:, :, j] = error
        if end < columns:
            work[:, :, end:] -= np.matmul(errors, upper[:, start:end, end:])
    inverse_order = np.argsort(order, axis=1)
    return np.take_along_axis(result, inverse_order[:, None, :], axis=2)


def layer_error(weights: np.ndarray, decoded: np.ndarray, hessian: np.ndarray | None) -> float:
    """tr(dW H dW^T) summed over groups (H = I when None): the layer's mean squared output change."""
    delta = np.asarray(decoded, np.float64) - np.asarray(weights, np.float64)
    if hessian is None:
        return float(np.sum(delta ** 2))
    return float(np.einsum("grc,gcd,grd->", delta, hessian, delta))
