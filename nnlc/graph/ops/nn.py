"""Dense layers and normalizations."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nnlc.graph.ops._common import dtype_of, normalize_axis, shape_of, splat_value
from nnlc.graph.registry import NodeContext, register


def _matmul(ctx: NodeContext, a: Any, b: Any) -> Any:
    """a @ b; a trace-time constant whose elements are all equal turns into a sum (see `splat_value`)."""
    if ctx.is_numpy:
        return np.matmul(a, b)
    out = jax.eval_shape(jnp.matmul, jax.ShapeDtypeStruct(np.shape(a), dtype_of(a)),
                         jax.ShapeDtypeStruct(np.shape(b), dtype_of(b)))
    both_matrices = np.ndim(a) >= 2 and np.ndim(b) >= 2
    if splat_value(b) is not None:
        partial = jnp.sum(a, axis=-1, keepdims=both_matrices) * splat_value(b)
        return jnp.broadcast_to(partial.astype(out.dtype), out.shape)
    if splat_value(a) is not None:
        partial = jnp.sum(b, axis=-2 if np.ndim(b) >= 2 else -1, keepdims=both_matrices) * splat_value(a)
        return jnp.broadcast_to(partial.astype(out.dtype), out.shape)
    return jnp.matmul(a, b, precision=ctx.precision)


@register("MatMul")
def matmul(ctx: NodeContext, a: Any, b: Any) -> Any:
    return _matmul(ctx, a, b)


@register("Gemm")
def gemm(ctx: NodeContext, a: Any, b: Any, c: Any = None) -> Any:
    xp = ctx.xp
    a = xp.transpose(a) if ctx.attr("transA", 0) else a
    b = xp.transpose(b) if ctx.attr("transB", 0) else b
    y = _matmul(ctx, a, b)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    if alpha != 1.0:
        y = y * np.asarray(alpha, dtype_of(y))
    if c is not None and beta != 0.0:
        y = y + (c if beta == 1.0 else c * np.asarray(beta, dtype_of(y)))
    return y


def _channel_shape(x: Any) -> tuple[int, ...]:
    return (1, -1) + (1,) * (len(shape_of(x)) - 2)


@register("BatchNormalization")
def batch_normalization(ctx: NodeContext, x: Any, scale: Any, bias: Any, mean: Any, var: Any) -> Any:
    """Inference uses the running statistics; training mode (opset 14+) returns updated ones too."""
    xp = ctx.xp
    epsilon = np.asarray(ctx.attr("epsilon", 1e-5), dtype_of(x))
    if ctx.opset < 9 and ctx.attr("spatial", 1) == 0:
        raise ctx.fail("spatial=0 is not supported")
    training = ctx.opset >= 14 and ctx.attr("training_mode", 0)
    if training:
        axes = (0, *range(2, len(shape_of(x))))
        momentum = np.asarray(ctx.attr("momentum", 0.9), dtype_of(x))
        batch_mean = xp.mean(x, axis=axes)
        batch_var = xp.var(x, axis=axes)
        centered = x - batch_mean.reshape(_channel_shape(x))
        normalized = centered / xp.sqrt(batch_var.reshape(_channel_shape(x)) + epsilon)
        y = normalized * scale.reshape(_channel_shape(x)) + bias.reshape(_channel_shape(x))
        return y, mean * momentum + batch_mean * (1 - momentum), var * momentum + batch_var * (1 - momentum)
    factor = scale / xp.sqrt(var + epsilon)
    shift = bias - mean * factor
    return x * xp.reshape(factor, _channel_shape(x)) + xp.reshape(shift, _channel_shape(x))


def _stash_dtype(ctx: NodeContext, x: Any) -> Any:
    return np.float32 if ctx.attr("stash_type", 1) == 1 and np.dtype(dtype_of(x)).itemsize < 4 else dtype_of(x)


@register("LayerNormalization")
def layer_normalization(ctx: NodeContext, x: Any, scale: Any, bias: Any = None) -> tuple[Any, Any, Any]:
    xp = ctx.xp
    rank = len(shape_of(x))
    axes = tuple(range(normalize_axis(ctx.attr("axis", -1), rank), rank))
    original = dtype_of(x)
    x = x.astype(_stash_dtype(ctx, x))
    mean = xp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    variance = xp.mean(centered * centered, axis=axes, keepdims=True)
    inv_std = 1 / xp.sqrt(variance + np.asarray(ctx.attr("epsilon", 1e-5), dtype_of(x)))
    y = (centered * inv_std).astype(original) * scale
    if bias is not None:
        y = y + bias
    return y, mean, inv_std


@register("RMSNormalization")
def rms_normalization(ctx: NodeContext, x: Any, scale: Any) -> Any:
    xp = ctx.xp
    rank = len(shape_of(x))
    axes = tuple(range(normalize_axis(ctx.attr("axis", -1), rank), rank))
    original = dtype_of(x)
    x = x.astype(_stash_dtype(ctx, x))
    mean_square = xp.mean(x * x, axis=axes, keepdims=True)
    inv_rms = 1 / xp.sqrt(mean_square + np.asarray(ctx.attr("epsilon", 1e-5), dtype_of(x)))
    return (x * inv_rms).astype(original) * scale


def _standardize(xp: Any, x: Any, axes: tuple[int, ...], epsilon: float) -> Any:
    mean = xp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    variance = xp.mean(centered * centered, axis=axes, keepdims=True)
    return centered / xp.sqrt(variance + np.asarray(epsilon, dtype_of(x)))


@register("InstanceNormalization")
def instance_normalization(ctx: NodeContext, x: Any, scale: Any, bias: Any) -> Any:
    xp = ctx.xp
    normalized = _standardize(xp, x, tuple(range(2, len(shape_of(x)))), ctx.attr("epsilon", 1e-5))
    return normalized * xp.reshape(scale, _channel_shape(x)) + xp.reshape(bias, _channel_shape(x))


@register("GroupNormalization")
def group_normalization(ctx: NodeContext, x: Any, scale: Any, bias: Any) -> Any:
    """Scale and bias are per channel from opset 21, per group before."""
    xp = ctx.xp
    dims = shape_of(x)
    groups = ctx.attr("num_groups")
    grouped = xp.reshape(x.astype(_stash_dtype(ctx, x)), (dims[0], groups, -1))
    normalized = xp.reshape(_standardize(xp, grouped, (2,), ctx.attr("epsilon", 1e-5)), dims).astype(dtype_of(x))
    if ctx.opset < 21 and shape_of(scale)[0] == groups and groups != dims[1]:
        scale = xp.repeat(scale, dims[1] // groups)
        bias = xp.repeat(bias, dims[1] // groups)
    return normalized * xp.reshape(scale, _channel_shape(x)) + xp.reshape(bias, _channel_shape(x))


@register("MeanVarianceNormalization")
def mean_variance_normalization(ctx: NodeContext, x: Any) -> Any:
    axes = tuple(normalize_axis(a, len(shape_of(x))) for a in ctx.attr("axes", [0, 2, 3]))
    xp = ctx.xp
    mean = xp.mean(x, axis=axes, keepdims=True)
    std = xp.sqrt(xp.mean(x * x, axis=axes, keepdims=True) - mean * mean)
    return (x - mean) / (std + np.asarray(1e-9, dtype_of(x)))


@register("LpNormalization")
def lp_normalization(ctx: NodeContext, x: Any) -> Any:
    xp = ctx.xp
    axis = normalize_axis(ctx.attr("axis", -1), len(shape_of(x)))
    p = ctx.attr("p", 2)
    norm = xp.sum(xp.abs(x), axis=axis, keepdims=True) if p == 1 else \
        xp.sqrt(xp.sum(x * x, axis=axis, keepdims=True))
    return xp.where(norm == 0, xp.zeros_like(x), x / xp.where(norm == 0, xp.ones_like(norm), norm))


@register("LRN")
def local_response_normalization(ctx: NodeContext, x: Any) -> Any:
    xp = ctx.xp
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    channels = shape_of(x)[1]
    before, after = (size - 1) // 2, -(-(size - 1) // 2)
    squares = x * x
    widths = [(0, 0), (before, after)] + [(0, 0)] * (len(shape_of(x)) - 2)
    padded = xp.pad(squares, widths)
    window = sum(padded[:, i:i + channels] for i in range(size))
    dtype = dtype_of(x)
    denominator = (np.asarray(bias, dtype) + np.asarray(alpha / size, dtype) * window) ** np.asarray(beta, dtype)
    return x / denominator


@register("Det", numpy_ok=False)
def determinant(ctx: NodeContext, x: Any) -> Any:
    return jnp.linalg.det(jnp.asarray(x))
