"""Element-wise math, comparison, logic and cast ops (numpy-style broadcasting, as ONNX specifies)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import ml_dtypes
import numpy as np
from jax import lax

from nnlc.graph.ops._common import cast, dtype_of, onnx_to_numpy_dtype
from nnlc.graph.registry import NodeContext, register

# --- unary -------------------------------------------------------------------------------------

_UNARY = {
    "Abs": "abs", "Neg": "negative", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Floor": "floor",
    "Ceil": "ceil", "Sign": "sign", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "arcsin",
    "Acos": "arccos", "Atan": "arctan", "Sinh": "sinh", "Cosh": "cosh", "Asinh": "arcsinh",
    "Acosh": "arccosh", "Atanh": "arctanh", "Tanh": "tanh", "IsNaN": "isnan", "Not": "logical_not",
    "BitwiseNot": "invert", "Round": "round",
}


def _unary(function_name: str):
    def run(ctx: NodeContext, x: Any) -> Any:
        return getattr(ctx.xp, function_name)(x)

    run.__name__ = function_name
    return run


for _op_type, _function_name in _UNARY.items():
    register(_op_type)(_unary(_function_name))


@register("Reciprocal")
def reciprocal(ctx: NodeContext, x: Any) -> Any:
    return ctx.xp.reciprocal(x)


@register("Erf", numpy_ok=False)
def erf(ctx: NodeContext, x: Any) -> Any:
    return jsp.erf(x)


@register("IsInf")
def is_inf(ctx: NodeContext, x: Any) -> Any:
    xp = ctx.xp
    positive = xp.isposinf(x) if ctx.attr("detect_positive", 1) else xp.zeros(np.shape(x), bool)
    negative = xp.isneginf(x) if ctx.attr("detect_negative", 1) else xp.zeros(np.shape(x), bool)
    return xp.logical_or(positive, negative)


@register("Identity")
def identity(ctx: NodeContext, x: Any) -> Any:
    return x


# --- binary arithmetic -------------------------------------------------------------------------

@register("Add")
def add(ctx: NodeContext, a: Any, b: Any) -> Any:
    return ctx.xp.add(a, b)


@register("Sub")
def sub(ctx: NodeContext, a: Any, b: Any) -> Any:
    return ctx.xp.subtract(a, b)


@register("Mul")
def mul(ctx: NodeContext, a: Any, b: Any) -> Any:
    return ctx.xp.multiply(a, b)


@register("Div")
def div(ctx: NodeContext, a: Any, b: Any) -> Any:
    xp = ctx.xp
    if np.issubdtype(dtype_of(a), np.integer):  # truncate toward zero, like C
        quotient = xp.floor_divide(a, b)
        inexact = (xp.remainder(a, b) != 0) & ((a < 0) ^ (b < 0))
        return quotient + inexact.astype(quotient.dtype)
    return xp.divide(a, b)


@register("Mod")
def mod(ctx: NodeContext, a: Any, b: Any) -> Any:
    if ctx.attr("fmod", 0):
        return ctx.xp.fmod(a, b)
    return ctx.xp.mod(a, b)


@jax.custom_jvp
def _power(x: jax.Array, y: jax.Array) -> jax.Array:
    return lax.pow(x, y)


@_power.defjvp
def _power_jvp(primals, tangents):
    """d/dy uses log|x| (finite for negative bases, where x**y is real only for integer y)."""
    x, y = primals
    dx, dy = tangents
    result = _power(x, y)
    d_base = jnp.where(y == 0, jnp.zeros_like(result), y * _power(x, y - 1))
    d_exponent = result * jnp.log(jnp.where(x == 0, jnp.ones_like(x), jnp.abs(x)))
    return result, d_base * dx + d_exponent * dy


@register("Pow")
def power(ctx: NodeContext, x: Any, y: Any) -> Any:
    """The result has the base's dtype (opset 12+ allows a different exponent dtype)."""
    xp = ctx.xp
    base_type = dtype_of(x)
    if ctx.is_numpy:
        return np.asarray(np.power(x, y)).astype(base_type)
    if isinstance(y, np.ndarray) and y.ndim == 0 and float(y) == int(y) and abs(int(y)) <= 64 \
            and np.issubdtype(base_type, np.floating):
        return lax.integer_pow(jnp.asarray(x), int(y))  # exact and NaN-free for negative bases
    if np.issubdtype(base_type, np.floating):
        x = jnp.asarray(x)
        y = jnp.asarray(y).astype(x.dtype)
        x, y = jnp.broadcast_arrays(x, y)
        return _power(x, y)
    if np.issubdtype(dtype_of(y), np.floating):
        return cast(ctx, xp.power(jnp.asarray(x).astype(dtype_of(y)), y), base_type)
    return xp.power(x, jnp.asarray(y).astype(jnp.asarray(x).dtype))


@register("BitShift")
def bit_shift(ctx: NodeContext, x: Any, shift: Any) -> Any:
    if ctx.attr("direction") == "LEFT":
        return ctx.xp.left_shift(x, shift)
    return ctx.xp.right_shift(x, shift)


_BINARY = {
    "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor",
    "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor", "Equal": "equal",
    "Greater": "greater", "Less": "less", "GreaterOrEqual": "greater_equal", "LessOrEqual": "less_equal",
}


