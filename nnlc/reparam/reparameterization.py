"""All of a model's float tensors as latents behind decoders: init, weights, and what gets coded.

Oktay et al., ICLR 2020, "Scalable Model Compression by Entropy Penalized Reparameterization":
theta = D(phi); training sees straight-through rounded latents, so the weights of the forward pass
are exactly those the standalone decoder rebuilds from the coded integers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from nnlc.onnx_io import TensorRecord
from nnlc.reparam import decoders
from nnlc.reparam.groups import TensorPlan, plan_reparam, resolve_config

Latents = dict[str, jax.Array]
DecoderParams = dict[str, dict[str, jax.Array]]
Plan = Mapping[str, TensorPlan]
ROUNDINGS = ("ste", "none")


class Reparameterization:
    """Namespace for the whole-model operations; parameters are plain pytrees (dicts of arrays).

    `latents` hold phi for every tensor with a decoder ('fixed' tensors have none);
    `decoder_params[name]` is {"log_step": ...} or, for fixed tensors, {"value": theta}.
    `plan` is static: close over it (or pass it as a static argument) when jitting.
    """

    @staticmethod
    def init(records: Mapping[str, TensorRecord], config: Mapping[str, Any] | Any | None = None
             ) -> tuple[Latents, DecoderParams, dict[str, TensorPlan]]:
        """(latents, decoder_params, plan) such that the initial weights are the originals up to rounding."""
        resolved = resolve_config(config)
        plan = plan_reparam(records, resolved)
        latents: Latents = {}
        decoder_params: DecoderParams = {}
        for name, tensor_plan in plan.items():
            qp = tensor_plan.step_qp if tensor_plan.step_qp is not None else resolved["init_qp"]
            phi, params = decoders.init_decoder(tensor_plan.kind, records[name].array, qp=qp,
                                                init_bits=resolved["init_bits"])
            if phi is not None:
                latents[name] = phi
            decoder_params[name] = params
        return latents, decoder_params, plan

    @staticmethod
    def weights(latents: Mapping[str, jax.Array], decoder_params: Mapping[str, Mapping[str, jax.Array]],
                plan: Plan, rounding: str = "ste") -> dict[str, jax.Array]:
        """theta = D(phi) for every planned tensor (float32).

        rounding='ste': the forward pass uses round(phi) and the gradient w.r.t. phi passes straight
        through (EPR §3); 'none': continuous phi. Steps that are not trained (and fixed values) are
        wrapped in stop_gradient.
        """
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding={rounding!r}; expected one of {ROUNDINGS}")
        decoded = {}
        for name, tensor_plan in plan.items():
            params = decoder_params[name]
            if not tensor_plan.trains_step:
                params = jax.lax.stop_gradient(params)
            phi = latents[name] if tensor_plan.has_latents else None
            if phi is not None and rounding == "ste":
                phi = decoders.ste_round(phi)
            decoded[name] = decoders.decode(tensor_plan.kind, phi, params)
        return decoded

    @staticmethod
    def trainable_mask(decoder_params: Mapping[str, Mapping[str, Any]], plan: Plan) -> dict[str, dict[str, bool]]:
        """Same structure as `decoder_params`: True for learned log-steps (for optax.masked and friends)."""
        return {name: {key: key == "log_step" and plan[name].trains_step for key in params}
                for name, params in decoder_params.items()}

    @staticmethod
    def integer_latents(latents: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
        """The int64 latents to entropy code (round to nearest, ties to even, as the forward pass)."""
        return {name: decoders.integer_latents(phi) for name, phi in latents.items()}

    @staticmethod
    def bitstream_steps(decoder_params: Mapping[str, Mapping[str, jax.Array]], plan: Plan) -> dict[str, np.ndarray]:
        """The float32 steps to store per tensor with latents: exactly exp(log_step) of the forward pass."""
        return {name: decoders.bitstream_steps(decoder_params[name]) for name, tensor_plan in plan.items()
                if tensor_plan.has_latents}
