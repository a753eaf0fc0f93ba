"""The deep factorized density of Ballé et al. 2018 ("Variational image compression with a scale
hyperprior", ICLR 2018, appendix 6.1), batched over channels, as pure functions.

The CDF is a chain of K = len(filters) + 1 per-channel layers mapping a scalar to a scalar:
    f_k(h) = g_k(H_k h + b_k),  g_k(y) = y + tanh(a_k) * tanh(y)   for k < K,
    c(x)   = sigmoid(H_K h_{K-1} + b_K),
with H_k = softplus(matrix_k) > 0 and tanh(a_k) > -1, so every layer, and hence c, is monotone
increasing. `logits_cdf` returns the argument of the final sigmoid.

Parameters (each with the channel axis first), for layer k with widths d_in -> d_out:
    matrix_k [channels, d_out, d_in], bias_k [channels, d_out], factor_k [channels, d_out] (k < K).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnlc.entropy_models import math

DEFAULT_FILTERS = (3, 3, 3)
DEFAULT_INIT_SCALE = 10.0


def layer_widths(filters: Sequence[int]) -> list[tuple[int, int]]:
    """(d_in, d_out) of each layer: 1 -> filters... -> 1."""
    widths = (1, *filters, 1)
    return list(zip(widths[:-1], widths[1:]))


def initial_matrix(shape: tuple[int, ...], num_layers: int, init_scale: float) -> jax.Array:
    """Constant pre-softplus matrix so that at initialisation c is close to a logistic of scale
    `init_scale`: each layer then averages its inputs and divides by init_scale**(1/num_layers)
    (the gating factors start at 0, so the tanh terms vanish)."""
    fan_in = shape[-1]
    entry = 1.0 / (init_scale ** (1.0 / num_layers) * fan_in)
    return jnp.full(shape, np.log(np.expm1(entry)), dtype=jnp.float32)


def initial_bias(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Biases uniform in [-1/2, 1/2), which breaks the symmetry between hidden units."""
    return jax.random.uniform(rng, shape, jnp.float32, -0.5, 0.5)


def init_params(rng: jax.Array, channels: int, filters: Sequence[int] = DEFAULT_FILTERS,
                init_scale: float = DEFAULT_INIT_SCALE) -> dict[str, jax.Array]:
    """Initial parameters for `channels` independent densities."""
    widths = layer_widths(filters)
    params = {}
    for k, (fan_in, fan_out) in enumerate(widths):
        rng, bias_rng = jax.random.split(rng)
        params[f"matrix_{k}"] = initial_matrix((channels, fan_out, fan_in), len(widths), init_scale)
        params[f"bias_{k}"] = initial_bias(bias_rng, (channels, fan_out))
        if k < len(widths) - 1:
            params[f"factor_{k}"] = jnp.zeros((channels, fan_out), jnp.float32)
    return params


def num_layers(params: dict[str, Any]) -> int:
    return sum(1 for name in params if name.startswith("matrix_"))


def logits_cdf(params: dict[str, Any], x: Any) -> Any:
    """Pre-sigmoid logits of c(x) for x shaped [..., channels] (Ballé et al. 2018, appendix 6.1)."""
    xp = math.array_namespace(params, x)
    layers = num_layers(params)
    hidden = x[..., None]  # [..., channels, 1]
    for k in range(layers):
        matrix = math.softplus(params[f"matrix_{k}"])
        hidden = xp.einsum("...ci,coi->...co", hidden, matrix) + params[f"bias_{k}"]
        if k < layers - 1:
            hidden = hidden + xp.tanh(params[f"factor_{k}"]) * xp.tanh(hidden)
    return hidden[..., 0]


def bits_per_element(params: dict[str, Any], x: jax.Array,
                     likelihood_bound: float = math.DEFAULT_LIKELIHOOD_BOUND) -> jax.Array:
    """-log2 p~(x) per element of x ([..., channels]); see `math.bits_per_element`."""
    return math.bits_per_element(logits_cdf, params, x, likelihood_bound)


def bits(params: dict[str, Any], x: jax.Array,
         likelihood_bound: float = math.DEFAULT_LIKELIHOOD_BOUND) -> jax.Array:
    """Rate in bits of noisy (phi + u) or rounded latents x ([..., channels])."""
    return math.bits(logits_cdf, params, x, likelihood_bound)


def pmf(params: dict[str, Any], support_lower: int, support_upper: int) -> Any:
    """P(k) for k = support_lower..support_upper, shaped [n, channels]."""
    return math.pmf(logits_cdf, params, support_lower, support_upper)


def density(params: dict[str, Any], x: jax.Array) -> jax.Array:
    """The density c'(x) (before convolution with the uniform), by automatic differentiation."""
    return math.density(logits_cdf, params, x)
