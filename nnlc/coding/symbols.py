"""Entropy coding of integer arrays: binning + integer table + constriction ANS + escapes + raw bits.

`encode_symbols` picks the binning and table precision that minimise the total size (table side
information included) and returns the fields of the bitstream's `symbols` structure;
`decode_symbols` inverts it. Decoding is vectorised: one constriction call per chunk of symbols, one
table lookup per symbol, and integer work only for the few symbols that carry raw bits or escape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import constriction
import numpy as np

from nnlc.coding.binning import (Binning, bit_windows, floor_log2, from_bins, pack_bits, raw_bit_counts, to_bins,
                                 unpack_bits)
from nnlc.coding.tables import Table, ideal_bits, table_from_counts

PRECISIONS = (16, 14, 12, 10, 8)
MANTISSA_BITS = (1, 2, 3, 4, 5)
# Decoding a symbol that carries raw bits costs about as much time as decoding the symbol itself:
# the plan charges this many bits per such symbol, so large tensors prefer exact (wider) tables.
RAW_SYMBOL_PENALTY_BITS = 0.02
DECODE_CHUNK = 1 << 20  # symbols decoded per step: bounds the decoder's working memory
ANS_PRECISION = 24  # constriction's AnsCoder models: no symbol costs more than 24 bits


def _varint_length(values: np.ndarray) -> int:
    """Bytes that LEB128 needs for each value, summed."""
    values = np.maximum(np.asarray(values, dtype=np.int64), 1)
    return int(np.sum((np.floor(np.log2(values)).astype(np.int64) // 7) + 1))


def _zigzag(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    return np.where(values >= 0, 2 * values, -2 * values - 1)


def _unzigzag(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    return np.where(values % 2 == 0, values >> 1, -(values >> 1) - 1)


@dataclasses.dataclass
class CodingPlan:
    """The chosen binning and table, with the size estimate that chose them."""

    binning: Binning
    table: Table
    estimated_bits: float
    table_bits: int
    payload_bits: float


def _binned_histogram(unique_values: np.ndarray, counts: np.ndarray, binning: Binning,
                      octaves: np.ndarray | None = None):
    bins, _, nbits = to_bins(unique_values, binning, octaves)
    bin_values, inverse = np.unique(bins, return_inverse=True)
    bin_counts = np.bincount(inverse, weights=counts).astype(np.int64)
    raw_bits = int(np.sum(counts * nbits))
    raw_symbols = int(np.sum(counts[nbits > 0]))
    return bin_values, bin_counts, raw_bits, raw_symbols


def _entropy_bits(counts: np.ndarray) -> float:
    total = counts.sum()
    return float(np.sum(counts * np.log2(total / counts))) if total else 0.0


def plan_coding(values: np.ndarray, finalists: int = 3) -> CodingPlan:
    """Searches binnings and precisions for the smallest size of `values` (ideal code length).

    Binnings are ranked by the empirical entropy of their bins plus raw bits, an estimate of the
    table's size at 16-bit precision and the raw-symbol penalty; the best `finalists` get exact
    integer tables at every precision, and the smallest total wins.
    """
    unique_values, counts = np.unique(np.asarray(values, dtype=np.int64), return_counts=True)
    max_magnitude = int(np.max(np.abs(unique_values))) if unique_values.size else 0
    top = max(1, max_magnitude.bit_length())
    candidates = [(m, e) for m in MANTISSA_BITS for e in range(m, max(m, top) + 1)]
    if not candidates or max_magnitude < 2:
        candidates = [(0, max(1, top))]
    total = float(counts.sum())
    octaves = floor_log2(np.maximum(np.abs(unique_values), 1))
    ranked = []
    for mantissa_bits, exact_log2 in candidates:
        binning = Binning(exact_log2, mantissa_bits)
        bin_values, bin_counts, raw_bits, raw_symbols = _binned_histogram(unique_values, counts, binning, octaves)
        first, last = int(bin_values[0]), int(bin_values[-1])
        if last - first + 1 > 1 << 16:
            continue
        dense_counts = np.zeros(last - first + 1, dtype=np.int64)
        dense_counts[bin_values - first] = bin_counts
        approximate_table = 8 * (_varint_length(np.maximum(1, dense_counts * (65536.0 / total))) + 4)
        estimate = _entropy_bits(bin_counts) + raw_bits + approximate_table + RAW_SYMBOL_PENALTY_BITS * raw_symbols
        ranked.append((estimate, binning, first, dense_counts, raw_bits, raw_symbols))
    ranked.sort(key=lambda entry: entry[0])
    best: CodingPlan | None = None
    for _, binning, first, dense_counts, raw_bits, raw_symbols in ranked[:finalists]:
        for precision in PRECISIONS:
            if np.count_nonzero(dense_counts) > 1 << precision:
                break
            table = table_from_counts(first, dense_counts, precision)
            payload = ideal_bits(table, dense_counts) + raw_bits
            table_bits = 8 * (_varint_length(table.frequencies) + 4)
            estimated = payload + table_bits + RAW_SYMBOL_PENALTY_BITS * raw_symbols
            if best is None or estimated < best.estimated_bits:
                best = CodingPlan(binning, table, estimated, table_bits, payload)
    assert best is not None
    return best


def encode_symbols(values: np.ndarray, plan: CodingPlan | None = None) -> dict:
    """Fields of the `symbols` structure coding the integer array `values` (flattened, C order)."""
    values = np.asarray(values, dtype=np.int64).ravel()
    if plan is None:
        plan = plan_coding(values)
    table = plan.table
    bins, offsets, nbits = to_bins(values, plan.binning)
    index = bins - table.first
    size = len(table.frequencies)
    outside = (index < 0) | (index >= size)
    if np.any(outside) and table.escape_frequency == 0:
        raise ValueError("symbols outside the table and no escape symbol")
    if np.any(outside):
        index = np.where(outside, size, index)
    inside = ~outside
    if np.any(table.frequencies[index[inside]] == 0):
        raise ValueError("a symbol has zero frequency in the table")
    words = b""
    if values.size and table.alphabet_size > 1:  # a one-symbol alphabet costs no bits
        coder = constriction.stream.stack.AnsCoder()
        model = constriction.stream.model.Categorical(table.probabilities(), perfect=False)
        coder.encode_reverse(index.astype(np.int32), model)
        words = coder.get_compressed().astype("<u4").tobytes()
    escapes = b""
    if np.any(outside):
        from nnlc.bitstream.syntax import Writer  # local: keeps coding free of format imports

        writer = Writer()
        for value in _zigzag(bins[outside]):
            writer.varint(int(value))
        escapes = bytes(writer.buffer)
    return {
        "exact_log2": plan.binning.exact_log2,
        "mantissa_bits": plan.binning.mantissa_bits,
        "precision": table.precision,
        "first_bin": table.first,
        "frequencies": table.frequencies.tolist(),
        "escape_frequency": table.escape_frequency,
        "ans_words": words,
        "escapes": escapes,
        "raw_bits": pack_bits(offsets, nbits),
    }


def table_of(fields: dict) -> Table:
    """The integer table stored in a `symbols` structure (raises ValueError if invalid)."""
    return Table(fields["precision"], fields["first_bin"], np.asarray(fields["frequencies"], dtype=np.int64),
                 fields["escape_frequency"])


def _decode_varints(data: bytes) -> np.ndarray:
    """Every LEB128 value (each < 2**63, so at most 9 bytes) of `data`, which they must fill; vectorised."""
    raw = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(raw < 0x80)
    if len(raw) and (not len(ends) or ends[-1] != len(raw) - 1):
        raise ValueError("escapes: truncated varint")
    if not len(ends):
        return np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1))
    if int(np.max(ends - starts)) > 8:
        raise ValueError("escapes: value too large")
    owner = np.repeat(np.arange(len(ends)), ends - starts + 1)
    shifts = (7 * (np.arange(len(raw)) - starts[owner])).astype(np.uint64)
    parts = (raw & 0x7F).astype(np.uint64) << shifts
    return np.bitwise_or.reduceat(parts, starts).astype(np.int64)


def _checked_table(fields: dict, count: int) -> tuple[Binning, Table]:
    binning = Binning(fields["exact_log2"], fields["mantissa_bits"])
    table = table_of(fields)
    words = len(fields["ans_words"])
    if words % 4:
        raise ValueError("ans_words: length is not a multiple of 4")
    if table.alphabet_size == 0:
        raise ValueError("empty table")
    size = len(table.frequencies)
    if max(abs(table.first), abs(table.first + size - 1)) > binning.max_bin:
        raise ValueError("table bins outside the binning's range")
    if table.alphabet_size == 1 and words:
        raise ValueError("ans_words: present for a one-symbol alphabet")
    # A symbol costs at most ANS_PRECISION bits, the coder's state at most two words.
    if words // 4 > (count * ANS_PRECISION + 31) // 32 + 2:
        raise ValueError(f"ans_words: {words // 4} words is more than {count} symbols can need")
    return binning, table


def _index_chunks(fields: dict, table: Table, count: int) -> Iterator[np.ndarray]:
    """Table indices (int32; len(frequencies) is the escape symbol) in chunks of DECODE_CHUNK.

    After the last chunk, checks that the symbols used up every ANS word.
    """
    if table.alphabet_size == 1:
        for start in range(0, count, DECODE_CHUNK):
            yield np.zeros(min(DECODE_CHUNK, count - start), dtype=np.int32)
        return
    words = np.frombuffer(fields["ans_words"], dtype="<u4").astype(np.uint32)
    coder = constriction.stream.stack.AnsCoder(words)
    model = constriction.stream.model.Categorical(table.probabilities(), perfect=False)
    for start in range(0, count, DECODE_CHUNK):
        yield coder.decode(model, min(DECODE_CHUNK, count - start))
    if not coder.is_empty():
        raise ValueError("ans_words: data left after decoding every symbol")


def _table_lookups(binning: Binning, table: Table) -> tuple[np.ndarray, np.ndarray]:
    """Value with zero offset and raw bit count of every table bin (the escape slot last, as 0)."""
    table_bins = np.arange(table.first, table.first + len(table.frequencies) + 1, dtype=np.int64)
    table_bins[-1] = 0
    return from_bins(table_bins, np.zeros_like(table_bins), binning), raw_bit_counts(table_bins, binning)


def _plain_range(nbits_lut: np.ndarray, table: Table) -> tuple[int, int]:
    """(lo, hi): table indices lo..hi (inclusive) carry no raw bits and are not the escape; every
    other index is 'special'. Raw bit counts never decrease with a bin's magnitude, so the bins
    without them are consecutive: one range (lo > hi when there is none)."""
    plain = np.flatnonzero(nbits_lut[:-1] == 0)
    if not len(plain):
        return 1, 0
    return int(plain[0]), int(plain[-1])


@dataclasses.dataclass(frozen=True)
class _Lookups:
    """What decoding a `symbols` structure needs besides the symbols (checked, built once)."""

    binning: Binning
    table: Table
    base_lut: np.ndarray  # value of each table index with zero raw offset (escape slot last, 0)
    nbits_lut: np.ndarray  # raw bits after each table index
    lo: int  # table indices lo..hi carry no raw bits and are not the escape (`_plain_range`)
    hi: int


def _lookups(fields: dict, count: int) -> _Lookups:
    binning, table = _checked_table(fields, count)
    base_lut, nbits_lut = _table_lookups(binning, table)
    return _Lookups(binning, table, base_lut, nbits_lut, *_plain_range(nbits_lut, table))


def _chunks(fields: dict, count: int, lookups: _Lookups) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(table indices, positions of special symbols, their integer values) per chunk of DECODE_CHUNK.

    A symbol is special when its bin carries raw bits or it is an escape: they are few, and only
    they are decoded beyond a table lookup. Memory is O(DECODE_CHUNK) besides the input; every
    consistency check has run by the last chunk.
    """
    binning, table, base_lut, nbits_lut = lookups.binning, lookups.table, lookups.base_lut, lookups.nbits_lut
    lo, hi = lookups.lo, lookups.hi
    size = len(table.frequencies)
    escaped_bins = _unzigzag(_decode_varints(bytes(fields["escapes"])))
    if np.any(np.abs(escaped_bins) > binning.max_bin):
        raise ValueError("escaped bin outside the binning's range")
    raw = fields["raw_bits"]
    windows = bit_windows(raw) if len(raw) else None
    escapes_used = bits_used = 0
    no_positions = np.zeros(0, dtype=np.intp)
    for index in _index_chunks(fields, table, count):
        if lo == 0 and hi == size - 1 and not table.escape_frequency:
            yield index, no_positions, np.zeros(0, dtype=np.int64)
            continue
        special = np.flatnonzero((index < lo) | (index > hi))
        special_index = index[special]
        values = base_lut[special_index]
        nbits = nbits_lut[special_index]
        escaped = np.flatnonzero(special_index == size)
        if len(escaped):
            bins = escaped_bins[escapes_used:escapes_used + len(escaped)]
            if len(bins) != len(escaped):
                raise ValueError("escapes: fewer values than escaped symbols")
            escapes_used += len(escaped)
            values[escaped] = from_bins(bins, np.zeros_like(bins), binning)
            nbits[escaped] = raw_bit_counts(bins, binning)
        if len(special) and nbits.any():
            if windows is None:
                raise ValueError("raw_bits: empty, but symbols carry raw bits")
            offsets = unpack_bits(raw, nbits, bits_used, windows)
            np.negative(offsets, out=offsets, where=values < 0)  # away from zero: the bin carries the sign
            values += offsets
            bits_used += int(nbits.sum(dtype=np.int64))
        yield index, special, values
    if escapes_used != len(escaped_bins):
        raise ValueError(f"escapes: {len(escaped_bins) - escapes_used} values left after the escaped symbols")
    if len(raw) != (bits_used + 7) // 8:
        raise ValueError("raw_bits: length does not match the symbols' raw bits")


