"""Framework-free math shared by every entropy model: rounding, noise, bounds, bin probabilities, bits.

Every density is described by one function `logits_cdf(params, x)`: the pre-sigmoid logits of its
cumulative distribution, c(x) = sigmoid(logits_cdf(params, x)), evaluated elementwise on x shaped
[..., channels] (the channel axis is last; every params leaf has the channel axis first). Working
with CDF logits instead of CDF values keeps both tails accurate: c(x) close to 1 is represented by
a large logit, not by a float that has rounded to 1.

The same functions run under jax.numpy (training, differentiable, float32) and under numpy (coding
tables, float64): `array_namespace` picks numpy when every input is a numpy array or a Python
number. Rates are in bits throughout.

References: Ballé, Minnen, Singh, Hwang, Johnston, "Variational image compression with a scale
hyperprior", ICLR 2018 (noise-convolved densities, appendix 6.1); Oktay, Ballé, Singh, Shrivastava,
"Scalable Model Compression by Entropy Penalized Reparameterization", ICLR 2020 (rate term, STE).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = Any  # a pytree of arrays, each with the channel axis first
LogitsCdf = Callable[[Params, Any], Any]

DEFAULT_LIKELIHOOD_BOUND = 1e-9
# Smallest CDF-logit difference used in log-space bin probabilities: keeps log(-expm1(-d)) and its
# gradient finite when two logits are equal in floating point.
_MIN_LOGIT_GAP = 1e-30
_LN2 = float(np.log(2.0))  # a Python float: keeps jax arrays in their own dtype


def array_namespace(*trees: Any) -> ModuleType:
    """numpy when every leaf of `trees` is a numpy array or Python number, else jax.numpy."""
    leaves = jax.tree.leaves(trees)
    if all(isinstance(leaf, (np.ndarray, np.generic, int, float)) for leaf in leaves):
        return np
    return jnp


def softplus(x: Any) -> Any:
    """log(1 + exp(x)), without overflow."""
    xp = array_namespace(x)
    return xp.logaddexp(xp.zeros_like(x), x)


def log_sigmoid(x: Any) -> Any:
    """log(sigmoid(x)) = -softplus(-x): accurate in both tails."""
    return -softplus(-x)


def sigmoid(x: Any) -> Any:
    """1 / (1 + exp(-x)), with full relative precision for very negative x."""
    xp = array_namespace(x)
    return xp.exp(log_sigmoid(x))


# ----------------------------------------------------------------------------------------------
# Training-time operations on latents (jax only).


def ste_round(x: jax.Array) -> jax.Array:
    """Rounds to the nearest integer (ties to even); the gradient is the identity (straight-through
    estimator, as the forward pass of Oktay et al. 2020 uses rounded latents)."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def add_uniform_noise(x: jax.Array, rng: jax.Array) -> jax.Array:
    """x + u with u ~ U(-1/2, 1/2) i.i.d.: the differentiable stand-in for rounding in the rate
    term (Ballé et al. 2018, sec. 2)."""
    noise = jax.random.uniform(rng, jnp.shape(x), jnp.result_type(x), -0.5, 0.5)
    return x + noise


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _bounded(x: jax.Array, bound: float, always_pass: bool) -> jax.Array:
    return jnp.maximum(x, bound)


def _bounded_forward(x, bound, always_pass):
    return jnp.maximum(x, bound), x


def _bounded_backward(bound, always_pass, x, cotangent):
    if always_pass:
        return (cotangent,)
    # A gradient-descent step moves x by -cotangent: let it through when x is above the bound or
    # when that step pushes x up towards it.
    passes = (x >= bound) | (cotangent < 0)
    return (jnp.where(passes, cotangent, jnp.zeros_like(cotangent)),)


_bounded.defvjp(_bounded_forward, _bounded_backward)


def lower_bound(x: jax.Array, bound: float, gradient: str = "identity_if_towards") -> jax.Array:
    """max(x, bound) with a gradient that does not vanish below the bound.

    gradient: "identity_if_towards" passes the gradient where x >= bound or where descent would
    push x up towards the bound (so a likelihood stuck at the bound can still recover);
    "identity" always passes it (straight-through); "disconnected" is plain max (zero below).
    """
    if gradient == "disconnected":
        return jnp.maximum(x, bound)
    if gradient not in ("identity", "identity_if_towards"):
        raise ValueError(f"unknown gradient mode {gradient!r}")
    return _bounded(x, bound, gradient == "identity")


# ----------------------------------------------------------------------------------------------
# Probabilities of unit-width bins from CDF logits (jax or numpy).


def bin_probabilities(logits_lower: Any, logits_upper: Any) -> Any:
    """c(upper) - c(lower) from CDF logits, by the sign-flip trick.

    Where the bin sits in the upper tail (logits_lower + logits_upper > 0) both CDF values are
    close to 1 and their difference would cancel; there we compute it as the difference of
    survival functions sigmoid(-l) - sigmoid(-u) instead, which are small and exact. By symmetry
    the result is |sigmoid(s*u) - sigmoid(s*l)| with s = -sign(l + u).
    """
    xp = array_namespace(logits_lower, logits_upper)
    sign = xp.where(logits_lower + logits_upper > 0, -1.0, 1.0).astype(xp.result_type(logits_upper))
    return xp.abs(sigmoid(sign * logits_upper) - sigmoid(sign * logits_lower))


