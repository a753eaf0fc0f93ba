"""Gather/scatter, one-hot, masks and other index-driven ops."""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from nnlc.graph.ops._common import dtype_of, normalize_axis, shape_of
from nnlc.graph.registry import NodeContext, register


def _wrap_negative(xp: Any, indices: Any, size: Any) -> Any:
    return xp.where(indices < 0, indices + size, indices)


@register("Gather")
def gather(ctx: NodeContext, data: Any, indices: Any) -> Any:
    axis = normalize_axis(ctx.attr("axis", 0), len(shape_of(data)))
    indices = _wrap_negative(ctx.xp, indices, shape_of(data)[axis])
    if ctx.is_numpy:
        return np.take(data, indices, axis=axis)
    return jnp.take(data, indices, axis=axis, mode="clip")


@register("GatherElements")
def gather_elements(ctx: NodeContext, data: Any, indices: Any) -> Any:
    axis = normalize_axis(ctx.attr("axis", 0), len(shape_of(data)))
    indices = _wrap_negative(ctx.xp, indices, shape_of(data)[axis])
    return ctx.xp.take_along_axis(data, indices, axis=axis)


@register("GatherND")
def gather_nd(ctx: NodeContext, data: Any, indices: Any) -> Any:
    xp = ctx.xp
    batch_dims = ctx.attr("batch_dims", 0)
    data_shape, index_shape = shape_of(data), shape_of(indices)
    batch_shape = data_shape[:batch_dims]
    batch = math.prod(batch_shape)
    depth = index_shape[-1]
    data = xp.reshape(data, (batch, *data_shape[batch_dims:]))
    indices = xp.reshape(indices, (batch, -1, depth))
    indices = _wrap_negative(xp, indices, np.asarray(data_shape[batch_dims:batch_dims + depth]))
    batch_index = xp.arange(batch).reshape(batch, 1)
    gathered = data[(batch_index, *[indices[..., i] for i in range(depth)])]
    return xp.reshape(gathered, (*batch_shape, *index_shape[batch_dims:-1], *data_shape[batch_dims + depth:]))


def _element_index(indices: Any, axis: int) -> tuple[Any, ...]:
    grids = jnp.meshgrid(*[jnp.arange(d) for d in indices.shape], indexing="ij")
    grids[axis] = indices
    return tuple(grids)


def _scatter(target: Any, index: tuple[Any, ...], updates: Any, reduction: str) -> Any:
    at = jnp.asarray(target).at[index]
    methods = {"none": at.set, "add": at.add, "mul": at.multiply, "max": at.max, "min": at.min}
    return methods[reduction](updates)


@register("ScatterElements", "Scatter", numpy_ok=False)
def scatter_elements(ctx: NodeContext, data: Any, indices: Any, updates: Any) -> Any:
    axis = normalize_axis(ctx.attr("axis", 0), len(shape_of(data)))
    indices = _wrap_negative(jnp, jnp.asarray(indices), shape_of(data)[axis])
    return _scatter(data, _element_index(indices, axis), updates, ctx.attr("reduction", "none"))


@register("ScatterND", numpy_ok=False)
def scatter_nd(ctx: NodeContext, data: Any, indices: Any, updates: Any) -> Any:
    indices = jnp.asarray(indices)
    depth = indices.shape[-1]
    indices = _wrap_negative(jnp, indices, jnp.asarray(shape_of(data)[:depth]))
    index = tuple(indices[..., i] for i in range(depth))
    return _scatter(data, index, updates, ctx.attr("reduction", "none"))


@register("OneHot", static_inputs=(1,))
def one_hot(ctx: NodeContext, indices: Any, depth: np.ndarray, values: Any) -> Any:
    xp = ctx.xp
    depth = int(np.asarray(depth).reshape(-1)[0])
    rank = len(shape_of(indices)) + 1
    axis = normalize_axis(ctx.attr("axis", -1), rank)
    indices = _wrap_negative(xp, indices, depth)
    positions = xp.arange(depth).reshape([-1 if d == axis else 1 for d in range(rank)])
    hot = xp.expand_dims(indices, axis) == positions
    return xp.where(hot, values[1], values[0])


@register("Trilu", static_inputs=(1,))
def trilu(ctx: NodeContext, x: Any, k: Any = None) -> Any:
    offset = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    return ctx.xp.triu(x, offset) if ctx.attr("upper", 1) else ctx.xp.tril(x, offset)


@register("NonZero", static_inputs=(0,))
def nonzero(ctx: NodeContext, x: np.ndarray) -> np.ndarray:
    return np.asarray(np.nonzero(np.asarray(x)), dtype=np.int64).reshape(np.ndim(x), -1)


