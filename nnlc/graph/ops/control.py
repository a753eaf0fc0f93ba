"""Control flow: If, Loop and Scan, resolved at trace time whenever their conditions are known."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from nnlc.graph.registry import NodeContext, register

_MAX_UNROLLED_ITERATIONS = 100_000


def _known(value: Any) -> np.ndarray | None:
    """`value` as numpy when it is known at trace time, else None."""
    if value is None or isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


def _stack(ctx: NodeContext, values: list[Any]) -> Any:
    if all(isinstance(v, np.ndarray) for v in values):
        return np.stack(values)
    return jnp.stack([jnp.asarray(v) for v in values])


@register("If")
def if_op(ctx: NodeContext, condition: Any) -> tuple[Any, ...]:
    """A condition known at trace time picks one branch; otherwise `lax.cond` traces both."""
    known = _known(condition)
    if known is not None:
        branch = "then_branch" if bool(known.reshape(-1)[0]) else "else_branch"
        return tuple(ctx.run_subgraph(branch, []))

    def branch(name: str):
        return lambda: [jnp.asarray(v) for v in ctx.run_subgraph(name, [])]

    try:
        return tuple(lax.cond(jnp.reshape(condition, ()).astype(bool), branch("then_branch"), branch("else_branch")))
    except Exception as error:
        error.add_note("the If condition is only known at run time, so both branches were traced with these "
                       "shapes; pass the graph inputs the condition depends on as numpy arrays to pick one")
        raise


@register("Loop")
def loop(ctx: NodeContext, trip_count: Any = None, condition: Any = None, *carried: Any) -> tuple[Any, ...]:
    """Unrolled when the trip count and the condition are known; `lax.while_loop` otherwise."""
    known_count, known_condition = _known(trip_count), _known(condition)
    if (trip_count is None or known_count is not None) and (condition is None or known_condition is not None):
        return _unrolled_loop(ctx, known_count, known_condition, list(carried))
    return _while_loop(ctx, trip_count, condition, list(carried))


def _unrolled_loop(ctx: NodeContext, count: np.ndarray | None, condition: np.ndarray | None,
                   carried: list[Any]) -> tuple[Any, ...]:
    limit = None if count is None else int(count.reshape(-1)[0])
    keep_going = True if condition is None else bool(condition.reshape(-1)[0])
    scanned: list[list[Any]] = []
    iteration = 0
    while keep_going and (limit is None or iteration < limit):
        if iteration >= _MAX_UNROLLED_ITERATIONS:
            raise ctx.fail(f"more than {_MAX_UNROLLED_ITERATIONS} iterations")
        outputs = ctx.run_subgraph("body", [np.asarray(iteration, np.int64), np.asarray(keep_going), *carried])
        next_condition = _known(outputs[0])
        if next_condition is None:
            raise ctx.fail("the loop condition depends on traced values and the body has scan outputs "
                           "or an unknown trip count; such loops are not supported")
        keep_going = bool(next_condition.reshape(-1)[0])
        carried = list(outputs[1:1 + len(carried)])
        scanned.append(list(outputs[1 + len(carried):]))
        iteration += 1
    if not scanned:
        count_scans = len(ctx.attrs["body"].output_names) - 1 - len(carried)
        if count_scans:
            raise ctx.fail("a loop that runs zero times has scan outputs of unknown shape")
        return tuple(carried)
    stacked = [_stack(ctx, [step[i] for step in scanned]) for i in range(len(scanned[0]))]
    return (*carried, *stacked)


def _while_loop(ctx: NodeContext, trip_count: Any, condition: Any, carried: list[Any]) -> tuple[Any, ...]:
    scan_outputs = len(ctx.attrs["body"].output_names) - 1 - len(carried)
    if scan_outputs:
        raise ctx.fail("a loop with a traced trip count or condition cannot have scan outputs")
    limit = jnp.asarray(np.iinfo(np.int32).max if trip_count is None else trip_count).reshape(())
    start_condition = jnp.asarray(True if condition is None else condition).reshape(()).astype(bool)

    def keep_going(state):
        iteration, flag, _ = state
        return jnp.logical_and(flag, iteration < limit)

    def body(state):
        iteration, flag, values = state
        outputs = ctx.run_subgraph("body", [iteration, flag, *values])
        new_values = [jnp.asarray(v).astype(jnp.asarray(old).dtype) for v, old in zip(outputs[1:], values)]
        return iteration + 1, jnp.asarray(outputs[0]).reshape(()).astype(bool), new_values

    initial = (jnp.asarray(0, limit.dtype), start_condition, [jnp.asarray(v) for v in carried])
    _, _, final = lax.while_loop(keep_going, body, initial)
    return tuple(final)


@register("Scan", numpy_ok=False)
def scan(ctx: NodeContext, *inputs: Any) -> tuple[Any, ...]:
    """Opset 9+ Scan: per-input axes and directions, via `lax.scan`."""
    if ctx.opset < 9:
        raise ctx.fail("Scan before opset 9 (with a batch axis) is not supported")
    scan_count = ctx.attr("num_scan_inputs")
    states, sequences = list(inputs[:len(inputs) - scan_count]), list(inputs[len(inputs) - scan_count:])
    input_axes = ctx.attr("scan_input_axes") or [0] * scan_count
    input_directions = ctx.attr("scan_input_directions") or [0] * scan_count
    xs = []
    for value, axis, direction in zip(sequences, input_axes, input_directions):
        value = jnp.moveaxis(jnp.asarray(value), axis, 0)
        xs.append(jnp.flip(value, 0) if direction else value)

    def body(carry, slices):
        outputs = ctx.run_subgraph("body", [*carry, *slices])
        new_carry = [jnp.asarray(v).astype(jnp.asarray(old).dtype) for v, old in zip(outputs[:len(carry)], carry)]
        return new_carry, [jnp.asarray(v) for v in outputs[len(carry):]]

    final, ys = lax.scan(body, [jnp.asarray(s) for s in states], xs)
    output_axes = ctx.attr("scan_output_axes") or [0] * len(ys)
    output_directions = ctx.attr("scan_output_directions") or [0] * len(ys)
    results = []
    for value, axis, direction in zip(ys, output_axes, output_directions):
        value = jnp.flip(value, 0) if direction else value
        results.append(jnp.moveaxis(value, 0, axis % value.ndim))
    return (*final, *results)
