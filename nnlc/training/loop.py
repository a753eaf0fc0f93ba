"""The training loop: set up, resume, train with checkpoints and metrics, encode, decode, evaluate.

    result = train_and_evaluate(config, workdir)

Workdir: `config.json`, `metrics.jsonl` (one JSON object per logged step), `checkpoints/` (orbax,
resumed automatically), `model.nnlc` (the bitstream), `decoded.onnx` (standalone decoder output) and
`result.json`. Every file is written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import jax
import numpy as np
import onnx
import orbax.checkpoint as ocp

from nnlc import onnx_io
from nnlc.decoder.files import atomic_write
from nnlc.training import data, final_encode, sharding
from nnlc.training.problem import build_problem, decoded_weights
from nnlc.training.step import (create_train_state, gradient_groups, make_entropy_warmup, make_eval_rate,
                                make_optimizer, make_train_step)


def config_hash(config: Any) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_model(config: Any) -> onnx.ModelProto:
    """The ONNX model to compress: a path, or `zoo:lenet5_digits` / `zoo:lenet300_digits` (trained here)."""
    if config.model.startswith("zoo:"):
        from nnlc.zoo import digits

        architectures = {"zoo:lenet5_digits": "lenet5", "zoo:lenet300_digits": "lenet300"}
        if config.model not in architectures:
            raise ValueError(f"unknown zoo model {config.model!r}: {', '.join(architectures)}")
        params, _ = digits.train_lenet(steps=config.get("float_train_steps", 400),
                                       architecture=architectures[config.model])
        return digits.export_lenet(params)
    return onnx_io.load_model(config.model)


def _write_json(path: str, value: Any) -> None:
    atomic_write(path, json.dumps(value, indent=1, default=float).encode())


class MetricsWriter:
    """Appends one JSON line per logged step (flushed, so a crash loses nothing written).

    On resume, lines after the restored step and a line cut short by a crash are dropped first, so
    the file reads as one uninterrupted run.
    """

    def __init__(self, path: str, resumed_step: int = 0) -> None:
        kept = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as existing:
                for line in existing:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        break
                    if entry.get("step", 0) > resumed_step:
                        break
                    kept.append(line if line.endswith("\n") else line + "\n")
            atomic_write(path, "".join(kept).encode())
        self.handle = open(path, "a", encoding="utf-8")

    def write(self, step: int, metrics: dict) -> None:
        self.handle.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _original_model(workdir: str, config: Any) -> onnx.ModelProto:
    """The model, built once: a zoo model is trained and saved in the workdir so resumes reuse it."""
    path = os.path.join(workdir, "original.onnx")
    if os.path.exists(path):
        return onnx.load(path)
    model = load_model(config)
    atomic_write(path, model.SerializeToString())
    return model


def train_and_evaluate(config: Any, workdir: str, stop_after: int | None = None) -> dict:
    """Runs (or resumes) one rate-distortion training; returns the result dict (None if stopped early)."""
    os.makedirs(workdir, exist_ok=True)
    sharding.maybe_initialize_distributed(config.get("distributed", False))
    gradient_groups(config, jax.device_count())  # a batch / groups / devices mismatch fails here, not later
    _write_json(os.path.join(workdir, "config.json"), config.to_dict())
    model = _original_model(workdir, config)
    rng = jax.random.key(config.seed)
    init_rng, train_rng = jax.random.split(rng)
    problem, params = build_problem(model, config, init_rng)
    if config.get("start_from", ""):  # the calibrated / block-wise point (nnlc.training.start)
        from nnlc.training.start import apply_start, load_start

        params, start_report = apply_start(problem, params, *load_start(config.start_from))
        print(f"{config.start_from}: {start_report.line()}", flush=True)
    fixed_items = final_encode.fixed_tensor_plan(model, set(problem.fixed_weights), config.fixed_qp)
    problem.fixed_weights.update({k: v for k, v in final_encode.decoded_fixed_values(fixed_items).items()
                                  if k in problem.fixed_weights})
    if config.entropy_warmup_steps:
        started = time.perf_counter()
        params = jax.jit(make_entropy_warmup(problem, config))(params, jax.random.fold_in(init_rng, 1))
        rate = float(make_eval_rate(problem)(params))
        print(f"entropy models fitted to the initial latents: {rate:.3f} bits/param "
              f"({config.entropy_warmup_steps} steps, {time.perf_counter() - started:.1f} s)", flush=True)
    optimizer = make_optimizer(config)
    mesh = sharding.data_mesh()
    state = jax.device_put(create_train_state(params, optimizer), sharding.replicated(mesh))
    checkpoints = ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                                        options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    if checkpoints.latest_step() is not None:
        state = checkpoints.restore(checkpoints.latest_step(), args=ocp.args.StandardRestore(state))
        print(f"resumed from step {int(state.step)}", flush=True)
    batches = None
    if config.distortion != "weights":
        batches = data.make_batch_source(config.inputs, model, config.batch_size, config.seed)
    original = {k: np.asarray(v) for k, v in problem.original_weights.items()}
    jitted_apply = jax.jit(problem.apply)
    original_on_device = jax.device_put(original, sharding.replicated(mesh))
    original_forward = lambda inputs: jitted_apply(original_on_device, inputs)  # noqa: E731
    train_step = jax.jit(make_train_step(problem, config, optimizer, mesh), donate_argnums=(0,))
    constants = jax.device_put({"fixed_weights": {k: np.asarray(v) for k, v in problem.fixed_weights.items()},
                                "reference_weights": ({n: original[n] for n in problem.trained}
                                                      if config.distortion == "weights" else {})},
                               sharding.replicated(mesh))
    metrics_writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), int(state.step))
    start, last_log = time.perf_counter(), int(state.step)
    try:
        for step in range(int(state.step), config.num_steps):
            batch = _make_batch(batches, step, config, original_forward)
            batch = {**sharding.shard_batch(batch, mesh, config.batch_size), "constants": constants}
            state, metrics = train_step(state, batch, jax.random.fold_in(train_rng, step))
            done = step + 1
            if done % config.log_every == 0 or done == config.num_steps:
                metrics = jax.device_get(metrics)
                if not np.isfinite(metrics["loss"]):
                    raise FloatingPointError(f"loss is {metrics['loss']} at step {done} "
                                             f"(distortion {metrics['distortion']}, rate {metrics['bits_per_param']}); "
                                             "lower the learning rates or lmbda")
                rate = (done - last_log) / max(1e-9, time.perf_counter() - start)
                start, last_log = time.perf_counter(), done
                metrics_writer.write(done, {**metrics, "steps_per_s": rate})
                print(f"step {done}/{config.num_steps} loss {metrics['loss']:.4f} distortion "
                      f"{metrics['distortion']:.4g} bits/param {metrics['bits_per_param']:.3f}", flush=True)
            if done % config.checkpoint_every == 0 or done == config.num_steps:
                checkpoints.save(done, args=ocp.args.StandardSave(state))
            if stop_after is not None and done >= stop_after:
                checkpoints.wait_until_finished()
                return None
        checkpoints.wait_until_finished()
    finally:
        metrics_writer.close()
    return finish(problem, jax.device_get(state.params), fixed_items, config, workdir, batches, original_forward)


def _make_batch(batches, step: int, config: Any, original_forward) -> dict:
    if batches is None:
        return {}
    batch = batches(step)
    if config.distortion == "distill":
        outputs = original_forward(batch["inputs"])
        name = config.output_name or next(iter(outputs))
        batch["targets"] = np.asarray(outputs[name])
        if config.distill_loss == "mse":  # the normaliser, once per batch in float64 (step.distortion)
            batch["target_mean_square"] = np.float32(np.mean(np.square(batch["targets"], dtype=np.float64)))
    return batch


def finish(problem, params, fixed_items, config, workdir: str, batches, original_forward) -> dict:
    """Encode, decode with the standalone decoder, check the decoded network, evaluate, write result."""
    from nnlc.decoder import decode_bitstream

    started = time.perf_counter()
    encoded = final_encode.encode_problem(problem, params, fixed_items, producer=f"nnlc learned lmbda={config.lmbda}",
                                          tables=config.coding_tables, rounding=config.final_rounding,
                                          rdo_tradeoff=config.rdo_tradeoff)
    encode_s = time.perf_counter() - started
    atomic_write(os.path.join(workdir, "model.nnlc"), encoded.bitstream)
    started = time.perf_counter()
    decoded = decode_bitstream(encoded.bitstream)
    decode_s = time.perf_counter() - started
    atomic_write(os.path.join(workdir, "decoded.onnx"), decoded.SerializeToString())
    float_params = sum(r.array.size for r in problem.records.values())
    result = {"config_hash": config_hash(config), "lmbda": config.lmbda, "encode_s": encode_s, "decode_s": decode_s,
              **final_encode.rate_report(encoded, problem),
              "float_bytes": int(sum(r.array.nbytes for r in problem.records.values())),
              "bits_per_param": 8 * encoded.total_bytes / max(1, float_params),
              "rate_estimate_bits_per_param": float(make_eval_rate(problem)(params))}
    result["ratio"] = result["bytes"] / result["float_bytes"]
    if batches is not None:
        batch = _make_batch(batches, 10 ** 6, config, original_forward)
        trained = problem.apply(decoded_weights(problem, params, rounding="round"), batch["inputs"])
        reference = {k: np.asarray(v) for k, v in trained.items()}
        from nnlc.graph import from_onnx

        decoded_apply, decoded_weights_dict = from_onnx(decoded)
        outputs = decoded_apply(decoded_weights_dict, batch["inputs"])
        result["decoded_vs_trained_max_abs_diff"] = float(max(np.max(np.abs(np.asarray(outputs[k]) - reference[k]))
                                                              for k in reference))
    from nnlc.training.evaluation import evaluate

    result["evaluation"] = evaluate(config, os.path.join(workdir, "original.onnx"), os.path.join(workdir, "decoded.onnx"))
    _write_json(os.path.join(workdir, "result.json"), result)
    return result
