"""OPTQ with dependent quantization: a trellis search over each row, with OPTQ's error feedback.

Bitstream mode 6 (`nnlc.decoder.dependent`) reconstructs integer k as 2k d or (2k - sgn k) d
depending on a 4-state machine driven by the parities of the integers before it in the row. The
encoder chooses the integers of a row by a Viterbi search over the states (trellis-coded
quantization; the dependent quantization of VVC and NNR). Combined with OPTQ (Frantar et al., ICLR
2023), every survivor path carries its own copy of the row's remaining targets: choosing an integer
in column j feeds that path's error (w_j - level d) / U_jj forward through row j of U (the upper
Cholesky factor of H^-1), exactly as OPTQ does for its single path, so the trellis minimises OPTQ's
objective tr(dW H dW^T) over the paths the state machine allows. With H = None (H = I) no error is
fed forward and the search minimises the squared error. Columns are visited in their natural order
(the decoder's), not OPTQ's act order, which would have to be sent. No rate term: the choice between
levels is by distortion, as in plain OPTQ.

Framework-free numpy, batched over groups and rows: memory 4 x the layer's matrix.
"""

from __future__ import annotations

import numpy as np

from nnlc.calibrated import optq
from nnlc.decoder.dependent import STATES, TRANSITIONS, levels, reconstruct

# equal squared error to rounding at step s needs d of about 0.64 s (measured on mobilenet_v2's weights)
STEP_FACTOR = 0.65


def _candidates(x: np.ndarray, quantizer_one: bool) -> list[np.ndarray]:
    """Integers whose levels (in units of d) bracket x under Q0 (levels 2k) or Q1 (0, +-1, +-3, ...)."""
    if not quantizer_one:
        base = np.floor(x / 2)
        return [base, base + 1]
    up = np.floor((x + 1) / 2)
    down = -np.floor((1 - x) / 2)
    return [up, up + 1, down, down - 1]


def quantize_layer(weights: np.ndarray, step: float, hessian: np.ndarray | None,
                   damping: float = optq.DAMPING) -> np.ndarray:
    """Integers k [groups, rows, columns] for W [groups, rows, columns]; the state runs along each row
    (natural column order), reconstruction `levels(k, states) * step` (`nnlc.decoder.dependent`)."""
    weights = np.asarray(weights, np.float64)
    groups, rows, columns = weights.shape
    upper = optq.upper_inverse_cholesky(hessian, damping) if hessian is not None else None
    work = np.repeat(weights[:, :, None, :], STATES, axis=2)  # [groups, rows, state, columns]
    cost = np.full((groups, rows, STATES), np.inf)
    cost[:, :, 0] = 0.0
    chosen = np.zeros((columns, groups, rows, STATES), np.int64)  # integer that led into each state
    previous = np.zeros((columns, groups, rows, STATES), np.int8)  # the state it came from
    g_index, r_index = np.arange(groups)[:, None, None], np.arange(rows)[None, :, None]
    for j in range(columns):
        diagonal = upper[:, j, j][:, None, None] if upper is not None else np.ones((groups, 1, 1))
        targets = work[:, :, :, 0]  # [groups, rows, state]; `work` holds the columns j, j+1, ...
        # every (state, candidate) transition at once, state-major: [groups, rows, transitions]
        ks, sources = [], []
        for state in range(STATES):
            for candidate in _candidates(targets[:, :, state] / step, state >= 2):
                ks.append(candidate.astype(np.int64))
                sources.append(state)
        k = np.stack(ks, axis=-1)
        source_of = np.asarray(sources)
        e = (targets[:, :, source_of] - levels(k, source_of) * step) / diagonal
        total = cost[:, :, source_of] + e ** 2
        destination = TRANSITIONS[source_of[None, None, :], k & 1]
        best = np.empty((groups, rows, STATES))
        source = np.empty((groups, rows, STATES), np.int64)
        integer = np.empty((groups, rows, STATES), np.int64)
        error = np.empty((groups, rows, STATES))
        for next_state in range(STATES):  # the first transition of least cost into each state
            masked = np.where(destination == next_state, total, np.inf)
            pick = np.argmin(masked, axis=-1)[..., None]
            best[:, :, next_state] = np.take_along_axis(masked, pick, -1)[..., 0]
            source[:, :, next_state] = source_of[pick[..., 0]]
            integer[:, :, next_state] = np.take_along_axis(k, pick, -1)[..., 0]
            error[:, :, next_state] = np.take_along_axis(e, pick, -1)[..., 0]
        unreached = ~np.isfinite(best)  # a state no finite path enters yet (the first columns)
        source[unreached], integer[unreached], error[unreached] = 0, 0, 0.0
        work = work[g_index, r_index, source, 1:]  # each survivor continues from the path it extends
        if upper is not None and j + 1 < columns:
            work -= error[:, :, :, None] * upper[:, None, None, j, j + 1:]
        cost, chosen[j], previous[j] = best, integer, source
    state = np.argmin(cost, axis=2)  # [groups, rows]
    result = np.zeros(weights.shape, np.int64)
    g_flat, r_flat = np.arange(groups)[:, None], np.arange(rows)[None, :]
    for j in range(columns - 1, -1, -1):
        result[:, :, j] = chosen[j][g_flat, r_flat, state]
        state = previous[j][g_flat, r_flat, state]
    return result


def reconstruct_matrices(integers: np.ndarray, step: float) -> np.ndarray:
    """The float32 weights [groups, rows, columns] of `quantize_layer`'s integers: the decoder's
    reconstruction with the state run along each row."""
    integers = np.asarray(integers, np.int64)
    return reconstruct(integers.reshape(-1, integers.shape[-1]), np.float32(step), integers.shape[-1],
                       False).reshape(integers.shape)
