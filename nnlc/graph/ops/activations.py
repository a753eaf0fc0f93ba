"""Activation functions and softmax-like ops."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from nnlc.graph.ops._common import dtype_of, normalize_axis, shape_of
from nnlc.graph.registry import NodeContext, register


def _scalar(value: float, like: Any) -> np.ndarray:
    return np.asarray(value, dtype=dtype_of(like))


def _sigmoid(xp: Any, x: Any) -> Any:
    if xp is np:
        return (1 / (1 + np.exp(-x))).astype(dtype_of(x))
    return jax.nn.sigmoid(x)


@register("Relu")
def relu(ctx: NodeContext, x: Any) -> Any:
    return ctx.xp.maximum(x, _scalar(0, x))


@register("LeakyRelu")
def leaky_relu(ctx: NodeContext, x: Any) -> Any:
    alpha = _scalar(ctx.attr("alpha", 0.01), x)
    return ctx.xp.where(x >= 0, x, alpha * x)


@register("PRelu")
def prelu(ctx: NodeContext, x: Any, slope: Any) -> Any:
    return ctx.xp.where(x < 0, slope * x, x)


@register("Elu")
def elu(ctx: NodeContext, x: Any) -> Any:
    alpha = _scalar(ctx.attr("alpha", 1.0), x)
    return ctx.xp.where(x > 0, x, alpha * ctx.xp.expm1(ctx.xp.minimum(x, _scalar(0, x))))


@register("Selu")
def selu(ctx: NodeContext, x: Any) -> Any:
    alpha = _scalar(ctx.attr("alpha", 1.67326319217681884765625), x)
    gamma = _scalar(ctx.attr("gamma", 1.05070102214813232421875), x)
    negative = alpha * ctx.xp.expm1(ctx.xp.minimum(x, _scalar(0, x)))
    return gamma * ctx.xp.where(x > 0, x, negative)


@register("Celu")
def celu(ctx: NodeContext, x: Any) -> Any:
    alpha = _scalar(ctx.attr("alpha", 1.0), x)
    xp = ctx.xp
    return xp.maximum(x, _scalar(0, x)) + xp.minimum(_scalar(0, x), alpha * xp.expm1(x / alpha))


@register("ThresholdedRelu")
def thresholded_relu(ctx: NodeContext, x: Any) -> Any:
    return ctx.xp.where(x > _scalar(ctx.attr("alpha", 1.0), x), x, _scalar(0, x))


@register("Sigmoid")
def sigmoid(ctx: NodeContext, x: Any) -> Any:
    return _sigmoid(ctx.xp, x)


@register("HardSigmoid")
def hard_sigmoid(ctx: NodeContext, x: Any) -> Any:
    alpha, beta = _scalar(ctx.attr("alpha", 0.2), x), _scalar(ctx.attr("beta", 0.5), x)
    return ctx.xp.clip(alpha * x + beta, _scalar(0, x), _scalar(1, x))


@register("HardSwish")
def hard_swish(ctx: NodeContext, x: Any) -> Any:
    return x * ctx.xp.clip(x / _scalar(6, x) + _scalar(0.5, x), _scalar(0, x), _scalar(1, x))


@register("Swish")
def swish(ctx: NodeContext, x: Any) -> Any:
    return x * _sigmoid(ctx.xp, _scalar(ctx.attr("alpha", 1.0), x) * x)


def _softplus(xp: Any, x: Any) -> Any:
    return np.logaddexp(_scalar(0, x), x) if xp is np else jax.nn.softplus(x)


@register("Softplus")
def softplus(ctx: NodeContext, x: Any) -> Any:
    return _softplus(ctx.xp, x)


@register("Softsign")
def softsign(ctx: NodeContext, x: Any) -> Any:
    return x / (_scalar(1, x) + ctx.xp.abs(x))


@register("Mish")
def mish(ctx: NodeContext, x: Any) -> Any:
    return x * ctx.xp.tanh(_softplus(ctx.xp, x))


@register("Gelu", numpy_ok=False)
def gelu(ctx: NodeContext, x: Any) -> Any:
    if ctx.attr("approximate", "none") == "tanh":
        inner = np.sqrt(2 / np.pi).astype(x.dtype) * (x + _scalar(0.044715, x) * x ** 3)
        return _scalar(0.5, x) * x * (1 + jnp.tanh(inner))
    return _scalar(0.5, x) * x * (1 + jsp.erf(x / np.sqrt(2).astype(x.dtype)))


@register("Shrink")
def shrink(ctx: NodeContext, x: Any) -> Any:
    bias, lambd = _scalar(ctx.attr("bias", 0.0), x), _scalar(ctx.attr("lambd", 0.5), x)
    xp = ctx.xp
    return xp.where(x < -lambd, x + bias, xp.where(x > lambd, x - bias, _scalar(0, x)))


# --- softmax family ----------------------------------------------------------------------------

def _as_2d(x: Any, axis: int) -> tuple[Any, tuple[int, ...]]:
    """Opset < 13 coerces the input to 2-D at `axis` and normalises over the second dimension."""
    shape = shape_of(x)
    rows = int(np.prod(shape[:axis], dtype=np.int64))
    return x.reshape(rows, -1), shape


def _along_axis(ctx: NodeContext, x: Any, function) -> Any:
    if ctx.opset < 13:
        axis = normalize_axis(ctx.attr("axis", 1), len(shape_of(x)))
        flat, shape = _as_2d(x, axis)
        return function(flat, 1).reshape(shape)
    return function(x, normalize_axis(ctx.attr("axis", -1), len(shape_of(x))))


def _shifted(x: Any, axis: int) -> jax.Array:
    """x - max(x), never above 0. XLA may compute x twice (for the max and for the exp) with
    differently rounded arithmetic; at large |x| an ulp of difference would overflow exp."""
    x = jnp.asarray(x)
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return jnp.where(shifted > 0, jnp.zeros_like(shifted), shifted)


def _softmax(xp: Any, x: Any, axis: int) -> Any:
    if xp is np:
        shifted = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return (shifted / shifted.sum(axis=axis, keepdims=True)).astype(x.dtype)
    exponentials = jnp.exp(_shifted(x, axis))
    return exponentials / jnp.sum(exponentials, axis=axis, keepdims=True)


def _log_softmax(xp: Any, x: Any, axis: int) -> Any:
    if xp is np:
        shifted = x - np.max(x, axis=axis, keepdims=True)
        return (shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).astype(x.dtype)
    shifted = _shifted(x, axis)
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


@register("Softmax")
def softmax(ctx: NodeContext, x: Any) -> Any:
    return _along_axis(ctx, x, lambda v, axis: _softmax(ctx.xp, v, axis))


@register("LogSoftmax")
def log_softmax(ctx: NodeContext, x: Any) -> Any:
    return _along_axis(ctx, x, lambda v, axis: _log_softmax(ctx.xp, v, axis))


@register("Hardmax")
def hardmax(ctx: NodeContext, x: Any) -> Any:
    def one_hot_of_max(v: Any, axis: int) -> Any:
        xp = ctx.xp
        first = xp.argmax(v, axis=axis)
        positions = xp.arange(v.shape[axis]).reshape([-1 if d == axis else 1 for d in range(v.ndim)])
        return (xp.expand_dims(first, axis) == positions).astype(v.dtype)

    return _along_axis(ctx, x, one_hot_of_max)
