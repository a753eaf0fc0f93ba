"""Latent decoders theta = D(phi) in jax, and their initialisation phi = D^-1(theta).

Oktay, Ballé, Singh, Shrivastava, "Scalable Model Compression by Entropy Penalized
Reparameterization" (ICLR 2020), §2-3: every tensor theta is represented by latents phi and a small
decoder; at training time phi is rounded straight-through so the forward pass sees the integers
that will be coded. Decoder parameters are plain dicts of float32 arrays:

- scalar, channel, dct: {"log_step": ...} with shape [], [O] and the spatial shape respectively;
  the step used is exp(log_step) computed in float32 (`steps`), the value the bitstream stores.
- fixed: {"value": theta} (not trained, stored exactly; no latents).

The forward pass computes the formula of `nnlc.reparam.numpy_decoders` (the standalone decoder's)
with float32 matmuls at full precision in the same contraction order (height axis, then width), so
the trained network and the decoded one agree to float32 summation order (docs/reparam.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from nnlc import quantization
from nnlc.reparam import numpy_decoders
from nnlc.reparam.numpy_decoders import (DECODED_KINDS, KINDS, MAX_LATENT_MAGNITUDE, dct_matrix,
                                         dct_spatial_shape, forward_dct, scale_latents)

DEFAULT_INIT_BITS = 6.0
__all__ = ["DEFAULT_INIT_BITS", "DECODED_KINDS", "KINDS", "dct_matrix", "decode", "init_decoder",
           "initial_step", "integer_latents", "inverse_dct", "ste_round", "steps", "bitstream_steps"]


def ste_round(values: jax.Array) -> jax.Array:
    """Round to nearest (ties to even) in the forward pass, identity gradient (straight-through)."""
    return values + jax.lax.stop_gradient(jnp.round(values) - values)


def steps(decoder_params: Mapping[str, jax.Array]) -> jax.Array:
    """The float32 steps exp(log_step) used by the forward pass (and stored in the bitstream)."""
    return jnp.exp(jnp.asarray(decoder_params["log_step"], dtype=jnp.float32))


def inverse_dct(coefficients: jax.Array) -> jax.Array:
    """Kernel [O, I, k] or [O, I, kh, kw] from float32 DCT coefficients: height axis first, then width.

    theta[o, i] = C_h^T Y[o, i] C_w (1-D: C^T Y[o, i]) as float32 matmuls at HIGHEST precision
    (no TF32/bf16 passes on accelerators), C = float32(dct_matrix(k)).
    """
    spatial = dct_spatial_shape(tuple(coefficients.shape))
    highest = jax.lax.Precision.HIGHEST
    height = jnp.asarray(dct_matrix(spatial[0]).astype(np.float32))
    if len(spatial) == 1:
        return jnp.einsum("ux,oiu->oix", height, coefficients, precision=highest)
    rows = jnp.einsum("ux,oiuv->oixv", height, coefficients, precision=highest)
    width = jnp.asarray(dct_matrix(spatial[1]).astype(np.float32))
    return jnp.einsum("vy,oixv->oixy", width, rows, precision=highest)


def decode(kind: str, phi: jax.Array | None, decoder_params: Mapping[str, jax.Array]) -> jax.Array:
    """theta = D(phi) in float32; round `phi` first (e.g. `ste_round`) to decode integer latents."""
    if kind == "fixed":
        return jnp.asarray(decoder_params["value"], dtype=jnp.float32)
    if kind not in DECODED_KINDS:
        raise ValueError(f"unknown decoder kind {kind!r}; expected one of {KINDS}")
    values = scale_latents(jnp.asarray(phi, dtype=jnp.float32), steps(decoder_params), kind, xp=jnp)
    if kind == "dct":
        values = inverse_dct(values)
    return values


def initial_step(values: np.ndarray, qp: int | None = None, init_bits: float = DEFAULT_INIT_BITS) -> float:
    """Starting step: the NNR step of `qp` if given, else std(values) / 2**init_bits.

    A constant tensor falls back to max|values|, an all-zero one to 1 (its latents are 0 anyway).
    """
    if qp is not None:
        return quantization.step_from_qp(qp)
    values = np.asarray(values, dtype=np.float64)
    spread = float(np.std(values)) if values.size else 0.0
    if not spread > 0.0:
        spread = float(np.max(np.abs(values))) if values.size else 0.0
    if not spread > 0.0:
        spread = 1.0
    return spread / 2.0 ** float(init_bits)


def _bounded_log_steps(wanted: np.ndarray, largest: np.ndarray) -> np.ndarray:
    """log of the steps, enlarged where needed so that |round(latents)| <= 2**23 (float32-exact integers).

    The margin of 1 absorbs the float32 rounding of exp(log_step).
    """
    floor = np.maximum(np.asarray(largest, dtype=np.float64) / (MAX_LATENT_MAGNITUDE - 1), 1e-30)
    return np.log(np.maximum(np.asarray(wanted, dtype=np.float64), floor)).astype(np.float32)


def _latents(values: np.ndarray, step_values: np.ndarray, kind: str) -> jax.Array:
    """phi = values / step (float64, then float32), dividing by the float32 steps the forward pass uses."""
    divisor = scale_latents(np.ones(values.shape), step_values.astype(np.float64), kind)
    return jnp.asarray((values / divisor).astype(np.float32))


def init_decoder(kind: str, theta: np.ndarray, qp: int | None = None,
                 init_bits: float = DEFAULT_INIT_BITS) -> tuple[jax.Array | None, dict[str, jax.Array]]:
    """(phi, decoder_params) with D(round(phi)) = theta up to rounding (EPR §3: phi = D^-1(theta)).

    - scalar: one step, `initial_step(theta)`.
    - channel: one step per slice along axis 0, `initial_step(theta[o])` (a constant or zero
      channel falls back to the tensor's step); with `qp`, every channel gets the qp step.
    - dct: the same step at every frequency, `initial_step(theta)` (not one per coefficient std:
      see docs/reparam.md); the weight-space L2 error then matches a scalar decoder's.
    - fixed: no latents (None) and {"value": theta}.
    Every step is enlarged where needed so that |phi| <= 2**23.
    """
    values = np.asarray(theta, dtype=np.float64)
    if kind == "fixed":
        return None, {"value": jnp.asarray(values.astype(np.float32))}
    if kind == "dct":
        values = forward_dct(values)
    elif kind not in DECODED_KINDS:
        raise ValueError(f"unknown decoder kind {kind!r}; expected one of {KINDS}")
    shape = numpy_decoders.step_shape(kind, values.shape)
    if kind == "scalar":
        log_step = _bounded_log_steps(initial_step(values, qp, init_bits), np.max(np.abs(values), initial=0.0))
    elif kind == "channel":
        rows = values.reshape(values.shape[0], -1)
        tensor_step = initial_step(values, qp, init_bits)
        wanted = [initial_step(row, qp, init_bits) if np.std(row) > 0 else tensor_step for row in rows]
        log_step = _bounded_log_steps(np.array(wanted, dtype=np.float64), np.max(np.abs(rows), axis=1, initial=0.0))
    else:  # dct: one start step for all frequencies, bounded per frequency
        largest = np.max(np.abs(values.reshape((-1,) + shape)), axis=0, initial=0.0)
        log_step = _bounded_log_steps(np.full(shape, initial_step(np.asarray(theta), qp, init_bits)), largest)
    params = {"log_step": jnp.asarray(log_step.reshape(shape))}
    return _latents(values, np.asarray(steps(params)), kind), params


def integer_latents(phi: jax.Array) -> np.ndarray:
    """The integers the bitstream codes: round-to-nearest-even of float32 phi, as int64."""
    return quantization.round_to_int64(np.asarray(phi, dtype=np.float32), "latent")


def bitstream_steps(decoder_params: Mapping[str, jax.Array]) -> np.ndarray:
    """The float32 steps to store, exactly those of the jax forward pass (`steps`)."""
    return np.asarray(steps(decoder_params), dtype=np.float32)
