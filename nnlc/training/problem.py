"""An ONNX model set up for rate-distortion training: latents, decoders, entropy models, forward pass.

Parameters are one pytree: {"latents": {name: phi}, "decoder": {name: {...}}, "entropy": {group: ...}}.
The forward pass uses straight-through rounded latents, theta = D(round(phi)); the rate uses the
learned density of phi + u, u ~ U(-1/2, 1/2) (Oktay et al., ICLR 2020, §3; Ballé et al. 2018).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from nnlc import onnx_io
from nnlc.entropy_models.math import add_uniform_noise
from nnlc.reparam.reparameterization import Reparameterization
from nnlc.training import entropy


@dataclasses.dataclass
class Problem:
    """Everything static about one model's training (no arrays that change)."""

    model: onnx.ModelProto
    records: dict[str, onnx_io.TensorRecord]
    plan: dict[str, Any]  # name -> reparam.TensorPlan, for the trained tensors
    apply: Callable[[Mapping[str, jax.Array], Mapping[str, jax.Array]], dict[str, jax.Array]]
    fixed_weights: dict[str, np.ndarray]  # tensors that are not trained (stay as they are)
    trained: list[str]  # names of the tensors with latents
    group_of: dict[str, str]  # entropy-model group of each trained tensor
    entropy_family: str
    trained_params: int
    initial_log_steps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # step_scaled latents

    @property
    def original_weights(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(record.array, np.float32) for name, record in self.records.items()}


def build_problem(model: onnx.ModelProto, config: Any, rng: jax.Array) -> tuple[Problem, dict]:
    """Sets up the reparameterization of every float tensor and initial parameters."""
    from nnlc.graph import from_onnx

    apply, _ = from_onnx(model)
    records = onnx_io.find_float_tensors(model)
    latents, decoder_params, plan = Reparameterization.init(records, config.reparam.to_dict())
    trained = [name for name in records if name in latents]
    fixed = {name: np.asarray(records[name].array) for name in records if name not in latents}
    plan = {name: plan[name] for name in trained}
    decoder_params = {name: decoder_params[name] for name in trained}
    group_of = {name: plan[name].group for name in trained}
    init_entropy, _, _ = entropy.family(config.entropy_model)
    groups = sorted(set(group_of.values()))
    keys = jax.random.split(rng, max(1, len(groups)))
    entropy_params = {group: init_entropy(key, 1) for group, key in zip(groups, keys)}
    params = {"latents": {k: jnp.asarray(v, jnp.float32) for k, v in latents.items()},
              "decoder": jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), decoder_params),
              "entropy": entropy_params}
    count = int(sum(records[name].array.size for name in trained))
    initial = {}
    if config.get("latent_units", "step_scaled") == "step_scaled":
        initial = {name: np.asarray(decoder_params[name]["log_step"], np.float32) for name in trained
                   if plan[name].trains_step}
    elif config.latent_units != "bins":
        raise ValueError(f"latent_units {config.latent_units!r}: step_scaled or bins")
    problem = Problem(model, records, plan, apply, fixed, trained, group_of, config.entropy_model, count, initial)
    return problem, params


def _broadcast_step(kind: str, log_step: jax.Array, ndim: int) -> jax.Array:
    if kind == "channel":
        return log_step.reshape((-1,) + (1,) * (ndim - 1))
    return log_step  # scalar: [], dct: the spatial shape, which broadcasts over [O, I]


def effective_latents(problem: Problem, params: dict) -> dict[str, jax.Array]:
    """The latents the decoders and entropy models see.

    'bins' (EPR's original): the free parameters phi themselves. 'step_scaled' (default): the free
    parameters are latents at the initial step, phi = phi0 * step0 / step, so that growing a step
    shrinks its latents and the rate responds to the step directly (like learned step sizes in
    quantization-aware training); the coded integers are round(phi) either way.
    """
    latents = dict(params["latents"])
    for name, log_step0 in problem.initial_log_steps.items():
        kind = problem.plan[name].kind
        log_step = params["decoder"][name]["log_step"]
        scale = jnp.exp(_broadcast_step(kind, log_step0 - log_step, latents[name].ndim))
        latents[name] = latents[name] * scale
    return latents


def decoded_weights(problem: Problem, params: dict, rounding: str = "ste",
                    fixed_weights: dict | None = None) -> dict[str, jax.Array]:
    """theta = D(round(phi)) for trained tensors (STE gradient), plus the fixed tensors.

    Pass `fixed_weights` as traced arrays inside jitted code: closing over large numpy arrays would
    bake them into the compiled program as constants (slow to compile).
    """
    latents = effective_latents(problem, params)
    if rounding == "round":  # the forward pass without gradient tricks: decoders of rounded latents
        latents, rounding = {name: jnp.round(phi) for name, phi in latents.items()}, "none"
    weights = Reparameterization.weights(latents, params["decoder"], problem.plan, rounding=rounding)
    fixed = problem.fixed_weights if fixed_weights is None else fixed_weights
    return {**{k: jnp.asarray(v) for k, v in fixed.items()}, **weights}


def rate_bits(problem: Problem, params: dict, rng: jax.Array | None) -> jax.Array:
    """Total bits of the latents under their entropy models: noisy latents when `rng` is given
    (training), rounded latents otherwise (what the coder will spend, up to table quantization)."""
    _, bits, _ = entropy.family(problem.entropy_family)
    total = jnp.zeros((), jnp.float32)
    keys = jax.random.split(rng, len(problem.trained)) if rng is not None else [None] * len(problem.trained)
    latents = effective_latents(problem, params)
    for name, key in zip(problem.trained, keys):
        phi = latents[name].reshape(-1, 1)
        x = add_uniform_noise(phi, key) if key is not None else jnp.round(phi)
        total = total + bits(params["entropy"][problem.group_of[name]], x)
    return total
