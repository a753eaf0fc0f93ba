"""The pure, jitted training step: loss = distortion + lmbda * rate, rate in bits per parameter.

Units: `rate` is bits per trained parameter (so lmbda means the same across models; DESIGN.md §4).
`distortion` is, by mode: `supervised` cross-entropy (nats) against labels; `distill` KL(original ||
current) in nats for classifier-like outputs (`distill_loss='kl'`) or output MSE normalised by the
original outputs' mean square (`'mse'`); `weights` (data-free) sum of squared weight errors over the
sum of squared weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from nnlc.training.problem import Problem, decoded_weights, rate_bits


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def make_optimizer(config: Any) -> optax.GradientTransformation:
    """Adam per parameter kind: latents, decoder steps and entropy models each get their own rate."""
    transforms = {
        "latents": optax.adam(config.learning_rate_latents),
        "decoder": optax.adam(config.learning_rate_decoder),
        "entropy": optax.adam(config.learning_rate_entropy),
    }
    return optax.multi_transform(transforms, {"latents": "latents", "decoder": "decoder", "entropy": "entropy"})


def create_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params))


def distortion(problem: Problem, config: Any, weights: dict, batch: dict) -> jax.Array:
    """Distortion of the current weights (see the module docstring for units).

    `batch["constants"]` holds arrays that are the same every step (the original and the fixed
    weights), passed as arguments so they are not compiled in as constants.
    """
    mode = config.distortion
    if mode == "weights":
        reference = batch["constants"]["reference_weights"]
        errors = [jnp.sum((weights[n] - reference[n]) ** 2) for n in problem.trained]
        energy = sum(float((problem.records[n].array.astype("float64") ** 2).sum()) for n in problem.trained)
        return sum(errors) / max(energy, 1e-30)
    outputs = problem.apply(weights, batch["inputs"])
    output = outputs[config.output_name] if config.output_name else next(iter(outputs.values()))
    if mode == "supervised":
        return optax.softmax_cross_entropy_with_integer_labels(output, batch["labels"]).mean()
    if mode == "distill":
        target = batch["targets"]
        if config.distill_loss == "kl":
            return jnp.mean(jnp.sum(jax.nn.softmax(target) * (jax.nn.log_softmax(target) - jax.nn.log_softmax(output)),
                                    axis=-1))
        return jnp.mean((output - target) ** 2) / (jnp.mean(target ** 2) + 1e-12)
    raise ValueError(f"unknown distortion {mode!r}: supervised, distill or weights")


def make_train_step(problem: Problem, config: Any, optimizer: optax.GradientTransformation) -> Callable:
    """train_step(state, batch, rng) -> (state, metrics); pure, meant for jax.jit."""

    def loss_fn(params, batch, rng):
        weights = decoded_weights(problem, params, rounding="ste", fixed_weights=batch["constants"]["fixed_weights"])
        dist = distortion(problem, config, weights, batch)
        rate = rate_bits(problem, params, rng) / problem.trained_params
        return dist + config.lmbda * rate, {"distortion": dist, "bits_per_param": rate}

    def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def make_eval_rate(problem: Problem) -> Callable:
    """Bits per parameter of the rounded latents under the current densities (no noise)."""
    return jax.jit(lambda params: rate_bits(problem, params, None) / problem.trained_params)


def make_entropy_warmup(problem: Problem, config: Any) -> Callable:
    """warmup(params, rng) -> params: fits the entropy models to the initial latents (rate only,
    latents and decoders frozen), so the first training steps see a meaningful rate."""
    optimizer = optax.adam(config.learning_rate_entropy)

    def rate_of(entropy_params, params, rng):
        return rate_bits(problem, {**params, "entropy": entropy_params}, rng) / problem.trained_params

    def one_step(carry, rng):
        entropy_params, opt_state, params = carry
        grads = jax.grad(rate_of)(entropy_params, params, rng)
        updates, opt_state = optimizer.update(grads, opt_state, entropy_params)
        return (optax.apply_updates(entropy_params, updates), opt_state, params), None

    def warmup(params: Any, rng: jax.Array) -> Any:
        entropy_params = params["entropy"]
        keys = jax.random.split(rng, config.entropy_warmup_steps)
        (entropy_params, _, _), _ = jax.lax.scan(one_step, (entropy_params, optimizer.init(entropy_params), params), keys)
        return {**params, "entropy": entropy_params}

    return warmup
