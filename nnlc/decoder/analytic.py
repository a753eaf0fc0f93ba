"""Analytic constant tensors that the decoder computes instead of reading (bitstream mode 4).

Audio networks exported from PyTorch (Silero VAD, anything with an STFT front end) carry the STFT as
a Conv1d whose weight is a windowed DFT basis: rows `cos(2 pi k t / n) w(t)` for k < bins, then rows
`-sin(2 pi k t / n) w(t)` (docs/bitstream.md, "Generated tensors"). Such a tensor is described by a
generator code, a few integer parameters and a float32 scale; the bitstream adds a residual that
makes the result equal the original bit for bit.

Only IEEE-754 float64 +, -, * and / are used (numpy, element by element, no fused operations):
cos and sin come from fixed Taylor polynomials on [0, pi/4] after an exact integer argument
reduction, not from libm or numpy's SIMD cos, whose last bit differs between platforms and builds.
So every machine computes the same float32 tensor, and the residual the encoder measured applies.
"""

from __future__ import annotations

import math

import numpy as np

from nnlc.errors import BitstreamError

DFT_BASIS = 1
GENERATOR_NAMES = {DFT_BASIS: "dft_basis"}

RECTANGULAR, HANN_PERIODIC, HANN_SYMMETRIC, HAMMING_PERIODIC, HAMMING_SYMMETRIC = range(5)
WINDOW_NAMES = {RECTANGULAR: "rectangular", HANN_PERIODIC: "hann_periodic", HANN_SYMMETRIC: "hann_symmetric",
                HAMMING_PERIODIC: "hamming_periodic", HAMMING_SYMMETRIC: "hamming_symmetric"}
MINUS_SIN, PLUS_SIN = 0, 1  # imaginary rows: -sin (torch.stft, np.fft's e^{-i...}) or +sin
FLOAT64, FLOAT32_PRODUCT = 0, 1
ARITHMETIC_NAMES = {FLOAT64: "float64", FLOAT32_PRODUCT: "float32_product"}
DFT_PARAMETERS = ("n_fft", "bins", "window", "imag_sign", "arithmetic")
MAX_N_FFT = 1 << 16
_CHUNK_ELEMENTS = 1 << 18  # elements generated at a time

_HALF_PI = 1.5707963267948966  # the float64 nearest pi / 2
_TAYLOR_TERMS = 11  # on [0, pi/4] the first omitted term is below 1e-22
_SIN_COEFFICIENTS = [(-1) ** n / math.factorial(2 * n + 1) for n in range(_TAYLOR_TERMS)]
_COS_COEFFICIENTS = [(-1) ** n / math.factorial(2 * n) for n in range(_TAYLOR_TERMS)]


def _horner(coefficients: list[float], x: np.ndarray) -> np.ndarray:
    result = np.full_like(x, coefficients[-1])
    for coefficient in reversed(coefficients[:-1]):
        result = result * x + coefficient
    return result


