"""What the calibrated stage is told and what it chooses: options, per-tensor state, rate points."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nnlc import quantization
from nnlc.calibrated import dependent, optq


@dataclasses.dataclass
class CalibratedOptions:
    """Options of the calibrated stage (the CLI's flags map onto these)."""

    kind: str = "auto"  # classifier | embedding | vad | mse | auto
    # "optq" (error compensation at the allocated steps), "allocation" (rounding at the allocated
    # steps) or "global" (rounding at one step for every tensor: the ablation baseline)
    method: str = "optq"
    # OPTQ / rounding minimise error + lmbda * code length; off by default: on mobilenet_v2 it cost more
    # fidelity than the bytes it saved (see the closing note of issue 11 and docs/calibrated_mode.md)
    rate_term: bool = False
    step_grid: str = "qp"  # "qp": steps on NNR's quarter-octave grid; "float": the exact equal-slope steps
    rate_step_scale: float = 1.0  # with the rate term: steps times this (finer steps + RDO deadzone)
    hessians: str = "original"  # "original" activations, or "sequential" (compressed layers before)
    sequential_stages: int = 8  # with hessians="sequential": groups of layers re-collected together
    sensitivity_feeds: int = 8  # optimisation feeds used to measure sensitivities
    probe_step_fraction: float = 1.0 / 16.0  # probe step = this * rms(tensor)
    sensitivity: str = "rounding"  # allocate from the "rounding" or the "quantizer" (OPTQ) sensitivity
    default_qp: int = -38  # data-free step of tensors the calibration inputs do not exercise
    nonweight_qp: int = -75
    lossless_names: tuple[str, ...] = ()
    # lookup tables (Gather on axis 0): a step per row from how often the calibration inputs read it
    # (`nnlc.calibrated.rows`; coded as bitstream mode 5); off: one step per table
    row_steps: bool = True
    row_prior: float = 1.0  # times the Good-Turing mass given to rows the calibration never read
    # no row coarser than this times the step the whole table would get: rare and unseen rows are read
    # by inputs outside the calibration set, and a retrieval metric (nearest neighbours) fails on one
    row_max_coarsening: float = 2.0
    # OPTQ on the centred inputs, and each layer's mean output shift moved into its bias
    # (`nnlc.calibrated.bias`; with hessians="original")
    # embeddings: hold-out neighbours searched among the optimisation sentences too (`Reference`)
    neighbour_gallery: bool = True
    bias_correction: bool = False  # measured on mobilenet_v2: no gain (docs/calibrated_mode.md)
    centred_hessians: bool = True  # with bias correction: OPTQ on the centred inputs (else on E[x x^T])
    damping: float = optq.DAMPING
    act_order: bool = True
    # layers with a Hessian: OPTQ with dependent (trellis) quantization, bitstream mode 6
    # (`nnlc.calibrated.dependent`; step d = dependent_step_factor x the allocated step)
    dependent_quantization: bool = False
    dependent_step_factor: float = dependent.STEP_FACTOR
    length_passes: int = 2  # OPTQ passes, each with code lengths refitted to the previous integers
    threads: int = 2
    quiet: bool = False


@dataclasses.dataclass
class TensorState:
    """What the calibrated stage knows and chose for one quantized tensor."""

    name: str
    role: str
    params: int
    sensitivity: float | None = None  # a_t (distortion per step^2) of the quantizer used; None: not allocated
    rounding_sensitivity: float | None = None  # a_t of plain rounding
    quantizer_sensitivity: float | None = None  # a_t of OPTQ (layers with a Hessian)
    probe_error: float | None = None  # tr(dW H dW^T) of the probe (||dW||^2 without H)
    status: str = "allocated"  # allocated | not exercised | breaks when perturbed | not fed
    row_probabilities: np.ndarray | None = None  # lookup tables: each row's share of reads (row steps)
    rows_read: int = 0  # lookup tables: rows the optimisation inputs read
    qp: int | None = None
    step: float | None = None
    symbols: np.ndarray | None = None


@dataclasses.dataclass
class Point:
    """One rate point: lmbda, estimated bits, hold-out fidelity and the integers behind it."""

    lmbda: float
    bits: float
    fidelity: dict[str, Any]
    steps: dict[str, float]
    symbols: dict[str, np.ndarray]
    seconds: float
    # lookup tables with a step per row: (float32 step of each group, group of each row)
    grouped: dict[str, tuple[np.ndarray, np.ndarray]] = dataclasses.field(default_factory=dict)
    # small tensors coded raw with new values (biases that took their layer's correction)
    adjusted: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    # tensors with dependent quantization (mode 6): (row length, transposed) of their state machine
    dependent: dict[str, tuple[int, bool]] = dataclasses.field(default_factory=dict)

    def step_array(self, name: str, shape: tuple[int, ...]) -> np.ndarray | float:
        """The tensor's step: a float, or for a grouped table its rows' steps shaped to broadcast."""
        if name not in self.grouped:
            return self.steps[name]
        return quantization.group_row_steps(*self.grouped[name], len(shape))

    def start_steps(self) -> dict[str, float | np.ndarray]:
        """Steps for a start file: one per tensor, one per row for grouped tables; tensors with dependent
        quantization are left out (a trainer's step * integer cannot hold them: they keep its own start)."""
        rows = {name: quantization.group_row_steps(*grouped) for name, grouped in self.grouped.items()}
        return {name: step for name, step in {**self.steps, **rows}.items() if name not in self.dependent}

    def start_symbols(self) -> dict[str, np.ndarray]:
        """The integers of the tensors in `start_steps`."""
        return {name: symbols for name, symbols in self.symbols.items() if name not in self.dependent}

    def decoded(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """What the decoder reconstructs for tensor `name` (float32)."""
        if name in self.dependent:
            row_length, transposed = self.dependent[name]
            return dependent.reconstruct(  # the decoder's (nnlc.decoder.dependent)
                np.asarray(self.symbols[name]).reshape(shape), np.float32(self.steps[name]), row_length, transposed)
        return quantization.dequantize(np.asarray(self.symbols[name]).reshape(shape), self.step_array(name, shape))
