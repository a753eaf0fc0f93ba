"""Linear (de)quantization: per tensor, per axis or per block, to integer or 8-bit float types."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from nnlc.graph.ops._common import cast, dtype_of, normalize_axis, onnx_to_numpy_dtype, shape_of
from nnlc.graph.registry import NodeContext, register


def _broadcast_parameter(ctx: NodeContext, parameter: Any, x: Any) -> Any:
    """A scale or zero point shaped to broadcast against `x` (per tensor, per axis, or per block)."""
    xp = ctx.xp
    rank = len(shape_of(x))
    block = ctx.attr("block_size", 0)
    if int(np.prod(shape_of(parameter))) == 1 and not block:
        return xp.reshape(parameter, ())
    axis = normalize_axis(ctx.attr("axis", 1), rank)
    if block:
        repeated = xp.repeat(parameter, block, axis=axis)
        return xp.take(repeated, xp.arange(shape_of(x)[axis]), axis=axis)
    return xp.reshape(parameter, [-1 if d == axis else 1 for d in range(rank)])


def _is_float8(dtype: np.dtype) -> bool:
    return np.dtype(dtype).name.startswith(("float8", "float4"))


def _integer_range(dtype: np.dtype) -> tuple[int, int]:
    info = ml_dtypes.iinfo(dtype) if np.dtype(dtype).name in ("int4", "uint4", "int2", "uint2") else np.iinfo(dtype)
    return int(info.min), int(info.max)


@register("QuantizeLinear")
def quantize_linear(ctx: NodeContext, x: Any, scale: Any, zero_point: Any = None) -> Any:
    xp = ctx.xp
    if zero_point is not None:
        target = dtype_of(zero_point)
    elif ctx.attr("output_dtype"):
        target = onnx_to_numpy_dtype(ctx.attr("output_dtype"))
    else:
        target = np.dtype(np.uint8)
    compute = np.float32 if dtype_of(x).itemsize < 4 else dtype_of(x)
    scaled = x.astype(compute) / _broadcast_parameter(ctx, scale, x).astype(compute)
    if _is_float8(target):
        if zero_point is not None:
            scaled = scaled + _broadcast_parameter(ctx, zero_point, x).astype(compute)
        if ctx.attr("saturate", 1):
            largest = float(ml_dtypes.finfo(target).max)
            scaled = xp.where(xp.isnan(scaled), scaled, xp.clip(scaled, -largest, largest))
        return cast(ctx, scaled, target)
    rounded = xp.round(scaled)
    if zero_point is not None:
        rounded = rounded + _broadcast_parameter(ctx, zero_point, x).astype(compute)
    low, high = _integer_range(target)
    return cast(ctx, xp.clip(rounded, low, high), target)


@register("DequantizeLinear")
def dequantize_linear(ctx: NodeContext, x: Any, scale: Any, zero_point: Any = None) -> Any:
    output = onnx_to_numpy_dtype(ctx.attr("output_dtype")) if ctx.attr("output_dtype") else dtype_of(scale)
    compute = np.float32
    values = x.astype(compute)
    if zero_point is not None:
        values = values - _broadcast_parameter(ctx, zero_point, x).astype(compute)
    return cast(ctx, values * _broadcast_parameter(ctx, scale, x).astype(compute), output)


@register("DynamicQuantizeLinear")
def dynamic_quantize_linear(ctx: NodeContext, x: Any) -> tuple[Any, Any, Any]:
    xp = ctx.xp
    low = xp.minimum(xp.min(x), np.float32(0))
    high = xp.maximum(xp.max(x), np.float32(0))
    scale = ((high - low) / np.float32(255)).astype(np.float32)
    zero_point = xp.clip(xp.round(-low / scale), 0, 255)
    quantized = xp.clip(xp.round(x / scale) + zero_point, 0, 255)
    return cast(ctx, quantized, np.uint8), scale, cast(ctx, zero_point, np.uint8)