def cos_sin_turns(numerators: np.ndarray, denominator: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2 pi p / m (float64) for integers p >= 0 and m >= 1.

    The angle is reduced exactly in integers (quadrant, then reflection about pi/4), so multiples
    of a quarter turn give exactly 0 and +-1, zeros are +0, and the result is the same everywhere.
    """
    p = np.asarray(numerators, dtype=np.int64) % denominator
    quadrant, remainder = np.divmod(4 * p, denominator)  # angle = quadrant pi/2 + (pi/2) remainder/m
    reflected = 2 * remainder > denominator
    reduced = np.where(reflected, denominator - remainder, remainder)
    x = (reduced / denominator) * _HALF_PI  # in [0, pi/4]
    squared = x * x
    sin_x, cos_x = x * _horner(_SIN_COEFFICIENTS, squared), _horner(_COS_COEFFICIENTS, squared)
    cos_theta = np.where(reflected, sin_x, cos_x)
    sin_theta = np.where(reflected, cos_x, sin_x)
    cosine = np.choose(quadrant, [cos_theta, -sin_theta, -cos_theta, sin_theta])
    sine = np.choose(quadrant, [sin_theta, cos_theta, -sin_theta, -cos_theta])
    return cosine + 0.0, sine + 0.0  # -0.0 + 0.0 is +0.0


def window(kind: int, length: int) -> np.ndarray:
    """float64 window of `length` samples.

    hann_periodic: 0.5 - 0.5 cos(2 pi t / N), as torch.hann_window(N, periodic=True) and
    scipy.signal.get_window('hann', N); hann_symmetric: the same over N - 1, as
    torch.hann_window(N, periodic=False) and np.hanning(N); hamming_*: 0.54 - 0.46 cos(...), as
    torch.hamming_window (periodic=True / False) and np.hamming(N) (symmetric).
    """
    if kind not in WINDOW_NAMES:
        raise BitstreamError(f"dft_basis: unknown window {kind}")
    if kind == RECTANGULAR:
        return np.ones(length)
    period = length if kind in (HANN_PERIODIC, HAMMING_PERIODIC) else length - 1
    if period < 1:
        return np.ones(length)
    cosine, _ = cos_sin_turns(np.arange(length), period)
    if kind in (HANN_PERIODIC, HANN_SYMMETRIC):
        return 0.5 - 0.5 * cosine
    return 0.54 - 0.46 * cosine


def check_dft_shape(shape: tuple[int, ...], n_fft: int, bins: int) -> None:
    """The shape must be [2 bins, 1, ..., 1, n_fft] (rank >= 2); raises BitstreamError otherwise."""
    if not 1 <= n_fft <= MAX_N_FFT:
        raise BitstreamError(f"dft_basis: n_fft {n_fft} outside 1..{MAX_N_FFT}")
    if not 1 <= bins <= n_fft:
        raise BitstreamError(f"dft_basis: {bins} bins outside 1..n_fft ({n_fft})")
    if len(shape) < 2 or shape[0] != 2 * bins or shape[-1] != n_fft or any(size != 1 for size in shape[1:-1]):
        raise BitstreamError(f"dft_basis: shape {list(shape)} is not [2 * {bins}, 1, ..., {n_fft}]")


def dft_basis(n_fft: int, bins: int, window_kind: int, imag_sign: int, arithmetic: int,
              scale: float | np.float32, shape: tuple[int, ...]) -> np.ndarray:
    """float32 windowed DFT basis of `shape`: rows cos(2 pi k t / n_fft) w(t), k < bins, then rows
    -+sin(2 pi k t / n_fft) w(t) (`imag_sign`), times `scale`.

    arithmetic FLOAT64: float32((trig * w) * scale) computed in float64, one rounding;
    FLOAT32_PRODUCT: (float32(trig) * float32(w)) * float32(scale) in float32, as a float32 basis
    multiplied by a float32 window (the tacotron2 / Silero STFT module). Checks every parameter
    before allocating; raises BitstreamError on a bad one.
    """
    check_dft_shape(tuple(shape), n_fft, bins)
    if imag_sign not in (MINUS_SIN, PLUS_SIN):
        raise BitstreamError(f"dft_basis: imag_sign {imag_sign} is neither 0 (-sin) nor 1 (+sin)")
    if arithmetic not in ARITHMETIC_NAMES:
        raise BitstreamError(f"dft_basis: unknown arithmetic {arithmetic}")
    scale32 = np.float32(scale)
    if not np.isfinite(scale32) or scale32 == 0:
        raise BitstreamError(f"dft_basis: invalid scale {scale32}")
    weights = window(window_kind, n_fft)
    cosine, sine = cos_sin_turns(np.arange(n_fft), n_fft)
    imaginary = sine if imag_sign == PLUS_SIN else -sine + 0.0
    values = np.empty((2 * bins, n_fft), dtype=np.float32)
    times = np.arange(n_fft, dtype=np.int64)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n_fft)  # bounds the float64 work arrays
    for first in range(0, bins, rows_per_chunk):
        harmonics = np.arange(first, min(bins, first + rows_per_chunk), dtype=np.int64)
        phase = (harmonics[:, None] * times) % n_fft
        for offset, table in ((0, cosine), (bins, imaginary)):
            trig = table[phase]
            if arithmetic == FLOAT64:
                part = ((trig * weights) * np.float64(scale32)).astype(np.float32)
            else:
                part = (trig.astype(np.float32) * weights.astype(np.float32)) * scale32
            values[offset + harmonics] = part
    return values.reshape(shape)


def generate(generator: int, parameters: list[int], scale: float | np.float32,
             shape: tuple[int, ...]) -> np.ndarray:
    """The float32 tensor a `tensor_generated` body describes (before its residual)."""
    if generator != DFT_BASIS:
        raise BitstreamError(f"unknown generator {generator}")
    if len(parameters) != len(DFT_PARAMETERS):
        raise BitstreamError(f"dft_basis: {len(parameters)} parameters, expected {len(DFT_PARAMETERS)}")
    return dft_basis(*parameters, scale, shape)


def ordered_from_float32(values: np.ndarray) -> np.ndarray:
    """int64 keys of float32 values, monotone in the value and one apart between neighbours:
    bits b for b >= +0, and -(b & 0x7fffffff) - 1 for sign-bit patterns (-0 -> -1), so that +0
    and -0 stay distinct and the map is a bijection onto [-2**31, 2**31)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)
    return np.where(bits >= 1 << 31, -(bits & 0x7FFFFFFF) - 1, bits)


def float32_from_ordered(keys: np.ndarray) -> np.ndarray:
    """Inverse of `ordered_from_float32`; raises BitstreamError for a key outside [-2**31, 2**31)."""
    keys = np.asarray(keys, dtype=np.int64)
    if keys.size and (keys.min() < -(1 << 31) or keys.max() >= 1 << 31):
        raise BitstreamError("generated: a residual leads outside the float32 bit patterns")
    bits = np.where(keys < 0, (-(keys + 1)) | (1 << 31), keys)
    return bits.astype(np.uint32).view(np.float32)
