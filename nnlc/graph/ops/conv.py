"""Convolutions and pooling over N spatial dimensions (inputs laid out N, C, D1, ..., Dn)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnlc.graph.ops._common import dtype_of, shape_of, splat_value
from nnlc.graph.registry import NodeContext, register


def _dimension_numbers(spatial: int) -> lax.ConvDimensionNumbers:
    layout = tuple(range(spatial + 2))
    return lax.ConvDimensionNumbers(lhs_spec=layout, rhs_spec=layout, out_spec=layout)


def _per_axis(ctx: NodeContext, name: str, spatial: int, default: int) -> list[int]:
    value = ctx.attr(name)
    return [default] * spatial if value is None else [int(v) for v in value]


def _same_pads(auto_pad: str, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> list[tuple[int, int]]:
    """Pads giving ceil(size / stride) outputs; SAME_UPPER puts the odd extra at the end."""
    pads = []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        pads.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
    return pads


def _explicit_pads(ctx: NodeContext, sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                   dilations: Sequence[int]) -> list[tuple[int, int]]:
    spatial = len(sizes)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return _same_pads(auto_pad, sizes, kernel, strides, dilations)
    if auto_pad == "VALID":
        return [(0, 0)] * spatial
    pads = _per_axis(ctx, "pads", 2 * spatial, 0)
    return [(pads[i], pads[i + spatial]) for i in range(spatial)]


_MAX_DEPTHWISE_TAPS = 64


def _depthwise_conv(x: jax.Array, w: jax.Array, kernel: Sequence[int], strides: Sequence[int],
                    dilations: Sequence[int], padding: Sequence[tuple[int, int]]) -> jax.Array:
    """Depthwise conv (one input channel per group) as a sum of strided, shifted slices times
    per-channel taps: on CPU, XLA runs this 5-8x faster than a grouped convolution, backward too."""
    spatial = len(kernel)
    multiplier = w.shape[0] // x.shape[1]
    if multiplier > 1:
        x = jnp.repeat(x, multiplier, axis=1)
    x = lax.pad(x, np.array(0, x.dtype), [(0, 0, 0), (0, 0, 0), *[(lo, hi, 0) for lo, hi in padding]])
    counts = [(size - ((k - 1) * d + 1)) // s + 1 for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations)]
    total = None
    for offset in itertools.product(*[range(k) for k in kernel]):
        starts = [o * d for o, d in zip(offset, dilations)]
        limits = [start + (count - 1) * s + 1 for start, count, s in zip(starts, counts, strides)]
        patch = lax.slice(x, (0, 0, *starts), (*x.shape[:2], *limits), (1, 1, *strides))
        term = patch * w[(slice(None), 0, *offset)].reshape(1, -1, *[1] * spatial)
        total = term if total is None else total + term
    return total


def _pointwise_conv(ctx: NodeContext, x: jax.Array, w: jax.Array, strides: Sequence[int],
                    padding: Sequence[tuple[int, int]]) -> jax.Array:
    """1x1 conv as a channel contraction (about 2x faster than a convolution on CPU, backward too)."""
    spatial = len(strides)
    if any(lo or hi for lo, hi in padding):
        x = lax.pad(x, np.array(0, x.dtype), [(0, 0, 0), (0, 0, 0), *[(lo, hi, 0) for lo, hi in padding]])
    if any(s != 1 for s in strides):
        x = lax.slice(x, (0,) * x.ndim, x.shape, (1, 1, *strides))
    letters = "defghijklm"[:spatial]
    accumulate = np.float32 if x.dtype.itemsize < 4 else None
    y = jnp.einsum(f"nc{letters},oc->no{letters}", x, w.reshape(w.shape[0], w.shape[1]), precision=ctx.precision,
                   preferred_element_type=accumulate)
    return y.astype(x.dtype)


def _conv_with_uniform_kernel(x: jax.Array, value: Any, out_channels: int, group: int, kernel: Sequence[int],
                              strides: Sequence[int], dilations: Sequence[int],
                              padding: Sequence[tuple[int, int]]) -> jax.Array:
    """Conv with a kernel whose elements all equal `value`: a window sum of each group's channel sum.

    Exact, and it keeps such trace-time constants away from XLA's CPU YNNPACK fusion, which
    miscomputes them in jax 0.10.2 (docs/graph.md).
    """
    n, channels = x.shape[:2]
    per_group = jnp.sum(x.reshape(n, group, channels // group, *x.shape[2:]), axis=2)
    sums = _window(per_group, np.array(0, x.dtype), lax.add, kernel, strides, dilations, padding)
    return jnp.repeat(sums * np.asarray(value, x.dtype), out_channels // group, axis=1)


@register("Conv", numpy_ok=False)
def conv(ctx: NodeContext, x: Any, w: Any, b: Any = None) -> Any:
    spatial = len(shape_of(x)) - 2
    kernel = shape_of(w)[2:]
    strides = _per_axis(ctx, "strides", spatial, 1)
    dilations = _per_axis(ctx, "dilations", spatial, 1)
    padding = _explicit_pads(ctx, shape_of(x)[2:], kernel, strides, dilations)
    group = ctx.attr("group", 1)
    half = np.dtype(dtype_of(x)).itemsize < 4  # the fast paths accumulate in float32 for 16-bit types
    if group > 1 and group == shape_of(x)[1] and shape_of(w)[1] == 1 and math.prod(kernel) <= _MAX_DEPTHWISE_TAPS:
        y = _depthwise_conv(jnp.asarray(x, np.float32 if half else None), jnp.asarray(w, np.float32 if half else None),
                            kernel, strides, dilations, padding).astype(dtype_of(x))
    elif group == 1 and math.prod(kernel) == 1 and splat_value(w) is None:
        y = _pointwise_conv(ctx, jnp.asarray(x), jnp.asarray(w), strides, padding)
    elif splat_value(w) is not None:
        y = _conv_with_uniform_kernel(jnp.asarray(x), splat_value(w), shape_of(w)[0], group, kernel, strides,
                                      dilations, padding)
    else:
        y = lax.conv_general_dilated(
            jnp.asarray(x), jnp.asarray(w), window_strides=strides, padding=padding, rhs_dilation=dilations,
            dimension_numbers=_dimension_numbers(spatial), feature_group_count=group, precision=ctx.precision)
    if b is not None:
        y = y + jnp.reshape(b, (1, -1) + (1,) * spatial)
    return y


@register("ConvTranspose", numpy_ok=False)
def conv_transpose(ctx: NodeContext, x: Any, w: Any, b: Any = None) -> Any:
    """The gradient of Conv: input dilated by the strides, kernel flipped and transposed per group."""
    spatial = len(shape_of(x)) - 2
    sizes = shape_of(x)[2:]
    in_channels, out_per_group = shape_of(w)[:2]
    kernel = shape_of(w)[2:]
    group = ctx.attr("group", 1)
    strides = _per_axis(ctx, "strides", spatial, 1)
    dilations = _per_axis(ctx, "dilations", spatial, 1)
    output_padding = _per_axis(ctx, "output_padding", spatial, 0)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    full = [s * (n - 1) + p + span for s, n, p, span in zip(strides, sizes, output_padding, spans)]
    output_shape = ctx.attr("output_shape")
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        targets = list(output_shape)[-spatial:] if output_shape is not None else [n * s for n, s in zip(sizes, strides)]
        pads = []
        for total_size, target in zip(full, targets):
            total = total_size - target
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
    elif auto_pad == "VALID":
        pads = [(0, 0)] * spatial
    else:
        flat = _per_axis(ctx, "pads", 2 * spatial, 0)
        pads = [(flat[i], flat[i + spatial]) for i in range(spatial)]
    kernel_oi = jnp.reshape(jnp.asarray(w), (group, in_channels // group, out_per_group, *kernel))
    kernel_oi = jnp.swapaxes(kernel_oi, 1, 2).reshape(group * out_per_group, in_channels // group, *kernel)
    kernel_oi = jnp.flip(kernel_oi, axis=tuple(range(2, spatial + 2)))
    padding = [(span - 1 - begin, span - 1 - end + extra)
               for span, (begin, end), extra in zip(spans, pads, output_padding)]
    y = lax.conv_general_dilated(
        jnp.asarray(x), kernel_oi, window_strides=[1] * spatial, padding=padding, lhs_dilation=strides,
        rhs_dilation=dilations, dimension_numbers=_dimension_numbers(spatial), feature_group_count=group,
        precision=ctx.precision)
    if b is not None:
        y = y + jnp.reshape(b, (1, -1) + (1,) * spatial)
    return y


# --- pooling -----------------------------------------------------------------------------------

def _pool_geometry(ctx: NodeContext, x: Any) -> tuple[list[int], list[int], list[int], list[tuple[int, int]],
                                                     list[int]]:
    """(kernel, strides, dilations, explicit pads, extra end pads for ceil_mode) per spatial axis."""
    sizes = shape_of(x)[2:]
    spatial = len(sizes)
    kernel = [int(k) for k in ctx.attr("kernel_shape")]
    strides = _per_axis(ctx, "strides", spatial, 1)
    dilations = _per_axis(ctx, "dilations", spatial, 1)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = _same_pads(auto_pad, sizes, kernel, strides, dilations)
    else:
        pads = _explicit_pads(ctx, sizes, kernel, strides, dilations)
    extra = []
    for size, k, s, d, (begin, end) in zip(sizes, kernel, strides, dilations, pads):
        span = (k - 1) * d + 1
        room = size + begin + end - span
        count = room // s + 1
        if ctx.attr("ceil_mode", 0):
            count = -(-room // s) + 1
            if (count - 1) * s >= size + begin:  # the last window must start inside the input
                count -= 1
        extra.append(max((count - 1) * s + span - (size + begin + end), 0))
    return kernel, strides, dilations, pads, extra


def _window(x: Any, init: Any, reducer: Any, kernel: Sequence[int], strides: Sequence[int],
            dilations: Sequence[int], padding: Sequence[tuple[int, int]]) -> Any:
    return lax.reduce_window(x, init, reducer, (1, 1, *kernel), (1, 1, *strides),
                             ((0, 0), (0, 0), *padding), window_dilation=(1, 1, *dilations))


def _lowest(dtype: Any) -> Any:
    dtype = np.dtype(dtype)
    return np.array(-np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).min, dtype)


@register("MaxPool", numpy_ok=False)
def max_pool(ctx: NodeContext, x: Any) -> Any:
    x = jnp.asarray(x)
    kernel, strides, dilations, pads, extra = _pool_geometry(ctx, x)
    padding = [(begin, end + more) for (begin, end), more in zip(pads, extra)]
    if ctx.num_outputs > 1:
        return _max_pool_with_indices(ctx, x, kernel, strides, dilations, padding)
    return _window(x, _lowest(x.dtype), lax.max, kernel, strides, dilations, padding)


def _max_pool_with_indices(ctx: NodeContext, x: jax.Array, kernel: Sequence[int], strides: Sequence[int],
                           dilations: Sequence[int], padding: Sequence[tuple[int, int]]) -> tuple[Any, Any]:
    """Max and the flat input index of the max (row-major, or column-major spatially if storage_order=1)."""
    sizes = shape_of(x)[2:]
    padded = jnp.pad(x, [(0, 0), (0, 0), *padding], constant_values=_lowest(x.dtype))
    counts = [(p - ((k - 1) * d + 1)) // s + 1 for p, k, s, d in zip(padded.shape[2:], kernel, strides, dilations)]
    values, positions = [], []
    for offset in itertools.product(*[range(k) for k in kernel]):
        starts = [o * d for o, d in zip(offset, dilations)]
        index = tuple(slice(b, b + (c - 1) * s + 1, s) for b, c, s in zip(starts, counts, strides))
        values.append(padded[(slice(None), slice(None), *index)])
        positions.append([np.arange(c) * s + b - p[0] for c, s, b, p in zip(counts, strides, starts, padding)])
    stacked = jnp.stack(values)
    best = jnp.argmax(stacked, axis=0)
    spatial_index = []
    for window in positions:
        grids = np.meshgrid(*window, indexing="ij")
        if ctx.attr("storage_order", 0):
            flat = sum(g * int(np.prod(sizes[:i])) for i, g in enumerate(grids))
        else:
            flat = sum(g * int(np.prod(sizes[i + 1:])) for i, g in enumerate(grids))
        spatial_index.append(flat)
    chosen = jnp.take_along_axis(jnp.asarray(np.stack(spatial_index))[:, None, None], best[None], axis=0)[0]
    n, c = shape_of(x)[:2]
    base = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * int(np.prod(sizes))
    base = base.reshape(n, c, *([1] * len(sizes)))
    return jnp.max(stacked, axis=0), (chosen + base).astype(jnp.int64)


def _window_counts(x: Any, geometry: tuple, include_pad: bool) -> np.ndarray:
    """How many elements each window averages over (explicit pads count iff `include_pad`).

    Separable: the count is the product over axes of 1-D counts, computed with numpy.
    """
    kernel, strides, dilations, pads, extra = geometry
    counts = np.ones((1, 1), np.float64)
    for size, k, s, d, (begin, end), more in zip(shape_of(x)[2:], kernel, strides, dilations, pads, extra):
        inside = np.concatenate([np.full(begin, float(include_pad)), np.ones(size),
                                 np.full(end, float(include_pad)), np.zeros(more)])
        starts = np.arange(0, len(inside) - (k - 1) * d, s)
        per_axis = inside[starts[:, None] + d * np.arange(k)[None, :]].sum(axis=1)
        counts = np.multiply.outer(counts, per_axis)
    return counts.astype(np.dtype(x.dtype))


@register("AveragePool", numpy_ok=False)
def average_pool(ctx: NodeContext, x: Any) -> Any:
    x = jnp.asarray(x)
    geometry = _pool_geometry(ctx, x)
    kernel, strides, dilations, pads, extra = geometry
    padding = [(begin, end + more) for (begin, end), more in zip(pads, extra)]
    sums = _window(x, np.array(0, x.dtype), lax.add, kernel, strides, dilations, padding)
    counts = _window_counts(x, geometry, bool(ctx.attr("count_include_pad", 0)))
    return (sums / counts).astype(x.dtype)


@register("LpPool", numpy_ok=False)
def lp_pool(ctx: NodeContext, x: Any) -> Any:
    x = jnp.asarray(x)
    p = ctx.attr("p", 2)
    kernel, strides, dilations, pads, extra = _pool_geometry(ctx, x)
    padding = [(begin, end + more) for (begin, end), more in zip(pads, extra)]
    sums = _window(jnp.abs(x) ** p, np.array(0, x.dtype), lax.add, kernel, strides, dilations, padding)
    return sums ** (1.0 / p)


def _spatial_axes(x: Any) -> tuple[int, ...]:
    return tuple(range(2, len(shape_of(x))))


@register("GlobalAveragePool")
def global_average_pool(ctx: NodeContext, x: Any) -> Any:
    return ctx.xp.mean(x, axis=_spatial_axes(x), keepdims=True)


@register("GlobalMaxPool")
def global_max_pool(ctx: NodeContext, x: Any) -> Any:
    return ctx.xp.max(x, axis=_spatial_axes(x), keepdims=True)


@register("GlobalLpPool")
def global_lp_pool(ctx: NodeContext, x: Any) -> Any:
    p = ctx.attr("p", 2)
    return ctx.xp.sum(ctx.xp.abs(x) ** p, axis=_spatial_axes(x), keepdims=True) ** (1.0 / p)