def _binary(function_name: str):
    def run(ctx: NodeContext, a: Any, b: Any) -> Any:
        return getattr(ctx.xp, function_name)(a, b)

    run.__name__ = function_name
    return run


for _op_type, _function_name in _BINARY.items():
    register(_op_type)(_binary(_function_name))


def _variadic(ctx: NodeContext, function_name: str, values: tuple[Any, ...]) -> Any:
    return functools.reduce(getattr(ctx.xp, function_name), values)


@register("Max")
def maximum(ctx: NodeContext, *values: Any) -> Any:
    return _variadic(ctx, "maximum", values)


@register("Min")
def minimum(ctx: NodeContext, *values: Any) -> Any:
    return _variadic(ctx, "minimum", values)


@register("Sum")
def total(ctx: NodeContext, *values: Any) -> Any:
    return _variadic(ctx, "add", values)


@register("Mean")
def mean(ctx: NodeContext, *values: Any) -> Any:
    result = _variadic(ctx, "add", values)
    return result / np.asarray(len(values), dtype=dtype_of(result))


@register("Where")
def where(ctx: NodeContext, condition: Any, x: Any, y: Any) -> Any:
    return ctx.xp.where(condition, x, y)


@register("Clip")
def clip(ctx: NodeContext, x: Any, low: Any = None, high: Any = None) -> Any:
    """Bounds are attributes before opset 11 and optional inputs from opset 11."""
    xp = ctx.xp
    if ctx.opset < 11:
        low = np.asarray(ctx.attr("min", -np.inf), dtype=dtype_of(x))
        high = np.asarray(ctx.attr("max", np.inf), dtype=dtype_of(x))
    if low is not None:
        x = xp.maximum(x, low.astype(dtype_of(x)) if hasattr(low, "astype") else low)
    if high is not None:
        x = xp.minimum(x, high.astype(dtype_of(x)) if hasattr(high, "astype") else high)
    return x


# --- casts -------------------------------------------------------------------------------------

def _float_to_integer(ctx: NodeContext, x: Any, target: np.dtype) -> Any:
    """Float to any integer type (int2 ... int64, uint2 ... uint64): truncates toward zero, saturates.

    ONNX's Cast spec (onnx/defs/tensor/defs.cc, docs/Operators.md#Cast) says: "Casting from floating
    point to: [...] fixed point: undefined if OOR (out of range)", and says nothing more (the
    `saturate` attribute is for float 8 targets only). ONNX's reference implementation is numpy's
    `astype` (ml_dtypes for the 2-/4-bit types), a C cast: in range it truncates toward zero, out of
    range (and for NaN / +-inf) it returns whatever the CPU gives, which differs between machines.
    nnlc picks one defined answer for what the spec leaves undefined, the one XLA's convert already
    gives for 8- to 64-bit targets: the integral part of x when it fits; otherwise the target's
    largest (x > max, +inf) or smallest (x < min, -inf) value; 0 for NaN. It is computed explicitly
    so that the numpy path (trace-time constants) and the jax path agree on every machine.
    """
    xp = ctx.xp
    if ctx.is_numpy:
        x = np.asarray(x).astype(np.float64)  # exact for every float type, and for 2**64 below
    else:
        target = np.dtype(jax.dtypes.canonicalize_dtype(target))  # int64 -> int32 when x64 is off
    info = ml_dtypes.iinfo(target)
    truncated = xp.trunc(x)
    # min is 0 or -2**k and max + 1 is 2**k: exact in x's float type, or +-inf where it has no such value
    in_range = xp.isfinite(truncated) & (truncated >= float(info.min)) & (truncated < float(int(info.max) + 1))
    result = cast(ctx, xp.where(in_range, truncated, xp.zeros_like(truncated)), target)
    largest, smallest = (xp.asarray(np.array(v, target)) for v in (info.max, info.min))
    result = xp.where(~in_range & (truncated > 0), largest, result)
    return xp.where(~in_range & (truncated < 0), smallest, result)  # NaN: neither, so 0


def _cast_with_saturation(ctx: NodeContext, x: Any, target: np.dtype) -> Any:
    """Float to 8-/4-bit float saturates to the largest finite value (unless saturate=0), as the spec's
    table says; float to integer truncates and saturates (`_float_to_integer`)."""
    xp = ctx.xp
    if jnp.issubdtype(dtype_of(x), jnp.floating):
        if target.name.startswith(("float8", "float4")):
            if ctx.attr("saturate", 1):
                largest = float(ml_dtypes.finfo(target).max)
                x = xp.where(xp.isnan(x), x, xp.clip(x, -largest, largest))
        elif jnp.issubdtype(target, jnp.integer):
            return _float_to_integer(ctx, x, target)
    return cast(ctx, x, target)


@register("Cast")
def cast_op(ctx: NodeContext, x: Any) -> Any:
    return _cast_with_saturation(ctx, x, onnx_to_numpy_dtype(ctx.attr("to")))


@register("CastLike")
def cast_like(ctx: NodeContext, x: Any, like: Any) -> Any:
    return _cast_with_saturation(ctx, x, dtype_of(like))