def log_bin_probabilities(logits_lower: Any, logits_upper: Any) -> Any:
    """log(c(upper) - c(lower)) from CDF logits l <= u, in log space.

    sigmoid(u) - sigmoid(l) = sigmoid(u) * sigmoid(-l) * (1 - exp(l - u)), so
    log P = log_sigmoid(u) + log_sigmoid(-l) + log(-expm1(l - u)): no cancellation in either tail.
    """
    xp = array_namespace(logits_lower, logits_upper)
    gap = xp.maximum(logits_upper - logits_lower, _MIN_LOGIT_GAP)
    return log_sigmoid(logits_upper) + log_sigmoid(-logits_lower) + xp.log(-xp.expm1(-gap))


def log_noisy_likelihood(logits_cdf: LogitsCdf, params: Params, x: Any) -> Any:
    """log p~(x) of the density convolved with a unit uniform: p~(x) = c(x + 1/2) - c(x - 1/2)
    (Ballé et al. 2018, eq. 7 and appendix 6.1). At integers this is the bin probability P(k)."""
    return log_bin_probabilities(logits_cdf(params, x - 0.5), logits_cdf(params, x + 0.5))


def bits_per_element(logits_cdf: LogitsCdf, params: Params, x: jax.Array,
                     likelihood_bound: float = DEFAULT_LIKELIHOOD_BOUND) -> jax.Array:
    """-log2 max(p~(x), likelihood_bound) for each element of x ([..., channels]).

    x are noisy latents (phi + u) for the training rate, or rounded latents for the rate of the
    integers actually coded. The likelihood is bounded in probability space with the
    identity-if-towards gradient, so a latent far in the tail still pulls the density towards it.
    likelihood_bound = 0 gives the unbounded rate, computed in log space.
    """
    log_likelihood = log_noisy_likelihood(logits_cdf, params, x)
    if likelihood_bound <= 0:  # unbounded: stay in log space, finite however far the tail
        return -log_likelihood / _LN2
    return -jnp.log2(lower_bound(jnp.exp(log_likelihood), likelihood_bound))


def bits(logits_cdf: LogitsCdf, params: Params, x: jax.Array,
         likelihood_bound: float = DEFAULT_LIKELIHOOD_BOUND) -> jax.Array:
    """Rate in bits of all elements of x: -sum log2 p~(x) (Oktay et al. 2020, eq. 3)."""
    return jnp.sum(bits_per_element(logits_cdf, params, x, likelihood_bound))


def pmf(logits_cdf: LogitsCdf, params: Params, support_lower: int, support_upper: int) -> Any:
    """P(k) = c(k + 1/2) - c(k - 1/2) for the integers k = support_lower..support_upper (inclusive),
    shaped [support_upper - support_lower + 1, channels]. numpy float64 when params are numpy."""
    xp = array_namespace(params)
    channels = jax.tree.leaves(params)[0].shape[0]
    dtype = xp.result_type(*jax.tree.leaves(params))
    integers = xp.arange(support_lower, support_upper + 1).astype(dtype)
    grid = xp.broadcast_to(integers[:, None], (integers.shape[0], channels))
    return xp.exp(log_noisy_likelihood(logits_cdf, params, grid))


def density(logits_cdf: LogitsCdf, params: Params, x: jax.Array) -> jax.Array:
    """The density c'(x) before convolution with the uniform (jax, by automatic differentiation)."""
    total_cdf = lambda value: jnp.sum(jax.nn.sigmoid(logits_cdf(params, value)))
    return jax.grad(total_cdf)(x)


# ----------------------------------------------------------------------------------------------
# Quantiles by bisection (numpy float64, coding mode).


def quantiles(logits_cdf: LogitsCdf, params: Params, probabilities: Any, **kwargs: Any) -> np.ndarray:
    """x with c(x) = probability for each channel, shaped [len(probabilities), channels].

    For probabilities close to 1 prefer `quantiles_at_logits` with -logit(1 - q): 1 - 1e-9 is not
    exact in float64, and its error shifts the quantile by about 1e-7 relative.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if np.any((probabilities <= 0) | (probabilities >= 1)):
        raise ValueError("quantile probabilities must lie strictly between 0 and 1")
    return quantiles_at_logits(logits_cdf, params, np.log(probabilities) - np.log1p(-probabilities),
                               **kwargs)


def quantiles_at_logits(logits_cdf: LogitsCdf, params: Params, target_logits: Any,
                        max_magnitude: float = 2.0**40, iterations: int = 100) -> np.ndarray:
    """x with logits_cdf(x) = target for each target logit and channel ([len(targets), channels]).

    A robust alternative to the auxiliary quantile loss of tensorflow-compression: c is monotone,
    so after training we bracket each quantile by doubling an interval around 0 and bisect on the
    CDF logits in numpy float64 (targets as logits keep q = 1e-9 and 1 - 1e-9 exact).
    Raises ValueError when a quantile lies beyond +-max_magnitude.
    """
    params = jax.tree.map(lambda leaf: np.asarray(leaf, dtype=np.float64), params)
    target_logits = np.asarray(target_logits, dtype=np.float64)
    channels = jax.tree.leaves(params)[0].shape[0]
    targets = np.broadcast_to(target_logits[:, None], (target_logits.size, channels))
    low = np.full(targets.shape, -1.0)
    high = np.full(targets.shape, 1.0)
    while np.any(too_high := logits_cdf(params, low) > targets):
        if np.max(np.abs(low[too_high])) >= max_magnitude:
            raise ValueError(f"a quantile lies below -{max_magnitude:g}")
        low = np.where(too_high, 2.0 * low, low)
    while np.any(too_low := logits_cdf(params, high) < targets):
        if np.max(high[too_low]) >= max_magnitude:
            raise ValueError(f"a quantile lies above {max_magnitude:g}")
        high = np.where(too_low, 2.0 * high, high)
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        below = logits_cdf(params, middle) < targets
        low = np.where(below, middle, low)
        high = np.where(below, high, middle)
    return 0.5 * (low + high)
