"""Maps integer symbols to a small alphabet of bins plus raw offset bits, and back.

Magnitudes below 2**exact_log2 are their own bin. Larger magnitudes are binned log-linearly, like a
floating-point number with `mantissa_bits` mantissa bits: octave k = floor(log2 |v|) is split into
2**mantissa_bits bins, and the k - mantissa_bits low bits of |v| are sent raw. The sign is part of the
bin (bins are signed), so asymmetric distributions cost nothing extra. This keeps probability tables
short for wide-range tensors while the loss from coding low bits raw stays small (the density is
nearly flat inside one bin). Exact integer arithmetic only; vectorised with numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MAX_MAGNITUDE_LOG2 = 48  # |v| < 2**48, so raw offsets need at most 47 bits


@dataclasses.dataclass(frozen=True)
class Binning:
    """Parameters of the symbol -> bin mapping (`exact_log2 >= mantissa_bits >= 0`)."""

    exact_log2: int
    mantissa_bits: int

    def __post_init__(self) -> None:
        if not 0 <= self.mantissa_bits <= self.exact_log2 <= MAX_MAGNITUDE_LOG2:
            raise ValueError(f"invalid binning {self}")

    @property
    def max_bin(self) -> int:
        """Largest unsigned bin index (for |v| < 2**MAX_MAGNITUDE_LOG2)."""
        octaves = MAX_MAGNITUDE_LOG2 - self.exact_log2
        return (1 << self.exact_log2) + octaves * (1 << self.mantissa_bits) - 1


def floor_log2(values: np.ndarray) -> np.ndarray:
    """floor(log2(v)) for integers v >= 1, exact (no float rounding) for v < 2**63."""
    values = np.asarray(values, dtype=np.uint64)
    result = np.zeros(values.shape, dtype=np.int64)
    remaining = values.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = remaining >= (np.uint64(1) << np.uint64(shift))
        result[big] += shift
        remaining[big] >>= np.uint64(shift)
    return result


def to_bins(values: np.ndarray, binning: Binning, octaves: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed bins, raw offsets and raw bit counts of integer values (each an int64 array).

    `octaves` (floor_log2 of |values|, any value where |v| = 0) may be given to save recomputing it.
    """
    values = np.asarray(values, dtype=np.int64)
    magnitude = np.abs(values)
    if magnitude.size and int(magnitude.max()) >= (1 << MAX_MAGNITUDE_LOG2):
        raise ValueError("magnitude too large to bin")
    exact_limit = 1 << binning.exact_log2
    big = magnitude >= exact_limit
    bins = magnitude.copy()
    offsets = np.zeros_like(magnitude)
    nbits = np.zeros_like(magnitude)
    if big.any():
        big_magnitude = magnitude[big]
        octave = floor_log2(big_magnitude) if octaves is None else np.asarray(octaves)[big]
        shift = octave - binning.mantissa_bits
        mantissa = (big_magnitude >> shift) - (1 << binning.mantissa_bits)
        bins[big] = exact_limit + ((octave - binning.exact_log2) << binning.mantissa_bits) + mantissa
        offsets[big] = big_magnitude & ((np.int64(1) << shift) - 1)
        nbits[big] = shift
    return np.where(values < 0, -bins, bins), offsets, nbits


def raw_bit_counts(signed_bins: np.ndarray, binning: Binning) -> np.ndarray:
    """Number of raw offset bits that follow each signed bin."""
    bins = np.abs(np.asarray(signed_bins, dtype=np.int64))
    exact_limit = 1 << binning.exact_log2
    octave = binning.exact_log2 + ((bins - exact_limit) >> binning.mantissa_bits)
    return np.where(bins >= exact_limit, octave - binning.mantissa_bits, 0)


def from_bins(signed_bins: np.ndarray, offsets: np.ndarray, binning: Binning) -> np.ndarray:
    """Inverse of `to_bins`: integer values from signed bins and raw offsets."""
    signed_bins = np.asarray(signed_bins, dtype=np.int64)
    bins = np.abs(signed_bins)
    exact_limit = 1 << binning.exact_log2
    big = bins >= exact_limit
    magnitude = bins.copy()
    if big.any():
        index = bins[big] - exact_limit
        octave = binning.exact_log2 + (index >> binning.mantissa_bits)
        mantissa = index & ((1 << binning.mantissa_bits) - 1)
        shift = octave - binning.mantissa_bits
        magnitude[big] = (((1 << binning.mantissa_bits) + mantissa) << shift) + np.asarray(offsets, np.int64)[big]
    return np.where(signed_bins < 0, -magnitude, magnitude)


def pack_bits(values: np.ndarray, nbits: np.ndarray) -> bytes:
    """Concatenates each value's `nbits` low bits, most significant first, into bytes."""
    values = np.asarray(values, dtype=np.uint64)
    nbits = np.asarray(nbits, dtype=np.int64)
    total = int(nbits.sum())
    if total == 0:
        return b""
    starts = np.cumsum(nbits) - nbits
    bits = np.zeros(total, dtype=np.uint8)
    for position in range(int(nbits.max())):
        has = nbits > position
        shift = (nbits[has] - 1 - position).astype(np.uint64)
        bits[starts[has] + position] = ((values[has] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes()


def bit_windows(data: bytes) -> np.ndarray:
    """Overlapping big-endian 64-bit words starting at every byte of `data` (a strided view, no copy)."""
    padded = bytearray(len(data) + 8)
    padded[:len(data)] = data
    return np.ndarray(shape=(len(data) + 1,), dtype=">u8", buffer=padded, strides=(1,))


def unpack_bits(data: bytes, nbits: np.ndarray, first_bit: int = 0, windows: np.ndarray | None = None) -> np.ndarray:
    """Inverse of `pack_bits` (each count <= 56), reading from bit `first_bit` of `data`.

    Raises ValueError when `data` holds too few bits. Vectorised: every value is cut out of the
    big-endian 64-bit window starting at its first byte (`windows`: `bit_windows(data)`, to reuse).
    """
    nbits = np.asarray(nbits)
    if nbits.size == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.cumsum(nbits, dtype=np.int64)
    total = int(starts[-1])
    if total == 0:
        return np.zeros(nbits.shape, dtype=np.int64)
    if int(nbits.max()) > 56:
        raise ValueError("raw bits: more than 56 bits for one value")
    if len(data) * 8 < first_bit + total:
        raise ValueError(f"raw bits: need {first_bit + total} bits, have {len(data) * 8}")
    starts -= nbits
    starts += first_bit
    if windows is None:
        windows = bit_windows(data)
    window = windows[starts >> 3].astype(np.uint64)
    window <<= (starts & 7).astype(np.uint64)
    window >>= np.uint64(1)  # two shifts, so that a count of 0 shifts by 64 in total and gives 0
    window >>= (63 - nbits).astype(np.uint64)
    return window.view(np.int64)
