"""Integer probability tables (the coding-mode entropy models) and their ideal code lengths.

A table is a run of integer frequencies summing to 2**precision over the signed bins
[first, first + n), plus an optional escape symbol for bins outside that range. Tables are built by
the encoder (from counts, or from a learned density) and stored in the bitstream as integers, so the
decoder never recomputes probabilities from floats.
"""

from __future__ import annotations

import dataclasses

import numpy as np

MAX_PRECISION = 16
MAX_TABLE_SIZE = 1 << 16


@dataclasses.dataclass(frozen=True)
class Table:
    """Frequencies of bins first..first+len(frequencies)-1, and of the escape symbol."""

    precision: int
    first: int
    frequencies: np.ndarray  # int64, each >= 0
    escape_frequency: int = 0

    def __post_init__(self) -> None:
        total = int(np.sum(self.frequencies)) + self.escape_frequency
        if not 1 <= self.precision <= MAX_PRECISION:
            raise ValueError(f"table precision {self.precision} outside 1..{MAX_PRECISION}")
        if total != 1 << self.precision:
            raise ValueError(f"table frequencies sum to {total}, expected 2**{self.precision}")
        if np.any(self.frequencies < 0) or self.escape_frequency < 0:
            raise ValueError("negative table frequency")

    @property
    def alphabet_size(self) -> int:
        """Symbols the ANS coder sees: the bins, plus one escape symbol when it is used."""
        return len(self.frequencies) + (1 if self.escape_frequency else 0)

    def probabilities(self) -> np.ndarray:
        """Exact dyadic probabilities (frequency / 2**precision) of the coder's alphabet."""
        frequencies = self.frequencies
        if self.escape_frequency:
            frequencies = np.append(frequencies, self.escape_frequency)
        return frequencies.astype(np.float64) / float(1 << self.precision)


def quantize_frequencies(weights: np.ndarray, precision: int) -> np.ndarray:
    """Integer frequencies summing to 2**precision, proportional to `weights` (counts or a pmf).

    Every positive weight gets frequency >= 1, zero weights get 0. Deterministic: the largest
    remainders get the leftover units, ties broken by index.
    """
    weights = np.asarray(weights, dtype=np.float64)
    total = 1 << precision
    positive = weights > 0
    needed = int(positive.sum())
    if needed == 0:
        raise ValueError("no positive weight")
    if needed > total:
        raise ValueError(f"{needed} symbols cannot fit a table of precision {precision}")
    # One unit per positive symbol, the rest shared in proportion to the weights.
    share = weights / weights.sum() * (total - needed)
    frequencies = np.floor(share).astype(np.int64)
    frequencies[positive] += 1
    leftover = total - int(frequencies.sum())
    if leftover > 0:
        remainders = np.where(positive, share - np.floor(share), -1.0)
        order = np.lexsort((np.arange(len(weights)), -remainders))
        frequencies[order[:leftover]] += 1
    return frequencies


def table_from_counts(first: int, counts: np.ndarray, precision: int, escape_count: int = 0) -> Table:
    """A table for bins first..first+len(counts)-1 fitted to observed counts."""
    weights = np.append(np.asarray(counts, dtype=np.float64), float(escape_count))
    frequencies = quantize_frequencies(weights, precision)
    return Table(precision, int(first), frequencies[:-1], int(frequencies[-1]))


def ideal_bits(table: Table, counts: np.ndarray, escape_count: int = 0) -> float:
    """Sum of -log2 p over symbols with the given per-bin counts (the ideal code length)."""
    counts = np.asarray(counts, dtype=np.float64)
    used = counts > 0
    if np.any(table.frequencies[used] == 0):
        return float("inf")
    bits = float(np.sum(counts[used] * (table.precision - np.log2(table.frequencies[used]))))
    if escape_count:
        if table.escape_frequency == 0:
            return float("inf")
        bits += escape_count * (table.precision - np.log2(table.escape_frequency))
    return bits
