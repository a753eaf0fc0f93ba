"""nnlc.coding: binning, integer tables and ANS coding of integer arrays."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nnlc.coding import binning, symbols, tables


@given(hnp.arrays(np.int64, st.integers(0, 300), elements=st.integers(-(1 << 40), 1 << 40)),
       st.integers(0, 6), st.integers(0, 6))
@settings(max_examples=60, deadline=None)
def test_binning_round_trip(values, mantissa_bits, extra):
    config = binning.Binning(mantissa_bits + extra, mantissa_bits)
    bins, offsets, nbits = binning.to_bins(values, config)
    np.testing.assert_array_equal(binning.raw_bit_counts(bins, config), nbits)
    packed = binning.pack_bits(offsets, nbits)
    np.testing.assert_array_equal(binning.unpack_bits(packed, nbits), offsets)
    np.testing.assert_array_equal(binning.from_bins(bins, offsets, config), values)


def test_floor_log2_is_exact_at_powers_of_two():
    values = np.array([1, 2, 3, 4, 7, 8, (1 << 40) - 1, 1 << 40, (1 << 53) + 1], dtype=np.int64)
    np.testing.assert_array_equal(binning.floor_log2(values), [0, 1, 1, 2, 2, 3, 39, 40, 53])


def test_unpack_rejects_short_data():
    with pytest.raises(ValueError, match="need"):
        binning.unpack_bits(b"\x00", np.array([5, 5]))


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=500), st.integers(9, 16))
@settings(max_examples=60, deadline=None)
def test_quantized_frequencies_sum_and_keep_every_used_symbol(weights, precision):
    weights = np.array(weights)
    if not np.any(weights > 0):
        weights[0] = 1.0
    frequencies = tables.quantize_frequencies(weights, precision)
    assert frequencies.sum() == 1 << precision
    assert np.all((frequencies > 0) == (weights > 0))


def test_table_rejects_bad_sums():
    with pytest.raises(ValueError, match="sum"):
        tables.Table(8, 0, np.array([100, 100]))


@pytest.mark.parametrize("scale", [0.0, 0.4, 3.0, 60.0, 3000.0, 2e6])
def test_symbols_round_trip_and_code_length_close_to_ideal(scale):
    rng = np.random.default_rng(int(scale))
    values = np.round(rng.laplace(0, scale, 50_000)).astype(np.int64) if scale else np.zeros(1000, np.int64)
    fields = symbols.encode_symbols(values)
    np.testing.assert_array_equal(symbols.decode_symbols(fields, values.size), values)
    ideal = symbols.ideal_code_bits(fields, values)
    actual = 8 * (len(fields["ans_words"]) + len(fields["raw_bits"]))
    # ANS flushes at most two 32-bit words; otherwise within 0.5% of the ideal length
    assert actual <= ideal * 1.005 + 64


def test_plan_never_loses_to_the_plain_exact_table():
    rng = np.random.default_rng(0)
    for scale in (0.7, 2.0, 40.0):
        values = np.round(rng.laplace(0, scale, 10_000)).astype(np.int64)
        plan = symbols.plan_coding(values)
        top = int(np.abs(values).max()).bit_length()
        exact = binning.Binning(max(1, top), 0)
        bins, _, _ = binning.to_bins(values, exact)
        first = int(bins.min())
        counts = np.bincount(bins - first)
        exact_bits = min(tables.ideal_bits(tables.table_from_counts(first, counts, p), counts) + 8 * (
            symbols._varint_length(tables.table_from_counts(first, counts, p).frequencies) + 4) for p in (12, 14, 16))
        assert plan.estimated_bits <= exact_bits + 1e-6
        assert abs(plan.payload_bits - symbols.ideal_code_bits(symbols.encode_symbols(values, plan), values)) < 1e-6 * plan.payload_bits + 1


def test_escape_symbols_code_values_outside_the_table():
    values = np.array([0, 1, -1, 0, 500, 0, -70000, 2], dtype=np.int64)
    counts = np.array([1, 2, 3, 1])  # bins -1..2 only
    table = tables.table_from_counts(-1, counts, 12, escape_count=2)
    plan = symbols.CodingPlan(binning.Binning(3, 2), table, 0.0, 0, 0.0)
    fields = symbols.encode_symbols(values, plan)
    assert fields["escapes"] and fields["escape_frequency"] > 0
    np.testing.assert_array_equal(symbols.decode_symbols(fields, values.size), values)


def test_without_escape_symbol_out_of_table_values_are_refused():
    table = tables.table_from_counts(0, np.array([5, 5]), 8)
    plan = symbols.CodingPlan(binning.Binning(3, 2), table, 0.0, 0, 0.0)
    with pytest.raises(ValueError, match="escape"):
        symbols.encode_symbols(np.array([0, 1, 7]), plan)


def test_dequantized_fast_path_equals_integer_path():
    rng = np.random.default_rng(5)
    for scale in (3.0, 300.0):
        values = np.round(rng.laplace(0, scale, 20_000)).astype(np.int64)
        fields = symbols.encode_symbols(values)
        step = np.float32(0.0123)
        fast = symbols.decode_dequantized(fields, values.size, step, 1 << 23)
        np.testing.assert_array_equal(fast, values.astype(np.float32) * step)


@pytest.mark.parametrize("chunk", [997, 1 << 20])
def test_raw_bits_escapes_and_plain_symbols_across_chunks(monkeypatch, chunk):
    """Only symbols outside the raw-bit-free bins get integer work: raw bits, escapes and plain
    symbols mixed over chunk boundaries decode exactly, in both decoders, and leftovers are refused."""
    monkeypatch.setattr(symbols, "DECODE_CHUNK", chunk)
    rng = np.random.default_rng(7)
    inside = np.round(rng.laplace(0, 300, 8_000)).astype(np.int64)
    plan = symbols.plan_coding(inside)
    bins, _, nbits = binning.to_bins(inside, plan.binning)
    assert nbits.any() and not nbits.all()  # both kinds of bins occur
    counts = np.bincount(bins - plan.table.first, minlength=len(plan.table.frequencies))
    table = tables.table_from_counts(plan.table.first, counts, 16, escape_count=3)
    values = inside.copy()
    values[[5, 3_000, 7_999]] = [1 << 20, -(1 << 21), 12345678]  # beyond the table: escapes, with raw bits
    fields = symbols.encode_symbols(values, symbols.CodingPlan(plan.binning, table, 0.0, 0, 0.0))
    assert fields["escapes"] and fields["raw_bits"]
    np.testing.assert_array_equal(symbols.decode_symbols(fields, values.size), values)
    step = np.float32(0.0123)
    np.testing.assert_array_equal(symbols.decode_dequantized(fields, values.size, step, 1 << 24),
                                  values.astype(np.float32) * step)
    with pytest.raises(ValueError, match="beyond"):
        symbols.decode_dequantized(fields, values.size, step, 1 << 20)
    for broken, message in (({**fields, "raw_bits": fields["raw_bits"] + b"\0"}, "raw_bits"),
                            ({**fields, "raw_bits": fields["raw_bits"][:-1]}, "raw bits"),
                            ({**fields, "escapes": fields["escapes"] + b"\x02"}, "escapes")):
        with pytest.raises(ValueError, match=message):
            symbols.decode_symbols(broken, values.size)
