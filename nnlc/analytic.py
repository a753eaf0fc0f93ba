"""Detection of analytic constant tensors the decoder can generate (bitstream mode 4, "generated").

An STFT exported as a Conv1d carries a windowed DFT basis of shape [2 bins, 1, n_fft]; quantized
like a weight it costs more than the rest of a small audio network (32% of Silero VAD's file).
`detect_generated` recognises one, finds its parameters (window, sign of the imaginary rows, scale,
float64 or float32 arithmetic: `nnlc.decoder.analytic.dft_basis`) and measures the residual that
makes the decoder's tensor equal the original bit for bit, so the mode is exactly lossless and costs
a few bytes when the original was built the same way.

Detection is cheap on everything else: the shape must be [2 bins, 1, ..., 1, n_fft] (or
[2 bins, n_fft]), the first imaginary row (sin 0) must vanish and the first real row (cos 0) must be
a scaled window before any basis is computed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from nnlc.bitstream.syntax import SYNTAX, Writer
from nnlc.coding import symbols as symbol_coding
from nnlc.decoder import analytic

TOLERANCE = 1e-5  # accepted when max |original - generated| <= TOLERANCE * max |original|
_SCALE_SNAP = 1e-6  # a least-squares scale this close (relative) to a round one becomes that one


@dataclasses.dataclass
class Generated:
    """A tensor as the decoder generates it: generator, parameters, scale and the exact residual."""

    generator: int  # analytic.DFT_BASIS
    parameters: tuple[int, ...]  # DFT_BASIS: n_fft, bins, window, imag_sign, arithmetic
    scale: np.float32
    residual: np.ndarray  # int64, C order: ordered(original) - ordered(generated)
    coding_plan: symbol_coding.CodingPlan

    @property
    def name(self) -> str:
        return analytic.GENERATOR_NAMES[self.generator]

    def describe(self) -> str:
        """E.g. 'dft_basis n_fft=256 bins=129 hann_periodic -sin float32_product scale=1'."""
        n_fft, bins, window, imag_sign, arithmetic = self.parameters
        sign = "-sin" if imag_sign == analytic.MINUS_SIN else "+sin"
        return (f"{self.name} n_fft={n_fft} bins={bins} {analytic.WINDOW_NAMES[window]} {sign} "
                f"{analytic.ARITHMETIC_NAMES[arithmetic]} scale={float(self.scale):.9g}")

    def generate(self, shape: tuple[int, ...]) -> np.ndarray:
        """The decoder's float32 tensor before the residual."""
        return analytic.generate(self.generator, list(self.parameters), self.scale, shape)

    def reconstruct(self, shape: tuple[int, ...]) -> np.ndarray:
        """Generated tensor plus residual: the original, bit for bit."""
        keys = analytic.ordered_from_float32(self.generate(shape)).ravel() + self.residual
        return analytic.float32_from_ordered(keys).reshape(shape)

    def side_fields(self) -> dict:
        """The `tensor_generated` fields other than the residual."""
        return {"generator": self.generator, "parameters": list(self.parameters), "scale": float(self.scale)}

    @property
    def side_bytes(self) -> int:
        """Bytes of generator, parameters and scale (the residual's `symbols` aside)."""
        writer, fields = Writer(), self.side_fields()
        for field in SYNTAX["tensor_generated"]:
            if field.name in fields:
                writer.element(field, fields[field.name])
        return len(writer.buffer)

    @property
    def estimated_bits(self) -> float:
        """Side information plus the residual's ideal code length."""
        return 8 * self.side_bytes + self.coding_plan.estimated_bits


