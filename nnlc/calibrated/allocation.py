"""Per-tensor steps from one global trade-off (equal slopes), and their snapping to the qp grid.

If tensor t's contribution to the output distortion grows as a_t * step_t^2 and its code length as
n_t * (h_t - log2 step_t) bits (uniform quantization at high rate), minimising
sum_t a_t step_t^2 + lmbda * bits gives 2 a_t step_t = lmbda * n_t / (ln 2 * step_t), i.e.

    step_t = sqrt(lmbda * n_t / (2 ln 2 * a_t)),

where every tensor pays the same distortion `lmbda` for its last bit (the equal-slope condition of
rate allocation; Gersho & Gray, "Vector Quantization and Signal Compression", ch. 8). The predicted
total distortion is sum_t a_t step_t^2 = lmbda * N / (2 ln 2), N the parameter count.
"""

from __future__ import annotations

import math

import numpy as np

from nnlc import quantization

LN2 = math.log(2.0)


def allocated_step(lmbda: float, params: int, sensitivity: float) -> float:
    """The equal-slope step of a tensor with `params` entries and distortion sensitivity * step^2."""
    if lmbda <= 0 or sensitivity <= 0:
        raise ValueError("lmbda and sensitivity must be positive")
    return math.sqrt(lmbda * params / (2.0 * LN2 * sensitivity))


def slope(step: float, params: int, sensitivity: float) -> float:
    """-dD/dbits at `step`: the distortion one more bit would buy back (equals lmbda at the optimum)."""
    return 2.0 * LN2 * sensitivity * step ** 2 / params


def snap_to_qp(step: float) -> tuple[int, float]:
    """The NNR qp whose step is nearest to `step` in log scale, and that step (quarter-octave grid)."""
    below = quantization.qp_from_step(step)
    candidates = [below, below + 1]
    qp = min(candidates, key=lambda q: abs(math.log(quantization.step_from_qp(q) / step)))
    return qp, quantization.step_from_qp(qp)


def predicted_lmbda(distortion: float, params: int) -> float:
    """The lmbda whose allocation predicts a total distortion of `distortion` (plain rounding)."""
    return distortion * 2.0 * LN2 / max(1, params)


def steps_for(lmbda: float, params: dict[str, int], sensitivities: dict[str, float],
              max_steps: dict[str, float] | None = None, snap: bool = True) -> dict[str, tuple[int, float]]:
    """(qp, step) per tensor for one lmbda, each step capped at `max_steps` (e.g. 2 max|w|).

    `snap`: steps on the qp grid (quarter octaves, as NNR signals them); else the exact step (the
    bitstream stores a float32 step per tensor), with qp the nearest for reports.
    """
    chosen = {}
    for name, sensitivity in sensitivities.items():
        step = allocated_step(lmbda, params[name], sensitivity)
        if max_steps and name in max_steps:
            step = min(step, max_steps[name])
        step = float(np.clip(step, 1e-30, 1e30))
        chosen[name] = snap_to_qp(step) if snap else (snap_to_qp(step)[0], step)
    return chosen
