"""Latent decoders of the learned mode, in numpy: integer latents q and float32 steps -> weights.

The one float computation of decoding learned-mode tensors, specified exactly (docs/bitstream.md,
"Latent decoders") so that the standalone decoder reproduces the weights the trained forward pass
used (Oktay et al., ICLR 2020, "Scalable Model Compression by Entropy Penalized Reparameterization"):

- scalar:  w = float32(q) * step                        (one step)
- channel: w[o, ...] = float32(q[o, ...]) * step[o]     (one step per output channel, axis 0)
- dct:     Y = float32(q) * step (one step per spatial frequency, broadcast over [O, I]);
           w[o, i] = C_h^T Y[o, i] C_w  (2-D kernels) or C^T Y[o, i] (1-D kernels), as float32
           matmuls, height axis first, with C the orthonormal DCT-II matrix computed in float64 and
           cast to float32: C[u, x] = a(u) cos(pi (2x + 1) u / (2k)), a(0) = sqrt(1/k), a(u) = sqrt(2/k).
"""

from __future__ import annotations

import numpy as np

SCALAR, CHANNEL, DCT = 1, 2, 3
KIND_NAMES = {SCALAR: "scalar", CHANNEL: "channel", DCT: "dct"}


def dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix C (float64), rows are frequencies: Y = C x, x = C^T Y."""
    frequencies = np.arange(size)[:, None]
    positions = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * positions + 1) * frequencies / (2 * size))
    matrix *= np.where(frequencies == 0, np.sqrt(1.0 / size), np.sqrt(2.0 / size))
    return matrix


def step_count(kind: int, shape: tuple[int, ...]) -> int:
    """How many float32 steps a tensor of this shape stores for this decoder kind."""
    if kind == SCALAR:
        return 1
    if kind == CHANNEL:
        if len(shape) < 1:
            raise ValueError("channel decoder needs a tensor with an output axis")
        return shape[0]
    if kind == DCT:
        if len(shape) not in (3, 4):
            raise ValueError(f"dct decoder needs a 3-D or 4-D kernel, got shape {shape}")
        return int(np.prod(shape[2:]))
    raise ValueError(f"unknown latent decoder {kind}")


def decode_latents(kind: int, symbols: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Weights (float32, the shape of `symbols`) from integer latents and float32 steps."""
    symbols = np.asarray(symbols)
    steps = np.asarray(steps, dtype=np.float32)
    if steps.size != step_count(kind, symbols.shape):
        raise ValueError(f"{steps.size} steps for a {KIND_NAMES.get(kind, kind)} decoder of shape {symbols.shape}")
    latents = symbols.astype(np.float32)
    if kind == SCALAR:
        return latents * steps.reshape(())
    if kind == CHANNEL:
        return latents * steps.reshape((-1,) + (1,) * (symbols.ndim - 1))
    coefficients = latents * steps.reshape(symbols.shape[2:])
    height = dct_matrix(symbols.shape[2]).astype(np.float32)
    if symbols.ndim == 3:
        return np.einsum("ux,oiu->oix", height, coefficients, optimize=False).astype(np.float32)
    width = dct_matrix(symbols.shape[3]).astype(np.float32)
    rows = np.einsum("ux,oiuv->oixv", height, coefficients, optimize=False).astype(np.float32)
    return np.einsum("vy,oixv->oixy", width, rows, optimize=False).astype(np.float32)
