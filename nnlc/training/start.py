"""Starting the end-to-end trainer from a calibrated or block-wise result (issue 12, stage 3).

The calibrated and block-wise stages end with one step and one integer tensor per quantized weight
(`start.npz`, written by `nnlc.calibrated.experiment`). With scalar decoders the trainer's
parameters can hold exactly that point: latents = the integers, log_step = log(step), in the
default `step_scaled` units (initial log-step = that log-step), so step 0 of training is the start's
network (to the float32 rounding of exp(log(step))) and the bitstream mode is the same.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

STEP_PREFIX, SYMBOL_PREFIX = "step/", "symbols/"


def save_start(path: str, steps: Mapping[str, float], symbols: Mapping[str, np.ndarray]) -> None:
    """Writes the point (steps and integers by qualified tensor name) atomically as an npz."""
    from nnlc.decoder.files import atomic_write

    arrays = {f"{STEP_PREFIX}{name}": np.float32(step) for name, step in steps.items()}
    arrays.update({f"{SYMBOL_PREFIX}{name}": np.asarray(symbols[name], np.int64) for name in steps})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def load_start(path: str) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(steps, integers) of a `save_start` file; a clear error when it is missing or not one."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"start_from={path}: no such file (a calibrated or blockwise workdir's start.npz)")
    with np.load(path, allow_pickle=False) as data:
        names = [key[len(STEP_PREFIX):] for key in data.files if key.startswith(STEP_PREFIX)]
        if not names or any(f"{SYMBOL_PREFIX}{name}" not in data.files for name in names):
            raise ValueError(f"start_from={path}: not a start file (step/NAME and symbols/NAME arrays)")
        return ({name: float(data[f"{STEP_PREFIX}{name}"]) for name in names},
                {name: np.asarray(data[f"{SYMBOL_PREFIX}{name}"]) for name in names})


@dataclasses.dataclass
class StartReport:
    started: list[str]  # trained tensors that start at the given point
    not_scalar: list[str]  # in the start, but their decoder is not scalar: they keep the default start
    not_trained: list[str]  # in the start, but fixed in the trainer

    def line(self) -> str:
        return (f"started {len(self.started)} tensors from the given point"
                + (f"; {len(self.not_scalar)} keep their default start (decoder not scalar)" if self.not_scalar else "")
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
        if problem.plan[name].kind != "scalar":
            report.not_scalar.append(name)
            continue
        integers = np.asarray(symbols[name])
        if integers.shape != tuple(problem.records[name].array.shape):
            raise ValueError(f"start: {name} has shape {integers.shape}, the model's is "
                             f"{problem.records[name].array.shape}")
        log_step = np.float32(np.log(np.float64(step)))
        latents[name] = jnp.asarray(integers.astype(np.float32))
        decoder[name]["log_step"] = jnp.asarray(log_step)
        if name in problem.initial_log_steps:
            problem.initial_log_steps[name] = np.asarray(log_step, np.float32)
        report.started.append(name)
    return {**params, "latents": latents, "decoder": decoder}, report
