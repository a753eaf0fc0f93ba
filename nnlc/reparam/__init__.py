"""Weights as integer latents behind small learned decoders (Oktay et al., ICLR 2020; docs/reparam.md).

- `decoders` (jax): decode, init_decoder, ste_round, steps, dct_matrix.
- `numpy_decoders` (numpy only, used by the standalone decoder): decode_numpy, dct_matrix.
- `groups`: plan_reparam, TensorPlan, DEFAULT_CONFIG.
- `reparameterization`: Reparameterization (init, weights, integer_latents, bitstream_steps).

Names are loaded on first use, so `import nnlc.reparam.numpy_decoders` never imports jax.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "decode": "decoders", "init_decoder": "decoders", "initial_step": "decoders", "ste_round": "decoders",
    "steps": "decoders", "integer_latents": "decoders", "bitstream_steps": "decoders",
    "dct_matrix": "numpy_decoders", "decode_numpy": "numpy_decoders",
    "forward_dct": "numpy_decoders", "step_shape": "numpy_decoders", "KINDS": "numpy_decoders",
    "DECODED_KINDS": "numpy_decoders", "MAX_LATENT_MAGNITUDE": "numpy_decoders",
    "plan_reparam": "groups", "resolve_config": "groups", "TensorPlan": "groups", "DEFAULT_CONFIG": "groups",
    "Reparameterization": "reparameterization",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nnlc.reparam' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nnlc.reparam.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
