"""Starting the end-to-end trainer from a calibrated or block-wise result (issue 12, stage 3).

The calibrated and block-wise stages end with one step and one integer tensor per quantized weight
(`start.npz`, written by `nnlc.calibrated.experiment`; lookup tables with row steps have one step
per row). Scalar decoders hold a tensor's one step, channel decoders one step per row (a single
step is repeated over the rows): latents = the integers, log_step = log(step), in the default
`step_scaled` units (initial log-step = that log-step), so step 0 of training is the start's
network (to the float32 rounding of exp(log(step))). A dct decoder, or row steps where the decoder
is scalar, keeps the trainer's own start for that tensor (`StartReport.not_scalar`).
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

STEP_PREFIX, SYMBOL_PREFIX = "step/", "symbols/"


def save_start(path: str, steps: Mapping[str, float | np.ndarray], symbols: Mapping[str, np.ndarray]) -> None:
    """Writes the point (steps and integers by qualified tensor name) atomically as an npz.

    A step is a float, or one float per row along axis 0 (a lookup table with row steps)."""
    from nnlc.decoder.files import atomic_write

    arrays = {f"{STEP_PREFIX}{name}": np.asarray(step, np.float32) for name, step in steps.items()}
    arrays.update({f"{SYMBOL_PREFIX}{name}": np.asarray(symbols[name], np.int64) for name in steps})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def load_start(path: str) -> tuple[dict[str, float | np.ndarray], dict[str, np.ndarray]]:
    """(steps, integers) of a `save_start` file; a clear error when it is missing or not one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"start_from={path}: no such file (a calibrated or blockwise workdir's start.npz)")
    with np.load(path, allow_pickle=False) as data:
        names = [key[len(STEP_PREFIX):] for key in data.files if key.startswith(STEP_PREFIX)]
        if not names or any(f"{SYMBOL_PREFIX}{name}" not in data.files for name in names):
            raise ValueError(f"start_from={path}: not a start file (step/NAME and symbols/NAME arrays)")
        steps = {name: np.asarray(data[f"{STEP_PREFIX}{name}"], np.float32) for name in names}
        return ({name: float(step) if step.ndim == 0 else step for name, step in steps.items()},
                {name: np.asarray(data[f"{SYMBOL_PREFIX}{name}"]) for name in names})


@dataclasses.dataclass
class StartReport:
    started: list[str]  # trained tensors that start at the given point
    not_scalar: list[str]  # in the start, but their decoder cannot hold its steps: they keep the default start
    not_trained: list[str]  # in the start, but fixed in the trainer

    def line(self) -> str:
        return (f"started {len(self.started)} tensors from the given point"
                + (f"; {len(self.not_scalar)} keep their default start (their decoder cannot hold the steps)" if self.not_scalar else "")
                + (f"; {len(self.not_trained)} are fixed in the trainer" if self.not_trained else ""))


def apply_start(problem, params: dict, steps: Mapping[str, float], symbols: Mapping[str, np.ndarray]
                ) -> tuple[dict, StartReport]:
    """`params` (and `problem.initial_log_steps`) set so that the trained tensors decode to the start."""
    latents = dict(params["latents"])
    decoder = {name: dict(value) for name, value in params["decoder"].items()}
    report = StartReport([], [], [])
    for name, step in steps.items():
        if name not in problem.plan:
            report.not_trained.append(name)
            continue
        integers = np.asarray(symbols[name])
        shape = tuple(problem.records[name].array.shape)
        if integers.shape != shape:
            raise ValueError(f"start: {name} has shape {integers.shape}, the model's is {shape}")
        step = np.asarray(step, np.float64)
        kind = problem.plan[name].kind
        if kind == "channel" and step.ndim == 0:  # one step for every row: a channel decoder holds it
            step = np.full(shape[0], float(step))
        fits = (kind == "scalar" and step.ndim == 0) or (kind == "channel" and step.shape == shape[:1])
        if not fits:  # a dct decoder, or row steps on a scalar decoder: the trainer's own start
            report.not_scalar.append(name)
            continue
        log_step = np.log(step).astype(np.float32)
        latents[name] = jnp.asarray(integers.astype(np.float32))
        decoder[name]["log_step"] = jnp.asarray(log_step)
        if name in problem.initial_log_steps:
            problem.initial_log_steps[name] = np.asarray(log_step, np.float32)
        report.started.append(name)
    return {**params, "latents": latents, "decoder": decoder}, report
