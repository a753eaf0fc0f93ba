"""Block-wise rate-distortion refinement of a calibrated rate point (BRECQ-style, with a rate term).

Starting from a calibrated `Point` (per-tensor steps and integers), each block of the graph
(`nnlc.blockwise.partition`) is trained on its own, in order:
- inputs: the block's inputs computed by the *already refined* blocks before it (so errors of earlier
  blocks are seen and compensated), on the optimisation feeds; targets: the original network's block
  outputs on the same feeds;
- parameters: one continuous latent per weight, initialised at the calibrated integers, so step 0
  is exactly the calibrated network; the forward pass uses step * round(latent) with a
  straight-through gradient; steps stay those of the calibrated point;
- loss = w_b * MSE(block outputs) / energy(targets) + lmbda * bits, with the calibrated lmbda
  (model distortion per bit). The weight w_b converts the block's normalised output error into the
  model's distortion: measured once, at the calibrated point, as the model distortion caused by
  this block's quantization alone over the normalised error it causes at the block's outputs (an
  equivalent of BRECQ's Fisher weighting that needs no gradients through the rest of the network);
- bits: code lengths of the latents + uniform noise under each tensor's histogram table of the
  current integers (what the encoder will fit, refitted every `refit_every` steps), linearly
  interpolated in log-probability between integers so that gradients flow.
The refined point is encoded with the calibrated stage's encoder (same format).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from nnlc import quantization
from nnlc.blockwise.partition import Block, block_models, partition
from nnlc.decoder.files import atomic_write
from nnlc.progress import Phase

PSEUDO_COUNT = 0.5


@dataclasses.dataclass
class BlockwiseOptions:
    steps: int = 200  # optimiser steps per block
    learning_rate: float = 5e-3  # Adam, in units of quantization bins
    refit_every: int = 50  # steps between refits of the code-length tables
    target_blocks: int = 8
    rate_weight: float = 1.0  # multiplies lmbda in the loss (0: distortion only)
    init: str = "residual"  # latents start at the calibrated integers ("integers") or towards the floats
    seed: int = 0
    quiet: bool = False


@dataclasses.dataclass
class BlockReport:
    index: int
    tensors: list[str]
    params: int
    distortion_weight: float
    start_loss: float
    end_loss: float
    start_bits: float
    end_bits: float
    changed: int  # integers that moved
    seconds: float


def code_length_table(integers: np.ndarray, margin: int = 4) -> tuple[int, np.ndarray]:
    """(low, bits[k - low]) of a histogram table over [min - margin, max + margin] (pseudo-counts)."""
    integers = np.asarray(integers, np.int64).ravel()
    low, high = int(integers.min()) - margin, int(integers.max()) + margin
    counts = np.bincount(integers - low, minlength=high - low + 1).astype(np.float64) + PSEUDO_COUNT
    return low, -np.log2(counts / counts.sum())


def _rate_bits(jnp, latent, low: int, bits):
    """Interpolated code length of continuous latents under a table (edges clamped)."""
    position = jnp.clip(latent - low, 0.0, bits.shape[0] - 1.000001)
    base = jnp.floor(position)
    fraction = position - base
    index = base.astype(jnp.int32)
    return jnp.sum(bits[index] * (1.0 - fraction) + bits[jnp.minimum(index + 1, bits.shape[0] - 1)] * fraction)


def _weights_in(block: Block, symbols: Mapping[str, np.ndarray]) -> list[str]:
    return [name for name in block.weights if name in symbols]


def _checkpoint_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"block_{index:03d}.npz")


def _save_block(directory: str, index: int, names: list[str], symbols: Mapping[str, np.ndarray],
                report: BlockReport) -> None:
    """One finished block's integers and report, written atomically (a crash leaves no partial file)."""
    import io
    import json

    buffer = io.BytesIO()
    np.savez(buffer, **{f"tensor_{i}": symbols[name] for i, name in enumerate(names)},
             names=np.array(names), report=np.array(json.dumps(dataclasses.asdict(report))))
    atomic_write(_checkpoint_path(directory, index), buffer.getvalue())


def _load_block(directory: str, index: int) -> tuple[dict[str, np.ndarray], BlockReport] | None:
    import json

    path = _checkpoint_path(directory, index)
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as data:
        names = [str(n) for n in data["names"]]
        loaded = {name: data[f"tensor_{i}"] for i, name in enumerate(names)}
        report = BlockReport(**json.loads(str(data["report"])))
    return loaded, report