def dft_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(n_fft, bins) when `shape` can hold a DFT basis ([2 bins, 1, ..., 1, n_fft], rank >= 2,
    1 <= bins <= n_fft <= 2**16), else None."""
    if len(shape) < 2 or any(size != 1 for size in shape[1:-1]):
        return None
    rows, n_fft = int(shape[0]), int(shape[-1])
    if rows < 2 or rows % 2 or not 2 <= n_fft <= analytic.MAX_N_FFT or rows // 2 > n_fft:
        return None
    return n_fft, rows // 2


def _round_scales(n_fft: int) -> list[np.float32]:
    """Scales that STFT code uses besides 1: 1/n, 1/sqrt(n), 2/n, sqrt(2/n) (and their negatives)."""
    positive = [1.0, 1.0 / n_fft, 1.0 / np.sqrt(n_fft), 2.0 / n_fft, np.sqrt(2.0 / n_fft)]
    return [np.float32(sign * value) for value in positive for sign in (1.0, -1.0)]


def _fitted_scale(row: np.ndarray, weights: np.ndarray, n_fft: int) -> np.float32 | None:
    """The float32 scale of `weights` that fits `row` (least squares, snapped to a round value)."""
    energy = float(weights @ weights)
    if energy == 0:
        return None
    scale = float(row @ weights) / energy
    if scale == 0 or not np.isfinite(np.float32(scale)):
        return None
    for candidate in _round_scales(n_fft):
        if abs(float(candidate) - scale) <= _SCALE_SNAP * abs(scale):
            return candidate
    return np.float32(scale)


def _window_candidates(values: np.ndarray, n_fft: int, tolerance: float) -> list[tuple[int, np.float32]]:
    """(window, scale) pairs whose scaled window matches the first real row (cos 0 = 1)."""
    found = []
    for kind in analytic.WINDOW_NAMES:
        weights = analytic.window(kind, n_fft)
        scale = _fitted_scale(values[0], weights, n_fft)
        if scale is not None and np.max(np.abs(values[0] - float(scale) * weights)) <= tolerance:
            found.append((kind, scale))
    return found


def _imag_signs(values: np.ndarray, n_fft: int, bins: int, weights: np.ndarray, scale: float,
                tolerance: float) -> list[int]:
    """Signs of the imaginary rows that match the row of the first harmonic (k = 1)."""
    if bins < 2:
        return [analytic.MINUS_SIN]  # only sin 0 = 0: the sign makes no difference
    _, sine = analytic.cos_sin_turns(np.arange(n_fft), n_fft)
    row = values[bins + 1]
    return [sign for sign, factor in ((analytic.MINUS_SIN, -1.0), (analytic.PLUS_SIN, 1.0))
            if np.max(np.abs(row - factor * scale * sine * weights)) <= tolerance]


def detect_generated(array: np.ndarray, tolerance: float = TOLERANCE) -> Generated | None:
    """The cheapest exact description of `array` as a generated tensor, or None.

    A float32 windowed DFT basis (`nnlc.decoder.analytic.dft_basis`, any of its windows, signs and
    arithmetics, a round or fitted scale) is accepted when max |original - generated| <= tolerance *
    max |original|; among accepted parameters the smallest coded residual wins.
    """
    array = np.asarray(array)
    if array.dtype != np.float32:
        return None
    found = dft_shape(array.shape)
    if found is None:
        return None
    n_fft, bins = found
    values = array.reshape(2 * bins, n_fft).astype(np.float64)
    if not np.all(np.isfinite(values[[0, bins]])):
        return None
    peak = float(np.max(np.abs(values[0])))
    if peak == 0 or np.max(np.abs(values[bins])) > tolerance * peak:  # the sin 0 row must vanish
        return None
    candidates = _window_candidates(values, n_fft, tolerance * peak)
    if not candidates or not np.all(np.isfinite(values)):
        return None
    peak = float(np.max(np.abs(values)))
    original = analytic.ordered_from_float32(array).ravel()
    best: Generated | None = None
    for window_kind, scale in candidates:
        weights = analytic.window(window_kind, n_fft)
        for sign in _imag_signs(values, n_fft, bins, weights, float(scale), tolerance * peak):
            for arithmetic in analytic.ARITHMETIC_NAMES:
                parameters = (n_fft, bins, window_kind, sign, arithmetic)
                generated = analytic.dft_basis(*parameters, scale, array.shape)
                if np.max(np.abs(generated.astype(np.float64) - array)) > tolerance * peak:
                    continue
                residual = original - analytic.ordered_from_float32(generated).ravel()
                candidate = Generated(analytic.DFT_BASIS, parameters, scale, residual,
                                      symbol_coding.plan_coding(residual))
                if best is None or candidate.estimated_bits < best.estimated_bits:
                    best = candidate
    return best
