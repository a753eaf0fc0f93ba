"""Helpers shared by the op families: dtypes, axes, and attribute-or-input arguments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx

from nnlc.graph.registry import NodeContext


def onnx_to_numpy_dtype(data_type: int) -> np.dtype:
    """numpy dtype of an ONNX TensorProto data type (ml_dtypes for bfloat16 and friends)."""
    if data_type == onnx.TensorProto.STRING:
        raise NotImplementedError("string tensors are not supported")
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type))


def cast(ctx: NodeContext, x: Any, dtype: Any) -> Any:
    """`x` as `dtype`; in jax, the dtype is first reduced to what jax enables (no x64 warnings)."""
    dtype = np.dtype(dtype)
    if ctx.is_numpy:
        return np.asarray(x).astype(dtype)
    target = jax.dtypes.canonicalize_dtype(dtype)
    x = jnp.asarray(x)
    return x if x.dtype == target else x.astype(target)


def dtype_of(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype


def is_float(x: Any) -> bool:
    return jnp.issubdtype(dtype_of(x), jnp.floating)


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def normalize_axes(axes: Sequence[int], rank: int) -> tuple[int, ...]:
    return tuple(sorted({normalize_axis(int(a), rank) for a in axes}))


def ints(value: Any) -> list[int]:
    """A static 0-d/1-d integer array (or list) as a list of Python ints."""
    return [int(v) for v in np.asarray(value).reshape(-1)]


def axes_argument(ctx: NodeContext, axes_input: Any, input_since: int) -> list[int] | None:
    """Axes from the input (opset >= `input_since`) or the `axes` attribute (earlier opsets)."""
    if ctx.opset >= input_since:
        return None if axes_input is None else ints(axes_input)
    axes = ctx.attr("axes")
    return None if axes is None else [int(a) for a in axes]


def shape_of(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in np.shape(x))


def constant_like(ctx: NodeContext, value: float, like: Any) -> Any:
    """A scalar of `like`'s dtype."""
    return np.asarray(value, dtype=dtype_of(like)) if ctx.is_numpy else jnp.asarray(value, dtype=like.dtype)


def splat_value(x: Any) -> Any:
    """The common value of a trace-time float constant whose elements are all equal, else None."""
    if not isinstance(x, np.ndarray) or x.size < 2 or not np.issubdtype(x.dtype, np.floating):
        return None
    first = x.reshape(-1)[0]
    return first if bool(np.all(x == first)) else None

