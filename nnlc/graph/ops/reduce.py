"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare."""

from __future__ import annotations

from typing import Any

import jax.scipy.special as jsp
import numpy as np

from nnlc.graph.ops._common import dtype_of, ints, normalize_axes, shape_of
from nnlc.graph.registry import NodeContext, register

# First opset in which each reduction takes `axes` as an input instead of an attribute.
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_DEFAULT_AXES_INPUT_SINCE = 18


def _reduction_axes(ctx: NodeContext, x: Any, axes_input: Any) -> tuple[int, ...]:
    """The axes to reduce; () means none (noop_with_empty_axes), all axes when none are given."""
    rank = len(shape_of(x))
    if ctx.opset >= _AXES_INPUT_SINCE.get(ctx.op_type, _DEFAULT_AXES_INPUT_SINCE):
        axes = None if axes_input is None else ints(axes_input)
        if not axes:
            return () if ctx.attr("noop_with_empty_axes", 0) else tuple(range(rank))
        return normalize_axes(axes, rank)
    axes = ctx.attr("axes")
    return tuple(range(rank)) if axes is None else normalize_axes(axes, rank)


def _empty_identity(dtype: Any, lowest: bool) -> np.ndarray:
    """The value a max (or min) over nothing takes: -inf (+inf) or the integer extreme."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return np.asarray(-np.inf if lowest else np.inf, dtype)
    if dtype == np.bool_:
        return np.asarray(not lowest)
    info = np.iinfo(dtype)
    return np.asarray(info.min if lowest else info.max, dtype)


def _reduce(ctx: NodeContext, x: Any, axes_input: Any, kind: str) -> Any:
    xp = ctx.xp
    axes = _reduction_axes(ctx, x, axes_input)
    keepdims = bool(ctx.attr("keepdims", 1))
    dtype = dtype_of(x)
    if kind in ("max", "min"):
        function = xp.max if kind == "max" else xp.min
        empty = any(shape_of(x)[a] == 0 for a in axes)
        initial = {"initial": _empty_identity(dtype, kind == "max")} if empty else {}
        return function(x, axis=axes, keepdims=keepdims, **initial)
    if kind == "log_sum_exp":
        if not axes:
            return x
        if ctx.is_numpy:
            peak = np.max(x, axis=axes, keepdims=True, initial=-np.inf)
            peak = np.where(np.isfinite(peak), peak, 0)
            total = np.log(np.sum(np.exp(x - peak), axis=axes, keepdims=True)) + peak
            return (total if keepdims else np.squeeze(total, axis=axes)).astype(dtype)
        return jsp.logsumexp(x, axis=axes, keepdims=keepdims).astype(dtype)
    values = {"sum": x, "mean": x, "prod": x, "log_sum": x, "l1": xp.abs(x), "l2": x * x,
              "sum_square": x * x}[kind]
    if kind == "mean":
        result = xp.mean(values, axis=axes, keepdims=keepdims)
    elif kind == "prod":
        result = xp.prod(values, axis=axes, keepdims=keepdims)
    else:
        result = xp.sum(values, axis=axes, keepdims=keepdims)
    if kind == "l2":
        result = xp.sqrt(result)
    elif kind == "log_sum":
        result = xp.log(result)
    return result.astype(dtype) if ctx.is_numpy else result.astype(result.dtype if dtype == bool else dtype)


def _reduction(kind: str):
    def run(ctx: NodeContext, x: Any, axes: Any = None) -> Any:
        return _reduce(ctx, x, axes, kind)

    run.__name__ = f"reduce_{kind}"
    return run


_KINDS = {
    "ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod",
    "ReduceL1": "l1", "ReduceL2": "l2", "ReduceLogSum": "log_sum", "ReduceLogSumExp": "log_sum_exp",
    "ReduceSumSquare": "sum_square",
}
for _op_type, _kind in _KINDS.items():
    register(_op_type, static_inputs=(1,))(_reduction(_kind))
