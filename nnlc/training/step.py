"""The pure, jitted training step: loss = distortion + lmbda * rate, rate in bits per parameter.

Units: `rate` is bits per trained parameter (so lmbda means the same across models; DESIGN.md §4).
`distortion` is, by mode: `supervised` cross-entropy (nats) against labels; `distill` KL(original ||
current) in nats for classifier-like outputs (`distill_loss='kl'`) or output MSE normalised by the
original outputs' mean square (`'mse'`); `weights` (data-free) sum of squared weight errors over the
sum of squared weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec

from nnlc.training import sharding
from nnlc.training.data import SEQUENTIAL_INPUTS
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
        # the batch's mean square (computed once on the host), so that every gradient group has
        # the same normaliser and the loss is the batch's, however the batch is split
        mean_square = batch["target_mean_square"] if "target_mean_square" in batch else jnp.mean(target ** 2)
        return jnp.mean((output - target) ** 2) / (mean_square + 1e-12)
    raise ValueError(f"unknown distortion {mode!r}: supervised, distill or weights")


def make_train_step(problem: Problem, config: Any, optimizer: optax.GradientTransformation,
                    mesh: Mesh | None = None) -> Callable:
    """train_step(state, batch, rng) -> (state, metrics); pure, meant for jax.jit.

    With `config.gradient_groups` = G > 0 (the default), the gradient does not depend on how many
    devices share the batch, so 1, 2, 4, ... devices (or hosts) train the same parameters bit for bit
    and write the same bitstream. A plain batch mean split over devices is not like that: each device
    sums its own rows and an all-reduce adds the partial sums, in an order that depends on the device
    count, and the last bits of the gradient drift. Instead the global batch is cut into G groups of
    consecutive rows; each device computes the distortion gradient of its G / devices groups one
    after the other (`lax.map`, the same program for every group), the per-group gradients with
    respect to the decoded weights are gathered onto every device ([G, ...]) and summed there in one
    fixed pairwise order (elementwise adds, which no partitioning can reorder); the decoders and the
    rate (replicated, no batch) are then differentiated once. Costs: G smaller forward/backward
    passes instead of one, and a [G, weights] gather. Rows must be independent examples (not the
    time steps of one sequence); G = 0 turns grouping off (plain batch mean, split by XLA).
    """
    mesh = mesh if mesh is not None else sharding.data_mesh()
    devices = mesh.devices.size
    groups = gradient_groups(config, devices)
    if not groups:
        return _make_plain_train_step(problem, config, optimizer)
    batch_size = int(config.batch_size)
    lmbda = float(config.lmbda)

    def decode_and_rate(params, fixed_weights, rng):
        weights = decoded_weights(problem, params, rounding="ste", fixed_weights=fixed_weights)
        rate = rate_bits(problem, params, rng) / problem.trained_params
        return {name: weights[name] for name in problem.trained}, rate

    def local_step(in_batch, params, data, constants, rng):
        """Per device (inside shard_map): this device's groups, then the replicated rest. `in_batch`
        flags the leaves of `data` that are split into groups (the others go whole to every group)."""
        (trained, rate), pullback = jax.vjp(lambda p: decode_and_rate(p, constants["fixed_weights"], rng), params)
        fixed = {k: v for k, v in constants["fixed_weights"].items() if k not in trained}
        leaves, treedef = jax.tree.flatten(data)
        local_groups = groups // devices
        grouped = [leaf.reshape((local_groups, -1) + leaf.shape[1:]) for leaf, b in zip(leaves, in_batch) if b]

        def group_loss(trained_weights, group_leaves):
            it = iter(group_leaves)
            group = jax.tree.unflatten(treedef, [next(it) if b else leaf for leaf, b in zip(leaves, in_batch)])
            return distortion(problem, config, {**fixed, **trained_weights}, {**group, "constants": constants})

        # differentiate w.r.t. a per-device ('varying') copy: the gradient of a replicated value
        # would be psummed over the devices (in an order of XLA's choosing), the very thing avoided here
        per_device = jax.tree.map(lambda w: jax.lax.pcast(w, "data", to="varying"), trained)
        index = jnp.arange(local_groups)  # sets the length even if no leaf is split (all replicated)
        dists, weight_grads = jax.lax.map(lambda g: jax.value_and_grad(group_loss)(per_device, g[0]), (grouped, index))
        dists, weight_grads = jax.lax.all_gather((dists, weight_grads), "data", tiled=True, to="invarying")
        dist = fixed_order_sum(dists) / groups
        weight_grads = jax.tree.map(lambda g: fixed_order_sum(g) / groups, weight_grads)
        (grads,) = pullback((weight_grads, jnp.asarray(lmbda, rate.dtype)))
        return dist + lmbda * rate, {"distortion": dist, "bits_per_param": rate}, grads

    def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
        data = {k: v for k, v in batch.items() if k != "constants"}
        in_batch = [sharding.is_batch_array(leaf, batch_size) for leaf in jax.tree.leaves(data)]
        data_specs = jax.tree.unflatten(jax.tree.structure(data),
                                        [PartitionSpec("data") if b else PartitionSpec() for b in in_batch])
        grouped_step = jax.shard_map(
            functools.partial(local_step, in_batch), mesh=mesh, out_specs=PartitionSpec(),
            in_specs=(PartitionSpec(), data_specs, PartitionSpec(), PartitionSpec()))
        loss, metrics, grads = grouped_step(state.params, data, batch["constants"], rng)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {**metrics, "loss": loss, "grad_norm": optax.tree.norm(grads)}
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def gradient_groups(config: Any, devices: int) -> int:
    """The number of gradient groups of a run on `devices` devices (0: the plain step); raises
    ValueError early when the batch, the groups and the devices do not fit together."""
    groups = int(config.get("gradient_groups", 0) or 0)
    if groups <= 0 or config.distortion == "weights":  # weights: no batch, nothing to regroup
        return 0
    if config.get("inputs") in SEQUENTIAL_INPUTS:
        raise ValueError(f"inputs={config.inputs!r}: the rows of a batch are the time steps of one sequence and "
                         "cannot be split into gradient groups; set gradient_groups=0")
    if config.batch_size % groups:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by gradient_groups {groups}")
    if groups % devices:
        raise ValueError(f"gradient_groups {groups} is not divisible by the device count {devices}: use a multiple "
                         f"of {devices} (or gradient_groups=0, which gives up bit-identical results across "
                         "device counts)")
    return groups


def fixed_order_sum(values: jax.Array) -> jax.Array:
    """Sum over axis 0 as a fixed pairwise tree of elementwise adds: ((v0 + v1) + (v2 + v3)) + ...

    XLA may split or reorder a `reduce` (and does, across devices); elementwise adds of slices give
    the same bits wherever and however they are computed.
    """
    while values.shape[0] > 1:
        pairs = values[0:values.shape[0] // 2 * 2:2] + values[1::2]
        values = jnp.concatenate([pairs, values[-1:]]) if values.shape[0] % 2 else pairs
    return values[0]


def _make_plain_train_step(problem: Problem, config: Any, optimizer: optax.GradientTransformation) -> Callable:
    """The batch-mean step without groups (`gradient_groups=0`, and data-free `weights` runs)."""

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
