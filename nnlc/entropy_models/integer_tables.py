"""Coding mode: integer probability tables built once, after training, from a learned density.

Training mode evaluates densities in jax float32 and never needs integers. For coding, each channel's
density is turned into an integer table over the integers first..last plus an escape symbol:

1. support: the quantiles q(tail) and q(1 - tail) of c, found by bisection in float64
   (`math.quantiles`), widened to the integer bins containing them;
2. P(k) = c(k + 1/2) - c(k - 1/2) over the support, in numpy float64 and log space;
3. bins at either edge with P(k) < 2**-precision are moved into the escape symbol (a table entry
   cannot represent less than 2**-precision anyway, and each entry costs side information);
4. the escape weight is the mass left outside the table, c(first - 1/2) + 1 - c(last + 1/2);
5. `nnlc.coding.tables.quantize_frequencies` turns the weights into integers summing to
   2**precision, every bin and the escape getting frequency >= 1.

The table is stored in the bitstream as integers, so the decoder never evaluates the density.
With `Binning(exact_log2=E, mantissa_bits=0)` and 2**E above the support's largest magnitude, bins
are the integers themselves, and values outside the table are sent through the escape path.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from nnlc.coding.binning import Binning
from nnlc.coding.symbols import CodingPlan
from nnlc.coding.tables import Table, quantize_frequencies
from nnlc.entropy_models import math

DEFAULT_PRECISION = 16
DEFAULT_TAIL_PROBABILITY = 1e-9  # each tail: the support is [q(1e-9), q(1 - 1e-9)]
MAX_SUPPORT_WIDTH = 1 << 20  # bins evaluated before trimming


def _logits_fn(model: Any) -> math.LogitsCdf:
    """The CDF-logits function of a Flax module or math module (attribute `logits_cdf`), or the
    function itself."""
    return getattr(model, "logits_cdf", model)


def channel_params(params: Any, channel: int) -> Any:
    """The parameters of one channel, as numpy float64 with a channel axis of length 1."""
    return jax.tree.map(lambda leaf: np.asarray(leaf, dtype=np.float64)[channel:channel + 1], params)


def support(model: Any, params: Any, channel: int,
            tail_probability: float = DEFAULT_TAIL_PROBABILITY) -> tuple[int, int]:
    """Integers (lower, upper) whose bins [k - 1/2, k + 1/2] cover [q(tail), q(1 - tail)]."""
    logits_cdf = _logits_fn(model)
    tail_logit = np.log(tail_probability) - np.log1p(-tail_probability)
    bounds = math.quantiles_at_logits(logits_cdf, channel_params(params, channel),
                                      [tail_logit, -tail_logit])[:, 0]
    return int(np.floor(bounds[0] + 0.5)), int(np.floor(bounds[1] + 0.5))


def to_integer_table(model: Any, params: Any, channel: int, precision: int = DEFAULT_PRECISION,
                     tail_probability: float = DEFAULT_TAIL_PROBABILITY,
                     min_probability: float | None = None) -> tuple[int, np.ndarray, int]:
    """(first_bin, frequencies, escape_frequency) of one channel's density.

    frequencies (np.int64) cover the integers first_bin..first_bin + len - 1; together with
    escape_frequency (>= 1) they sum to 2**precision. min_probability (default 2**-precision)
    is the smallest bin probability kept at the table's edges; 0 keeps the whole support.
    """
    logits_cdf = _logits_fn(model)
    one_channel = channel_params(params, channel)
    lower, upper = support(logits_cdf, params, channel, tail_probability)
    if upper - lower + 1 > MAX_SUPPORT_WIDTH:
        raise ValueError(f"channel {channel}: support {lower}..{upper} too wide for a table")
    integers = np.arange(lower, upper + 1, dtype=np.float64)[:, None]
    logits_lower = logits_cdf(one_channel, integers - 0.5)[:, 0]
    logits_upper = logits_cdf(one_channel, integers + 0.5)[:, 0]
    probabilities = np.exp(math.log_bin_probabilities(logits_lower, logits_upper))

    if min_probability is None:
        min_probability = 2.0**-precision
    kept = np.flatnonzero(probabilities >= min_probability)
    if kept.size == 0:
        raise ValueError(f"channel {channel}: no bin reaches probability {min_probability:g}; "
                         "the density is too wide for a table of this precision")
    start, stop = int(kept[0]), int(kept[-1]) + 1
    if stop - start + 1 > 1 << precision:
        raise ValueError(f"channel {channel}: {stop - start} bins do not fit precision {precision}")
    escape_mass = float(math.sigmoid(logits_lower[start]) + math.sigmoid(-logits_upper[stop - 1]))
    weights = np.append(probabilities[start:stop], max(escape_mass, np.finfo(np.float64).tiny))
    frequencies = quantize_frequencies(weights, precision)
    return lower + start, frequencies[:-1], int(frequencies[-1])


def integer_table(model: Any, params: Any, channel: int, precision: int = DEFAULT_PRECISION,
                  tail_probability: float = DEFAULT_TAIL_PROBABILITY) -> Table:
    """`to_integer_table` as a `nnlc.coding.tables.Table` (which checks the sum)."""
    first, frequencies, escape_frequency = to_integer_table(model, params, channel, precision,
                                                            tail_probability)
    return Table(precision, first, frequencies, escape_frequency)


def coding_plan_for(model: Any, params: Any, channel: int, precision: int = DEFAULT_PRECISION,
                    tail_probability: float = DEFAULT_TAIL_PROBABILITY) -> CodingPlan:
    """A `CodingPlan` whose bins are the integers themselves (mantissa_bits = 0, 2**exact_log2 above
    the table's largest magnitude), for `nnlc.coding.symbols.encode_symbols(values, plan)`.

    The plan's size fields are 0: nothing was estimated. Values outside the table are escaped.
    """
    table = integer_table(model, params, channel, precision, tail_probability)
    last = table.first + len(table.frequencies) - 1
    exact_log2 = max(1, max(abs(table.first), abs(last)).bit_length())
    return CodingPlan(Binning(exact_log2, 0), table, 0, 0, 0)