def decode_symbols(fields: dict, count: int) -> np.ndarray:
    """Decodes `count` integers from a `symbols` structure. Raises ValueError on inconsistent data."""
    values = np.empty(count, dtype=np.int64)
    lookups = _lookups(fields, count)
    start = 0
    for index, special, special_values in _chunks(fields, count, lookups):
        part = values[start:start + len(index)]
        np.take(lookups.base_lut, index, out=part, mode="clip")
        part[special] = special_values
        start += len(index)
    return values


def decode_dequantized(fields: dict, count: int, step: np.float32, max_magnitude: int) -> np.ndarray:
    """float32(q) * step for the integers q of a `symbols` structure, in float32, without
    materialising q: one table lookup per symbol, plus integer work for the few that carry raw bits
    or are escapes. Raises ValueError for |q| > max_magnitude."""
    values = np.empty(count, dtype=np.float32)
    step = np.float32(step)
    lookups = _lookups(fields, count)
    lo, hi = lookups.lo, lookups.hi
    if lo <= hi and np.max(np.abs(lookups.base_lut[lo:hi + 1])) > max_magnitude:
        raise ValueError(f"quantized value beyond {max_magnitude}")
    float_lut = lookups.base_lut.astype(np.float32) * step
    start = 0
    for index, special, special_values in _chunks(fields, count, lookups):
        part = values[start:start + len(index)]
        np.take(float_lut, index, out=part, mode="clip")
        if len(special):
            if np.max(np.abs(special_values)) > max_magnitude:
                raise ValueError(f"quantized value beyond {max_magnitude}")
            part[special] = special_values.astype(np.float32) * step
        start += len(index)
    return values


def ideal_code_bits(fields: dict, values: np.ndarray) -> float:
    """Ideal code length (bits) of `values` under the table and binning stored in `fields`."""
    binning = Binning(fields["exact_log2"], fields["mantissa_bits"])
    table = table_of(fields)
    bins, _, nbits = to_bins(np.asarray(values, dtype=np.int64).ravel(), binning)
    index = bins - table.first
    outside = (index < 0) | (index >= len(table.frequencies))
    counts = np.bincount(index[~outside], minlength=len(table.frequencies))
    return ideal_bits(table, counts, int(outside.sum())) + float(nbits.sum())
