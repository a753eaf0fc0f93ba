"""Laplace and logistic densities with a learned location and scale per channel, for ablations
against the deep factorized density. Same interface: `logits_cdf(params, x)` with x shaped
[..., channels]; params {"loc": [channels], "log_scale": [channels]}.

Both are expressed through their CDF logits so that they share the stable bin probabilities of
`nnlc.entropy_models.math`:
    logistic: c(x) = sigmoid(z),                         logit = z,
    Laplace:  c(x) = exp(z) / 2 (z < 0), 1 - exp(-z) / 2 (z >= 0),
              logit = z - log 2 - log1p(-exp(z) / 2) (z < 0), z + log 2 + log1p(-exp(-z) / 2) (z >= 0),
with z = (x - loc) / scale. (The Laplace logit follows from logit(c) = log c - log(1 - c) on each
half; it is continuous with a continuous derivative at z = 0, and grows like z in the tails.)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnlc.entropy_models import math

DEFAULT_INIT_SCALE = 10.0
MIN_SCALE = 1e-3  # keeps z finite when a channel's latents are all equal
_LN2 = float(np.log(2.0))


def init_params(channels: int, init_scale: float = DEFAULT_INIT_SCALE) -> dict[str, jax.Array]:
    """Location 0 and scale `init_scale` for every channel."""
    return {"loc": jnp.zeros((channels,), jnp.float32),
            "log_scale": jnp.full((channels,), np.log(init_scale), jnp.float32)}


def _standardized(params: dict[str, Any], x: Any) -> Any:
    """z = (x - loc) / scale, with scale = exp(log_scale) bounded below by MIN_SCALE."""
    xp = math.array_namespace(params, x)
    scale = xp.exp(params["log_scale"])
    scale = np.maximum(scale, MIN_SCALE) if xp is np else math.lower_bound(scale, MIN_SCALE)
    return (x - params["loc"]) / scale


def laplace_logits_cdf(params: dict[str, Any], x: Any) -> Any:
    """Pre-sigmoid logits of the Laplace CDF, accurate in both tails."""
    xp = math.array_namespace(params, x)
    z = _standardized(params, x)
    below = z < 0
    # Each half evaluated on its own side of 0 only, so the branch not taken cannot overflow and
    # the derivative at z = 0 is the true one (2), not that of sign(z).
    z_below, z_above = xp.where(below, z, 0.0), xp.where(below, 0.0, z)
    logits_below = z_below - _LN2 - xp.log1p(-0.5 * xp.exp(z_below))
    logits_above = z_above + _LN2 + xp.log1p(-0.5 * xp.exp(-z_above))
    return xp.where(below, logits_below, logits_above)


def logistic_logits_cdf(params: dict[str, Any], x: Any) -> Any:
    """Pre-sigmoid logits of the logistic CDF: just the standardized value."""
    return _standardized(params, x)


def _family(logits_cdf_fn):
    """bits_per_element, bits and pmf bound to one family's CDF logits."""

    def bits_per_element(params: dict[str, Any], x: jax.Array,
                         likelihood_bound: float = math.DEFAULT_LIKELIHOOD_BOUND) -> jax.Array:
        return math.bits_per_element(logits_cdf_fn, params, x, likelihood_bound)

    def bits(params: dict[str, Any], x: jax.Array,
             likelihood_bound: float = math.DEFAULT_LIKELIHOOD_BOUND) -> jax.Array:
        return math.bits(logits_cdf_fn, params, x, likelihood_bound)

    def pmf(params: dict[str, Any], support_lower: int, support_upper: int) -> Any:
        return math.pmf(logits_cdf_fn, params, support_lower, support_upper)

    return bits_per_element, bits, pmf


laplace_bits_per_element, laplace_bits, laplace_pmf = _family(laplace_logits_cdf)
logistic_bits_per_element, logistic_bits, logistic_pmf = _family(logistic_logits_cdf)
