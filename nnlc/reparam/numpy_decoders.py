"""Latent decoders in numpy: integer latents q and float32 steps -> float32 weights.

The standalone decoder's twin of `nnlc.reparam.decoders` (Oktay et al., ICLR 2020, "Scalable Model
Compression by Entropy Penalized Reparameterization", §2: theta = D(phi)). This file imports numpy
only: it ships with the decoder, which must never import jax.

The one float computation, in IEEE float32, each `*` and `+` rounded separately (docs/reparam.md):

- scalar:  w = float32(q) * step                       (step has shape [])
- channel: w[o, ...] = float32(q[o, ...]) * step[o]    (step has shape [O]; axis 0)
- dct:     Y = float32(q) * step                       (step has the spatial shape, e.g. [kh, kw])
           then the inverse orthonormal DCT-II along the height axis first, then the width axis:
           T[o, i, x, v] = sum_u C_h[u, x] * Y[o, i, u, v]
           w[o, i, x, y] = sum_v C_w[v, y] * T[o, i, x, v]
           (1-D kernels [O, I, k]: w[o, i, x] = sum_u C[u, x] * Y[o, i, u]), every sum accumulated
           in float32 in increasing index order: ((p_0 + p_1) + p_2) + ..., with C computed in
           float64 (`dct_matrix`) and cast to float32.

The jax forward pass (`nnlc.reparam.decoders`) computes the same products and sums as float32
matmuls in the same contraction order; only the order of additions inside each sum may differ
(and XLA may fuse a multiply and an add), so the two agree to a few float32 ulps (tests/test_reparam.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

KINDS = ("scalar", "channel", "dct", "fixed")
DECODED_KINDS = ("scalar", "channel", "dct")  # kinds with latents; 'fixed' tensors are stored exactly
# float32 holds every integer up to 2**24 exactly; latents stay within +-2**23, as the bitstream requires.
MAX_LATENT_MAGNITUDE = 1 << 23


def dct_matrix(size: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (float64), C[u, x] = a(u) cos(pi (2x + 1) u / (2 size)).

    Rows are frequencies u, columns positions x: Y = C x, x = C^T Y; a(0) = sqrt(1/size),
    a(u > 0) = sqrt(2/size).
    """
    if size < 1:
        raise ValueError(f"DCT size must be positive, got {size}")
    frequency = np.arange(size, dtype=np.float64)[:, None]
    position = np.arange(size, dtype=np.float64)[None, :]
    matrix = np.cos(np.pi * (2.0 * position + 1.0) * frequency / (2.0 * size))
    matrix *= np.where(frequency == 0, np.sqrt(1.0 / size), np.sqrt(2.0 / size))
    return matrix


def dct_spatial_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Spatial shape of a conv kernel [O, I, k] or [O, I, kh, kw] (ValueError for other ranks)."""
    if len(shape) not in (3, 4):
        raise ValueError(f"dct decoder needs a kernel [O, I, k] or [O, I, kh, kw], got shape {tuple(shape)}")
    return tuple(int(size) for size in shape[2:])


def step_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of the float32 steps a tensor of `shape` stores for decoder `kind`."""
    if kind == "scalar":
        return ()
    if kind == "channel":
        if len(shape) < 1:
            raise ValueError("channel decoder needs a tensor with an output axis")
        return (int(shape[0]),)
    if kind == "dct":
        return dct_spatial_shape(shape)
    raise ValueError(f"no steps for decoder kind {kind!r} (kinds with latents: {DECODED_KINDS})")


def _contract_ordered(values: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """out[..., x, ...] = sum_u matrix[u, x] * values[..., u, ...] along `axis`, summed in order u = 0, 1, ..."""
    moved = np.moveaxis(values, axis, -1)
    total = moved[..., 0:1] * matrix[0]
    for index in range(1, matrix.shape[0]):
        total = total + moved[..., index:index + 1] * matrix[index]
    return np.moveaxis(total, -1, axis)


def inverse_dct(coefficients: np.ndarray) -> np.ndarray:
    """Kernel [O, I, k] or [O, I, kh, kw] from float32 DCT coefficients, in the documented order.

    Height axis (axis 2) first, then width (axis 3); float32 in, float32 out.
    """
    coefficients = np.asarray(coefficients, dtype=np.float32)
    spatial = dct_spatial_shape(coefficients.shape)
    values = _contract_ordered(coefficients, dct_matrix(spatial[0]).astype(np.float32), 2)
    if len(spatial) == 2:
        values = _contract_ordered(values, dct_matrix(spatial[1]).astype(np.float32), 3)
    return values


def forward_dct(kernel: np.ndarray) -> np.ndarray:
    """DCT coefficients (float64) of a kernel [O, I, k] or [O, I, kh, kw]: Y = C_h theta C_w^T.

    Used to initialise latents (phi = D^-1(theta)), never to decode.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    spatial = dct_spatial_shape(kernel.shape)
    height = dct_matrix(spatial[0])
    if len(spatial) == 1:
        return np.einsum("ux,oix->oiu", height, kernel)
    return np.einsum("ux,oixy,vy->oiuv", height, kernel, dct_matrix(spatial[1]))


def scale_latents(latents: Any, steps: Any, kind: str, xp: ModuleType = np) -> Any:
    """float32 latents times their steps, broadcast for `kind` (before any transform)."""
    if kind == "scalar":
        return latents * xp.reshape(steps, ())
    if kind == "channel":
        return latents * xp.reshape(steps, (-1,) + (1,) * (latents.ndim - 1))
    if kind == "dct":
        return latents * xp.reshape(steps, dct_spatial_shape(tuple(latents.shape)))
    raise ValueError(f"unknown latent decoder kind {kind!r} (kinds with latents: {DECODED_KINDS})")


def decode_numpy(kind: str, q: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Weights (float32, the shape of `q`) from integer latents `q` and float32 `steps`.

    Raises ValueError for an unknown kind, steps of the wrong shape, non-integer latents, or latents
    whose magnitude exceeds 2**23 (the bitstream's limit; float32(q) is exact up to 2**24).
    """
    q = np.asarray(q)
    if q.dtype.kind not in "iu":
        raise ValueError(f"latents must be integers, got {q.dtype}")
    expected = step_shape(kind, q.shape)
    steps = np.asarray(steps)
    if steps.dtype != np.float32:
        raise ValueError(f"steps must be float32 (as the bitstream stores them), got {steps.dtype}")
    if steps.size != int(np.prod(expected, dtype=np.int64)):
        raise ValueError(f"{steps.size} steps for a {kind} decoder of shape {q.shape}, expected shape {expected}")
    if q.size and int(np.max(np.abs(q.astype(np.int64)))) > MAX_LATENT_MAGNITUDE:
        raise ValueError("latents exceed 2**23 in magnitude")
    values = scale_latents(q.astype(np.float32), steps.reshape(expected), kind)
    if kind == "dct":
        values = inverse_dct(values)
    return values.astype(np.float32, copy=False)