@register("Compress", static_inputs=(1,))
def compress(ctx: NodeContext, x: Any, condition: np.ndarray) -> Any:
    kept = np.flatnonzero(np.asarray(condition, bool))
    axis = ctx.attr("axis")
    if axis is None:
        return ctx.xp.take(ctx.xp.reshape(x, -1), kept)
    return ctx.xp.take(x, kept, axis=normalize_axis(axis, len(shape_of(x))))


@register("ReverseSequence", numpy_ok=False)
def reverse_sequence(ctx: NodeContext, x: Any, lengths: Any) -> Any:
    batch_axis, time_axis = ctx.attr("batch_axis", 1), ctx.attr("time_axis", 0)
    steps = shape_of(x)[time_axis]
    time = jnp.arange(steps)
    lengths = jnp.asarray(lengths)
    shape = [1] * len(shape_of(x))
    shape[time_axis], shape[batch_axis] = steps, shape_of(x)[batch_axis]
    source = jnp.where(time[:, None] < lengths[None, :], lengths[None, :] - 1 - time[:, None], time[:, None])
    if batch_axis < time_axis:
        source = source.T
    return jnp.take_along_axis(x, jnp.broadcast_to(source.reshape(shape), shape_of(x)), axis=time_axis)


# --- arg / top-k / cumulative ------------------------------------------------------------------

def _arg_extreme(ctx: NodeContext, x: Any, pick_max: bool) -> Any:
    xp = ctx.xp
    axis = normalize_axis(ctx.attr("axis", 0), len(shape_of(x)))
    if ctx.attr("select_last_index", 0):
        flipped = xp.flip(x, axis)
        index = (xp.argmax if pick_max else xp.argmin)(flipped, axis=axis)
        index = shape_of(x)[axis] - 1 - index
    else:
        index = (xp.argmax if pick_max else xp.argmin)(x, axis=axis)
    index = index.astype(np.int64) if ctx.is_numpy else index
    return xp.expand_dims(index, axis) if ctx.attr("keepdims", 1) else index


@register("ArgMax")
def arg_max(ctx: NodeContext, x: Any) -> Any:
    return _arg_extreme(ctx, x, True)


@register("ArgMin")
def arg_min(ctx: NodeContext, x: Any) -> Any:
    return _arg_extreme(ctx, x, False)


@register("TopK", static_inputs=(1,))
def top_k(ctx: NodeContext, x: Any, k: Any = None) -> tuple[Any, Any]:
    """Ties keep the lower index first, as the ONNX reference does."""
    xp = ctx.xp
    count = int(np.asarray(k).reshape(-1)[0]) if ctx.opset >= 10 else ctx.attr("k")
    axis = normalize_axis(ctx.attr("axis", -1), len(shape_of(x)))
    largest = ctx.attr("largest", 1)
    if largest:  # a descending order that keeps ties in index order (~x for integers never overflows)
        keys = -x if np.issubdtype(dtype_of(x), np.floating) else xp.invert(x)
    else:
        keys = x
    if ctx.is_numpy:
        order = np.argsort(keys, axis=axis, kind="stable")
    else:
        order = jnp.argsort(keys, axis=axis, stable=True)
    order = xp.take(order, xp.arange(count), axis=axis)
    values = xp.take_along_axis(x, order, axis=axis)
    return values, order.astype(np.int64) if ctx.is_numpy else order


@register("CumSum", static_inputs=(1,))
def cum_sum(ctx: NodeContext, x: Any, axis: np.ndarray) -> Any:
    xp = ctx.xp
    axis = normalize_axis(int(np.asarray(axis).reshape(-1)[0]), len(shape_of(x)))
    reverse = ctx.attr("reverse", 0)
    values = xp.flip(x, axis) if reverse else x
    total = xp.cumsum(values, axis=axis, dtype=dtype_of(x))
    if ctx.attr("exclusive", 0):
        total = total - values
    return xp.flip(total, axis) if reverse else total


@register("CumProd", static_inputs=(1,))
def cum_prod(ctx: NodeContext, x: Any, axis: np.ndarray) -> Any:
    xp = ctx.xp
    axis = normalize_axis(int(np.asarray(axis).reshape(-1)[0]), len(shape_of(x)))
    reverse = ctx.attr("reverse", 0)
    values = xp.flip(x, axis) if reverse else x
    if ctx.attr("exclusive", 0):
        ones = xp.ones_like(xp.take(values, xp.arange(1), axis=axis))
        values = xp.concatenate([ones, xp.take(values, xp.arange(shape_of(x)[axis] - 1), axis=axis)], axis=axis)
    total = xp.cumprod(values, axis=axis, dtype=dtype_of(x))
    return xp.flip(total, axis) if reverse else total


@register("Einsum", numpy_ok=False)
def einsum(ctx: NodeContext, *operands: Any) -> Any:
    return jnp.einsum(ctx.attr("equation").replace(" ", ""), *operands, precision=ctx.precision)
