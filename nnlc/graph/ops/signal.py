"""Signal ops: window functions (trace-time constants: their length decides the shape), DFT, STFT."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnlc.graph.ops._common import onnx_to_numpy_dtype
from nnlc.graph.registry import NodeContext, register


def _window(ctx: NodeContext, size: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
    """sum_k (-1)^k a_k cos(2 pi k n / N), N = length (periodic) or length - 1 (symmetric)."""
    length = int(np.asarray(size).reshape(-1)[0])
    period = length if ctx.attr("periodic", 1) else length - 1
    n = np.arange(length, dtype=np.float64)
    values = sum((-1) ** k * a * np.cos(2 * np.pi * k * n / period) for k, a in enumerate(coefficients))
    return np.asarray(values).astype(onnx_to_numpy_dtype(ctx.attr("output_datatype", 1)))


@register("HannWindow", static_inputs=(0,))
def hann_window(ctx: NodeContext, size: np.ndarray) -> np.ndarray:
    return _window(ctx, size, (0.5, 0.5))


@register("HammingWindow", static_inputs=(0,))
def hamming_window(ctx: NodeContext, size: np.ndarray) -> np.ndarray:
    return _window(ctx, size, (25 / 46, 21 / 46))


@register("BlackmanWindow", static_inputs=(0,))
def blackman_window(ctx: NodeContext, size: np.ndarray) -> np.ndarray:
    return _window(ctx, size, (0.42, 0.5, 0.08))


def _as_complex(x: jax.Array) -> jax.Array:
    """[..., 1] real or [..., 2] (real, imaginary) -> complex [...], in the widest precision enabled."""
    widest = jax.dtypes.canonicalize_dtype(np.complex128)
    if x.shape[-1] == 1:
        return x[..., 0].astype(widest)
    return x[..., 0].astype(widest) + 1j * x[..., 1].astype(widest)


def _as_pairs(z: jax.Array, dtype: Any) -> jax.Array:
    return jnp.stack([jnp.real(z), jnp.imag(z)], axis=-1).astype(dtype)


def _fourier(z: jax.Array, axis: int, length: int, inverse: bool, onesided: bool) -> jax.Array:
    z = jnp.fft.ifft(z, n=length, axis=axis) if inverse else jnp.fft.fft(z, n=length, axis=axis)
    if onesided:
        z = jax.lax.slice_in_dim(z, 0, length // 2 + 1, axis=axis)
    return z


@register("DFT", static_inputs=(1, 2), numpy_ok=False)
def dft(ctx: NodeContext, x: Any, dft_length: Any = None, axis: Any = None) -> jax.Array:
    """Discrete Fourier transform along `axis` (attribute before opset 20, input after)."""
    x = jnp.asarray(x)
    if ctx.opset >= 20:
        axis = -2 if axis is None else int(np.asarray(axis).reshape(-1)[0])
        axis = axis % x.ndim
    else:
        axis = ctx.attr("axis", 1) % (x.ndim - 1)
    inverse, onesided = bool(ctx.attr("inverse", 0)), bool(ctx.attr("onesided", 0))
    if inverse and onesided:  # a half spectrum back to a real signal
        length = 2 * (x.shape[axis] - 1) if dft_length is None else int(np.asarray(dft_length).reshape(-1)[0])
        return jnp.fft.irfft(_as_complex(x), n=length, axis=axis)[..., None].astype(x.dtype)
    length = x.shape[axis] if dft_length is None else int(np.asarray(dft_length).reshape(-1)[0])
    return _as_pairs(_fourier(_as_complex(x), axis, length, inverse, onesided), x.dtype)


@register("STFT", static_inputs=(1, 3), numpy_ok=False)
def stft(ctx: NodeContext, signal: Any, frame_step: Any, window: Any = None, frame_length: Any = None) -> jax.Array:
    """Short-time Fourier transform: [batch, length, 1|2] -> [batch, frames, bins, 2]."""
    signal = jnp.asarray(signal)
    step = int(np.asarray(frame_step).reshape(-1)[0])
    length = int(np.asarray(frame_length).reshape(-1)[0]) if frame_length is not None else np.shape(window)[0]
    frames = 1 + (signal.shape[1] - length) // step
    index = np.arange(frames)[:, None] * step + np.arange(length)[None, :]
    framed = _as_complex(signal)[:, index]  # [batch, frames, length]
    if window is not None:
        framed = framed * jnp.asarray(window)
    onesided = bool(ctx.attr("onesided", 1)) and signal.shape[-1] == 1
    return _as_pairs(_fourier(framed, 2, length, False, onesided), signal.dtype)
