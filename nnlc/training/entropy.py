"""Entropy-model families for training, by name: init and bits of [..., channels] latents."""

from __future__ import annotations

from typing import Any, Callable

import jax

from nnlc.entropy_models import deep_factorized, parametric

Family = tuple[Callable[[jax.Array, int], Any], Callable[[Any, jax.Array], jax.Array], Callable]


def family(name: str) -> Family:
    """(init(rng, channels), bits(params, x), logits_cdf) of an entropy-model family."""
    if name == "deep_factorized":
        return deep_factorized.init_params, deep_factorized.bits, deep_factorized.logits_cdf
    if name == "laplace":
        return (lambda rng, channels: parametric.init_params(channels)), parametric.laplace_bits, \
            parametric.laplace_logits_cdf
    if name == "logistic":
        return (lambda rng, channels: parametric.init_params(channels)), parametric.logistic_bits, \
            parametric.logistic_logits_cdf
    raise ValueError(f"unknown entropy model {name!r}: deep_factorized, laplace or logistic")
