"""Ops that create, reshape, join, split or slice tensors; shape arithmetic lives here too."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnlc.graph.ops._common import (axes_argument, dtype_of, ints, normalize_axes, normalize_axis,
                                    onnx_to_numpy_dtype, shape_of)
from nnlc.graph.registry import NodeContext, register


@register("Constant")
def constant(ctx: NodeContext) -> np.ndarray:
    attrs = ctx.attrs
    if "value" in attrs:
        return np.asarray(attrs["value"])
    if "value_float" in attrs:
        return np.asarray(attrs["value_float"], dtype=np.float32)
    if "value_floats" in attrs:
        return np.asarray(attrs["value_floats"], dtype=np.float32)
    if "value_int" in attrs:
        return np.asarray(attrs["value_int"], dtype=np.int64)
    if "value_ints" in attrs:
        return np.asarray(attrs["value_ints"], dtype=np.int64)
    raise ctx.fail(f"unsupported Constant attribute {sorted(attrs)}")


@register("Shape")
def shape(ctx: NodeContext, x: Any) -> np.ndarray:
    dims = shape_of(x)
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    return np.asarray(dims[slice(start, end)], dtype=np.int64)


@register("Size")
def size(ctx: NodeContext, x: Any) -> np.ndarray:
    return np.asarray(math.prod(shape_of(x)), dtype=np.int64)


@register("ConstantOfShape", static_inputs=(0,))
def constant_of_shape(ctx: NodeContext, dims: np.ndarray) -> np.ndarray:
    value = ctx.attr("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    return np.full(ints(dims), value.reshape(-1)[0], dtype=value.dtype)


@register("Range", static_inputs=(0, 1, 2))
def arange(ctx: NodeContext, start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> np.ndarray:
    count = max(int(np.ceil((limit.item() - start.item()) / delta.item())), 0)
    return (start + np.arange(count, dtype=start.dtype) * delta).astype(start.dtype)


@register("EyeLike")
def eye_like(ctx: NodeContext, x: Any) -> np.ndarray:
    rows, columns = shape_of(x)
    dtype = ctx.attr("dtype")
    dtype = dtype_of(x) if dtype is None else onnx_to_numpy_dtype(dtype)
    return np.eye(rows, columns, k=ctx.attr("k", 0), dtype=dtype)


@register("Reshape", static_inputs=(1,))
def reshape(ctx: NodeContext, x: Any, target: np.ndarray | None = None) -> Any:
    dims = ints(target) if ctx.opset >= 5 else list(ctx.attr("shape"))
    if not ctx.attr("allowzero", 0):
        source = shape_of(x)
        dims = [source[i] if d == 0 else d for i, d in enumerate(dims)]
    return ctx.xp.reshape(x, dims)


@register("Flatten")
def flatten(ctx: NodeContext, x: Any) -> Any:
    dims = shape_of(x)
    axis = ctx.attr("axis", 1)
    axis = axis + len(dims) if axis < 0 else axis
    return ctx.xp.reshape(x, (math.prod(dims[:axis]), math.prod(dims[axis:])))


@register("Transpose")
def transpose(ctx: NodeContext, x: Any) -> Any:
    perm = ctx.attr("perm")
    return ctx.xp.transpose(x, None if perm is None else [int(p) for p in perm])


@register("Concat")
def concat(ctx: NodeContext, *values: Any) -> Any:
    rank = len(shape_of(values[0]))
    return ctx.xp.concatenate(values, axis=normalize_axis(ctx.attr("axis", 0), rank))


@register("Split", static_inputs=(1,))
def split(ctx: NodeContext, x: Any, sizes: np.ndarray | None = None) -> tuple[Any, ...]:
    axis = normalize_axis(ctx.attr("axis", 0), len(shape_of(x)))
    length = shape_of(x)[axis]
    sizes = ints(sizes) if ctx.opset >= 13 and sizes is not None else ctx.attr("split")
    if sizes is None:
        parts = ctx.attr("num_outputs", ctx.num_outputs)
        chunk = -(-length // parts)
        sizes = [min(chunk, length - i * chunk) for i in range(parts)]
    if sum(sizes) != length:
        raise ctx.fail(f"split sizes {sizes} do not add up to the axis length {length}")
    bounds = np.cumsum([0, *sizes])
    index = [slice(None)] * len(shape_of(x))
    outputs = []
    for begin, end in zip(bounds[:-1], bounds[1:]):
        index[axis] = slice(int(begin), int(end))
        outputs.append(x[tuple(index)])
    return tuple(outputs)


def _clamped_slice(start: int, end: int, step: int, dim: int) -> slice:
    """Python slice for ONNX Slice semantics (indices clamped to the dimension)."""
    if step == 0:
        raise ValueError("Slice step must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    if dim == 0:
        return slice(0, 0, 1)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@register("Slice", static_inputs=(1, 2, 3, 4))
def slice_op(ctx: NodeContext, x: Any, starts: Any = None, ends: Any = None, axes: Any = None,
             steps: Any = None) -> Any:
    rank = len(shape_of(x))
    if ctx.opset < 10:
        starts, ends, axes = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes")
    starts, ends = ints(starts), ints(ends)
    axes = list(range(len(starts))) if axes is None else [normalize_axis(a, rank) for a in ints(axes)]
    steps = [1] * len(starts) if steps is None else ints(steps)
    index = [slice(None)] * rank
    dims = shape_of(x)
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis] = _clamped_slice(start, end, step, dims[axis])
    return x[tuple(index)]


@register("Squeeze", static_inputs=(1,))
def squeeze(ctx: NodeContext, x: Any, axes: Any = None) -> Any:
    dims = shape_of(x)
    axes = axes_argument(ctx, axes, 13)
    if axes is None:
        axes = [i for i, d in enumerate(dims) if d == 1]
    return ctx.xp.reshape(x, [d for i, d in enumerate(dims) if i not in normalize_axes(axes, len(dims))])


@register("Unsqueeze", static_inputs=(1,))
def unsqueeze(ctx: NodeContext, x: Any, axes: Any = None) -> Any:
    dims = list(shape_of(x))
    axes = axes_argument(ctx, axes, 13)
    rank = len(dims) + len(axes)
    for axis in normalize_axes(axes, rank):
        dims.insert(axis, 1)
    return ctx.xp.reshape(x, dims)


@register("Expand", static_inputs=(1,))
def expand(ctx: NodeContext, x: Any, target: np.ndarray) -> Any:
    dims = np.broadcast_shapes(shape_of(x), tuple(ints(target)))
    return ctx.xp.broadcast_to(x, dims)


@register("Tile", static_inputs=(1,))
def tile(ctx: NodeContext, x: Any, repeats: np.ndarray) -> Any:
    return ctx.xp.tile(x, ints(repeats))


@register("Pad", static_inputs=(1, 3))
def pad(ctx: NodeContext, x: Any, pads: Any = None, constant_value: Any = None, axes: Any = None) -> Any:
    """Modes constant, reflect, edge, wrap; negative pads crop."""
    xp = ctx.xp
    rank = len(shape_of(x))
    if ctx.opset < 11:
        pads = ctx.attr("pads", ctx.attr("paddings"))
        constant_value = np.asarray(ctx.attr("value", 0.0), dtype=dtype_of(x))
    pads = ints(pads)
    axes = list(range(rank)) if axes is None else [normalize_axis(a, rank) for a in ints(axes)]
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[axis], end[axis] = pads[i], pads[i + len(axes)]
    mode = ctx.attr("mode", "constant")
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    if mode == "constant":
        value = 0 if constant_value is None else constant_value
        if np.ndim(value):
            value = value.reshape(())
        value = value.astype(dtype_of(x)) if hasattr(value, "astype") else np.asarray(value, dtype_of(x))
        padded = xp.pad(x, widths, mode="constant", constant_values=value)
    elif mode in ("reflect", "edge", "wrap"):
        padded = xp.pad(x, widths, mode=mode)
    else:
        raise ctx.fail(f"pad mode {mode!r}")
    crop = tuple(slice(-min(b, 0), shape_of(padded)[i] + min(e, 0)) for i, (b, e) in enumerate(zip(begin, end)))
    return padded[crop]


@register("DepthToSpace")
def depth_to_space(ctx: NodeContext, x: Any) -> Any:
    n, c, h, w = shape_of(x)
    block = ctx.attr("blocksize")
    xp = ctx.xp
    if ctx.attr("mode", "DCR") == "DCR":
        y = xp.transpose(xp.reshape(x, (n, block, block, c // block**2, h, w)), (0, 3, 4, 1, 5, 2))
    else:
        y = xp.transpose(xp.reshape(x, (n, c // block**2, block, block, h, w)), (0, 1, 4, 2, 5, 3))
    return xp.reshape(y, (n, c // block**2, h * block, w * block))


@register("SpaceToDepth")
def space_to_depth(ctx: NodeContext, x: Any) -> Any:
    n, c, h, w = shape_of(x)
    block = ctx.attr("blocksize")
    xp = ctx.xp
    y = xp.reshape(x, (n, c, h // block, block, w // block, block))
    order = (0, 1, 3, 5, 2, 4) if ctx.attr("mode", "DCR") == "CRD" else (0, 3, 5, 1, 2, 4)
    y = xp.transpose(y, order)
    return xp.reshape(y, (n, c * block * block, h // block, w // block))


@register("Dropout", static_inputs=(1, 2))
def dropout(ctx: NodeContext, x: Any, ratio: Any = None, training: Any = None) -> tuple[Any, Any]:
    """Inference only: the identity, with an all-true mask."""
    if training is not None and bool(training) and (ratio is None or float(ratio) > 0):
        raise ctx.fail("training-mode Dropout is random; only inference is supported")
    return x, ctx.xp.ones(shape_of(x), dtype=bool)


@register("CenterCropPad", static_inputs=(1,))
def center_crop_pad(ctx: NodeContext, x: Any, target: np.ndarray) -> Any:
    """Crops or zero-pads each axis around its centre (the odd element goes to the end)."""
    rank = len(shape_of(x))
    axes = ctx.attr("axes")
    axes = list(range(rank)) if axes is None else [normalize_axis(a, rank) for a in axes]
    widths = [(0, 0)] * rank
    crops = [slice(None)] * rank
    for axis, size in zip(axes, ints(target)):
        difference = size - shape_of(x)[axis]
        if difference < 0:
            crops[axis] = slice(-difference // 2, -difference // 2 + size)
        else:
            widths[axis] = (difference // 2, difference - difference // 2)
    return ctx.xp.pad(x[tuple(crops)], widths)
