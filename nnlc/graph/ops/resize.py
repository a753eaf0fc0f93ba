"""Resize and Upsample: nearest (gather), linear and cubic (a static weight matrix per axis).

Interpolation is separable, so each resized axis is handled on its own. Source coordinates,
neighbour indices and weights depend only on shapes and attributes: they are computed with numpy
at trace time, and only the gather / matrix product touches the traced data.
"""

from __future__ import annotations

import math
from typing import Any

import jax.numpy as jnp
import numpy as np

from nnlc.graph.ops._common import dtype_of, normalize_axis, shape_of
from nnlc.graph.registry import NodeContext, register


def _source_coordinates(mode: str, size_in: int, size_out: int, scale: float,
                        roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Where each output position samples the input (float64), and which positions extrapolate."""
    y = np.arange(size_out, dtype=np.float64)
    length_out = scale * size_in
    if mode == "align_corners":
        return (np.zeros(size_out) if length_out == 1 else y * (size_in - 1) / (length_out - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        if length_out == 1:
            x = np.full(size_out, (end - start) * (size_in - 1) / 2)
        else:
            x = y * (end - start) * (size_in - 1) / (length_out - 1)
        x = x + start * (size_in - 1)
        return x, (x < 0) | (x > size_in - 1)
    if mode == "pytorch_half_pixel":
        return (np.full(size_out, -0.5) if length_out == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if mode == "half_pixel_symmetric":
        offset = size_in / 2 * (1 - size_out / length_out)
        return offset + (y + 0.5) / scale - 0.5, None
    raise NotImplementedError(f"coordinate_transformation_mode {mode!r}")


def _nearest_indices(x: np.ndarray, rounding: str, size_in: int) -> np.ndarray:
    if rounding == "round_prefer_floor":
        index = np.where(x == np.floor(x), x, np.ceil(x - 0.5))
    elif rounding == "round_prefer_ceil":
        index = np.floor(x + 0.5)
    elif rounding == "floor":
        index = np.floor(x)
    elif rounding == "ceil":
        index = np.ceil(x)
    else:
        raise NotImplementedError(f"nearest_mode {rounding!r}")
    return np.clip(index, 0, size_in - 1).astype(np.int64)


def _keys_cubic(distance: np.ndarray, a: float) -> np.ndarray:
    d = np.abs(distance)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def _interpolation_matrix(x: np.ndarray, size_in: int, kind: str, scale: float, cubic_a: float,
                          exclude_outside: bool, antialias: bool) -> np.ndarray:
    """[size_out, size_in] weights; taps past the edges fold onto the edge (or drop out)."""
    stretch = min(scale, 1.0) if antialias else 1.0
    radius = (1.0 if kind == "linear" else 2.0) / stretch
    lowest = int(np.floor(x.min() - radius)) - 1
    highest = int(np.ceil(x.max() + radius)) + 1
    taps = np.arange(lowest, highest + 1)
    distance = (x[:, None] - taps[None, :]) * stretch
    if kind == "linear":
        weights = np.clip(1 - np.abs(distance), 0, None)
    else:
        weights = _keys_cubic(distance, cubic_a)
    outside = (taps < 0) | (taps >= size_in)
    if exclude_outside:
        weights = np.where(outside[None, :], 0.0, weights)
    if exclude_outside or antialias:
        totals = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(totals == 0, 1.0, totals)
    matrix = np.zeros((len(x), size_in))
    np.add.at(matrix, (slice(None), np.clip(taps, 0, size_in - 1)), weights)
    return matrix


def _resize_axis(ctx: NodeContext, data: Any, axis: int, size_out: int, scale: float,
                 roi: tuple[float, float] | None, attrs: dict[str, Any]) -> Any:
    size_in = shape_of(data)[axis]
    x, extrapolated = _source_coordinates(attrs["coordinates"], size_in, size_out, scale, roi)
    if attrs["mode"] == "nearest":
        result = jnp.take(data, _nearest_indices(x, attrs["nearest_mode"], size_in), axis=axis)
    else:
        matrix = _interpolation_matrix(x, size_in, attrs["mode"], scale, attrs["cubic_a"],
                                       attrs["exclude_outside"], attrs["antialias"])
        moved = jnp.moveaxis(jnp.asarray(data), axis, -1)
        product = jnp.matmul(moved, jnp.asarray(matrix.T, moved.dtype), precision=ctx.precision)
        result = jnp.moveaxis(product, -1, axis)
    if extrapolated is not None and extrapolated.any():
        mask = extrapolated.reshape([-1 if d == axis else 1 for d in range(len(shape_of(data)))])
        result = jnp.where(mask, jnp.asarray(attrs["extrapolation_value"], result.dtype), result)
    return result


def _output_geometry(ctx: NodeContext, dims: tuple[int, ...], axes: list[int], scales: Any,
                     sizes: Any) -> tuple[list[int], list[float]]:
    """Output size and scale factor per axis in `axes`."""
    if sizes is not None and np.size(sizes):
        sizes = [int(s) for s in np.asarray(sizes).reshape(-1)]
        factors = [s / dims[a] for s, a in zip(sizes, axes)]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            common = min(factors) if policy == "not_larger" else max(factors)
            factors = [common] * len(axes)
            sizes = [int(common * dims[a] + 0.5) for a in axes]
        return sizes, factors
    factors = [float(s) for s in np.asarray(scales).reshape(-1)]
    return [int(math.floor(dims[a] * f)) for a, f in zip(axes, factors)], factors


def _resize(ctx: NodeContext, x: Any, roi: Any, scales: Any, sizes: Any, attrs: dict[str, Any]) -> Any:
    dims = shape_of(x)
    rank = len(dims)
    axes = ctx.attr("axes")
    axes = list(range(rank)) if axes is None else [normalize_axis(a, rank) for a in axes]
    sizes_out, factors = _output_geometry(ctx, dims, axes, scales, sizes)
    roi = None if roi is None or not np.size(roi) else [float(v) for v in np.asarray(roi).reshape(-1)]
    result = jnp.asarray(x)
    for i, axis in enumerate(axes):
        axis_roi = None if roi is None else (roi[i], roi[i + len(axes)])
        identity = sizes_out[i] == dims[axis] and math.isclose(factors[i], 1.0) and \
            (axis_roi is None or axis_roi == (0.0, 1.0))
        if not identity:
            result = _resize_axis(ctx, result, axis, sizes_out[i], factors[i], axis_roi, attrs)
    return result.astype(dtype_of(x)) if np.issubdtype(dtype_of(x), np.floating) else result


@register("Resize", static_inputs=(1, 2, 3), numpy_ok=False)
def resize(ctx: NodeContext, x: Any, roi: Any = None, scales: Any = None, sizes: Any = None) -> Any:
    if ctx.opset < 11:  # Resize-10: (X, scales), asymmetric coordinates, nearest rounds down
        scales, roi = roi, None
        attrs = {"coordinates": "asymmetric", "nearest_mode": "floor"}
    else:
        attrs = {"coordinates": ctx.attr("coordinate_transformation_mode", "half_pixel"),
                 "nearest_mode": ctx.attr("nearest_mode", "round_prefer_floor")}
    attrs.update(mode=ctx.attr("mode", "nearest"), cubic_a=ctx.attr("cubic_coeff_a", -0.75),
                 exclude_outside=bool(ctx.attr("exclude_outside", 0)),
                 extrapolation_value=ctx.attr("extrapolation_value", 0.0),
                 antialias=bool(ctx.attr("antialias", 0)))
    if attrs["mode"] not in ("nearest", "linear", "cubic"):
        raise ctx.fail(f"mode {attrs['mode']!r}")
    return _resize(ctx, x, roi, scales, sizes, attrs)


@register("Upsample", static_inputs=(1,), numpy_ok=False)
def upsample(ctx: NodeContext, x: Any, scales: Any = None) -> Any:
    """Deprecated Resize predecessor: scales as an attribute (opset 7) or input (opset 9)."""
    scales = ctx.attr("scales") if scales is None else scales
    attrs = {"coordinates": "asymmetric", "nearest_mode": "floor", "mode": ctx.attr("mode", "nearest"),
             "cubic_a": -0.75, "exclude_outside": False, "extrapolation_value": 0.0, "antialias": False}
    return _resize(ctx, x, None, scales, None, attrs)
