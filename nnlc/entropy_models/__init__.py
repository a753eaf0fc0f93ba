"""Learned entropy models for integer latents: training mode (jax, bits of noisy latents) and coding
mode (integer tables built once after training, in numpy float64). See docs/entropy_models.md.

Pure functions live in `math`, `deep_factorized` and `parametric`; `modules` holds thin Flax
shells; `integer_tables` builds coding tables and plans.
"""

from nnlc.entropy_models.integer_tables import (
    channel_params,
    coding_plan_for,
    integer_table,
    support,
    to_integer_table,
)
from nnlc.entropy_models.math import (
    add_uniform_noise,
    bin_probabilities,
    bits,
    bits_per_element,
    log_bin_probabilities,
    lower_bound,
    pmf,
    quantiles,
    quantiles_at_logits,
    ste_round,
)
from nnlc.entropy_models.modules import DeepFactorized, Laplace, Logistic

__all__ = [
    "DeepFactorized", "Laplace", "Logistic",
    "add_uniform_noise", "bin_probabilities", "bits", "bits_per_element", "channel_params",
    "coding_plan_for", "integer_table", "log_bin_probabilities", "lower_bound", "pmf", "quantiles",
    "quantiles_at_logits", "ste_round", "support", "to_integer_table",
]
