"""Thin Flax shells over the entropy-model math: they declare parameters and call pure functions.

Every module maps latents x shaped [..., channels] (channel axis LAST; one independent density per
channel) to bits per element, -log2 p~(x) with p~(x) = c(x + 1/2) - c(x - 1/2) the density
convolved with a unit uniform. Pass noisy latents (phi + u, `add_uniform_noise`) for the training
rate, rounded latents for the rate of what is coded. The module adds no noise itself.

Each module also exposes, without binding:
    logits_cdf(params, x)                  the pure CDF-logits function (used by coding mode);
    pmf(params, support_lower, support_upper) -> [n, channels] bin probabilities,
where params is the module's own "params" collection (e.g. variables["params"], or the subtree of a
larger model's params under this module's name).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax

from nnlc.entropy_models import deep_factorized, math, parametric


class DeepFactorized(nn.Module):
    """Deep factorized density (Ballé et al. 2018, appendix 6.1), one per channel."""

    channels: int
    filters: Sequence[int] = deep_factorized.DEFAULT_FILTERS
    init_scale: float = deep_factorized.DEFAULT_INIT_SCALE
    likelihood_bound: float = math.DEFAULT_LIKELIHOOD_BOUND

    logits_cdf = staticmethod(deep_factorized.logits_cdf)

    def _params(self) -> dict[str, jax.Array]:
        widths = deep_factorized.layer_widths(self.filters)
        layers, scale = len(widths), self.init_scale
        params = {}
        for k, (fan_in, fan_out) in enumerate(widths):
            params[f"matrix_{k}"] = self.param(
                f"matrix_{k}", lambda _, shape: deep_factorized.initial_matrix(shape, layers, scale),
                (self.channels, fan_out, fan_in))
            params[f"bias_{k}"] = self.param(f"bias_{k}", deep_factorized.initial_bias,
                                             (self.channels, fan_out))
            if k < layers - 1:
                params[f"factor_{k}"] = self.param(f"factor_{k}", nn.initializers.zeros_init(),
                                                   (self.channels, fan_out))
        return params

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Bits per element of x ([..., channels])."""
        return deep_factorized.bits_per_element(self._params(), x, self.likelihood_bound)

    def pmf(self, params: dict[str, Any], support_lower: int, support_upper: int) -> Any:
        return deep_factorized.pmf(params, support_lower, support_upper)


class _LocationScale(nn.Module):
    """Shared shell of the location-scale families: loc and log_scale per channel."""

    channels: int
    init_scale: float = parametric.DEFAULT_INIT_SCALE
    likelihood_bound: float = math.DEFAULT_LIKELIHOOD_BOUND

    def _params(self) -> dict[str, jax.Array]:
        initial = parametric.init_params(self.channels, self.init_scale)
        return {name: self.param(name, lambda _, value=value: value) for name, value in initial.items()}

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Bits per element of x ([..., channels])."""
        return math.bits_per_element(type(self).logits_cdf, self._params(), x, self.likelihood_bound)

    def pmf(self, params: dict[str, Any], support_lower: int, support_upper: int) -> Any:
        return math.pmf(type(self).logits_cdf, params, support_lower, support_upper)


class Laplace(_LocationScale):
    """Laplace density with learned location and scale per channel (ablation baseline)."""

    logits_cdf = staticmethod(parametric.laplace_logits_cdf)


class Logistic(_LocationScale):
    """Logistic density with learned location and scale per channel (ablation baseline)."""

    logits_cdf = staticmethod(parametric.logistic_logits_cdf)