def refine(calibrator, point, options: BlockwiseOptions = BlockwiseOptions(), checkpoint_dir: str | None = None):
    """The calibrated `point` with every block's integers trained; returns (new point, [BlockReport]).

    With `checkpoint_dir`, every finished block's integers are saved there and a rerun (after a
    crash or SIGKILL) continues after the last finished block, with the same result as an
    uninterrupted run (each block's randomness is seeded by its index).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from nnlc.graph import from_onnx

    if point.dependent:
        raise ValueError("block-wise training of tensors with dependent quantization (mode 6) is not "
                         "supported: calibrate without dependent_quantization for this stage")
    started = time.perf_counter()
    model = calibrator.model
    blocks = partition(model, options.target_blocks)
    protos = block_models(model, blocks)
    symbols = {name: np.asarray(v, np.int64).copy() for name, v in point.symbols.items()}
    shapes = {name: calibrator.records[name].array.shape for name in symbols}
    steps = {name: point.step_array(name, shapes[name]) for name in symbols}  # a table's rows: broadcast

    def decoded(name: str) -> np.ndarray:
        return quantization.dequantize(symbols[name], np.float32(steps[name])).reshape(shapes[name])

    feeds = list(calibrator.optimise_feeds)
    original = [dict(feed) for feed in feeds]  # values of the original network, block by block
    compressed = [dict(feed) for feed in feeds]  # values of the refined network so far
    reports: list[BlockReport] = []
    if checkpoint_dir:
        os.makedirs(checkpoint_dir, exist_ok=True)
    with Phase("blocks", len(blocks), options.quiet) as phase:
        for block, proto in zip(blocks, protos, strict=True):
            apply, originals = from_onnx(proto)
            trained = _weights_in(block, symbols)
            fixed = {name: np.asarray(value) for name, value in originals.items() if name not in trained}
            block_started = time.perf_counter()

            jitted = jax.jit(lambda weights, inputs: apply(weights, inputs))

            def advance(cached: list[dict], weights) -> list[dict]:
                """Adds the block's outputs (under `weights`) to every feed's cached values; returns them."""
                outputs = [jitted(weights, {n: values[n] for n in block.inputs}) for values in cached]
                for values, out in zip(cached, outputs, strict=True):
                    values.update({k: np.asarray(out[k]) for k in block.outputs})
                return outputs

            resumed = _load_block(checkpoint_dir, block.index) if checkpoint_dir and trained else None
            if resumed is not None:  # finished before a crash: its integers, then on to its outputs
                loaded, report = resumed
                symbols.update({name: np.asarray(value, np.int64) for name, value in loaded.items()})
                reports.append(report)
                advance(original, originals)
                advance(compressed, {**fixed, **{n: decoded(n) for n in trained}})
                phase.step(f"block {block.index} (resumed from {checkpoint_dir})")
                continue
            targets = advance(original, originals)
            # the distortion looks at the float outputs (masks and shapes may cross too)
            measured = [k for k in block.outputs if np.asarray(targets[0][k]).dtype.kind == "f"] if targets else []
            if not trained or not measured:
                advance(compressed, {**fixed, **{n: decoded(n) for n in trained}})
                phase.step(f"block {block.index} (no trained weights)")
                continue
            energy = float(np.mean([np.mean([np.mean(np.square(np.asarray(t[k], np.float64))) for k in measured])
                                    for t in targets])) + 1e-30
            inputs_cache = [{n: values[n] for n in block.inputs} for values in compressed]
            target_cache = [{k: np.asarray(t[k]) for k in measured} for t in targets]
            original_inputs = [{n: values[n] for n in block.inputs} for values in original]
            weight = _distortion_weight(calibrator, trained, decoded, jitted, originals, original_inputs,
                                        target_cache, energy)
            lmbda = point.lmbda * options.rate_weight
            step_values = {n: jnp.asarray(steps[n], jnp.float32) for n in trained}

            def loss_fn(latents, tables, inputs, target, key):
                weights = dict(fixed)
                bits = 0.0
                keys = jax.random.split(key, len(trained))
                for k, name in zip(keys, trained):
                    phi = latents[name]
                    rounded = phi + jax.lax.stop_gradient(jnp.round(phi) - phi)
                    weights[name] = (rounded * step_values[name]).reshape(shapes[name]).astype(jnp.float32)
                    noisy = phi + jax.random.uniform(k, phi.shape, minval=-0.5, maxval=0.5)
                    low, table = tables[name]
                    bits = bits + _rate_bits(jnp, noisy, low, table)
                out = apply(weights, inputs)
                mse = sum(jnp.mean((out[k] - target[k]) ** 2) for k in measured) / len(measured)
                distortion = weight * mse / energy
                return distortion + lmbda * bits, (distortion, bits)

            optimizer = optax.adam(options.learning_rate)
            latents = {n: jnp.asarray(_initial_latents(symbols[n], calibrator.records[n].array, steps[n],
                                                       options.init), jnp.float32) for n in trained}
            state = optimizer.init(latents)

            @jax.jit
            def train_step(latents, state, tables, inputs, target, key):
                (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(latents, tables, inputs, target, key)
                updates, state = optimizer.update(grads, state, latents)
                return optax.apply_updates(latents, updates), state, loss, aux

            def tables_of(latents):
                result = {}
                for n in trained:
                    low, bits = code_length_table(np.rint(np.asarray(latents[n])).astype(np.int64))
                    result[n] = (low, jnp.asarray(bits, jnp.float32))
                return result

            def full_loss(latents):
                rounded = {n: np.rint(np.asarray(latents[n])).astype(np.int64) for n in trained}
                weights = {**fixed, **{n: quantization.dequantize(rounded[n], np.float32(steps[n])).reshape(shapes[n])
                                       for n in trained}}
                mse = np.mean([np.mean([np.mean((np.asarray(o[k]) - t[k]) ** 2) for k in measured])
                               for o, t in zip((jitted(weights, i) for i in inputs_cache), target_cache)])
                bits = sum(code_length_table(rounded[n], 0)[1][rounded[n].ravel() - rounded[n].min()].sum()
                           for n in trained)
                return weight * mse / energy + lmbda * bits, bits

            start_loss, start_bits = full_loss(latents)
            tables = tables_of(latents)
            key = jax.random.PRNGKey(options.seed + block.index)
            rng = np.random.default_rng([options.seed, block.index])
            for step in range(options.steps):  # one calibration feed (a batch of samples) per step
                if step and step % options.refit_every == 0:
                    tables = tables_of(latents)
                index = int(rng.integers(len(inputs_cache)))
                inputs, target = inputs_cache[index], target_cache[index]
                key, sub = jax.random.split(key)
                latents, state, _, _ = train_step(latents, state, tables, inputs, target, sub)
            end_loss, end_bits = full_loss(latents)
            changed = 0
            if end_loss < start_loss:  # keep the refinement only where it helps (it can overfit)
                for n in trained:
                    new = np.rint(np.asarray(latents[n])).astype(np.int64).reshape(symbols[n].shape)
                    changed += int(np.sum(new != symbols[n]))
                    symbols[n] = new
            else:
                end_loss, end_bits = start_loss, start_bits
            advance(compressed, {**fixed, **{n: decoded(n) for n in trained}})
            reports.append(BlockReport(block.index, trained, int(sum(symbols[n].size for n in trained)), weight,
                                       float(start_loss), float(end_loss), float(start_bits), float(end_bits),
                                       changed, time.perf_counter() - block_started))
            if checkpoint_dir:
                _save_block(checkpoint_dir, block.index, trained, symbols, reports[-1])
            phase.step(f"block {block.index}: loss {start_loss:.4g} -> {end_loss:.4g}, {changed} integers moved")
    decoded_all = {name: decoded(name) for name in symbols}
    fidelity = calibrator.holdout_fidelity(decoded_all)
    bits = calibrator.estimated_bits(symbols, point.grouped)
    refined = dataclasses.replace(point, symbols=symbols, fidelity=fidelity, bits=bits,
                                  seconds=point.seconds + time.perf_counter() - started)
    return refined, reports


def _initial_latents(integers: np.ndarray, values: np.ndarray, step: float | np.ndarray, init: str) -> np.ndarray:
    """Latents that round to the calibrated integers: at them ("integers"), or moved towards the
    float weight's position (value / step) by up to 0.49 bins ("residual"), so that entries near a
    rounding boundary flip with little push (AdaRound's intuition)."""
    integers = np.asarray(integers, np.float64).reshape(values.shape)
    if init == "integers":
        return integers
    if init != "residual":
        raise ValueError(f"init {init!r}: integers or residual")
    return integers + np.clip(np.asarray(values, np.float64) / np.asarray(step, np.float64) - integers, -0.49, 0.49)


def _distortion_weight(calibrator, trained, decoded, jitted, originals, inputs_cache, target_cache,
                       energy) -> float:
    """Model distortion per unit of normalised block-output error, from this block's quantization alone."""
    alone = {name: decoded(name) for name in trained}
    model_distortion = calibrator.reference_probe.distortion(calibrator.probe_outputs(alone))
    weights = {**{k: np.asarray(v) for k, v in originals.items()}, **alone}
    count = min(len(inputs_cache), 8)
    # the block's own error: its quantized weights on the original network's block inputs
    mse = np.mean([np.mean([np.mean((np.asarray(o[k]) - t[k]) ** 2) for k in t])
                   for o, t in zip((jitted(weights, i) for i in inputs_cache[:count]), target_cache[:count])])
    normalised = mse / energy
    if not (math.isfinite(model_distortion) and normalised > 0):
        return 1.0
    return float(model_distortion / normalised)


def summary(reports: list[BlockReport]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(report) for report in reports]
