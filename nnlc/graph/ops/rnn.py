"""LSTM, GRU and RNN (forward, reverse, bidirectional) via `lax.scan`.

Weights are packed as ONNX stores them: W [directions, gates*H, input], R [directions, gates*H, H],
B [directions, 2*gates*H] (input biases, then recurrent biases). Gate order: LSTM i, o, f, c;
GRU z, r, h. Sequences shorter than the batch's longest (`sequence_lens`) stop updating their state
and emit zeros past their end; reverse directions start at each sequence's own end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from nnlc.graph.ops._common import shape_of
from nnlc.graph.registry import NodeContext, register

Activation = Callable[[jax.Array], jax.Array]


def _activation(name: str, alpha: float | None, beta: float | None) -> Activation:
    """ONNX recurrent activation by name (alpha/beta as the spec defines for each)."""
    table: dict[str, Activation] = {
        "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "softsign": jax.nn.soft_sign,
        "softplus": jax.nn.softplus,
        "affine": lambda v: alpha * v + beta,
        "leakyrelu": lambda v: jnp.where(v >= 0, v, alpha * v),
        "thresholdedrelu": lambda v: jnp.where(v > alpha, v, 0),
        "scaledtanh": lambda v: alpha * jnp.tanh(beta * v),
        "hardsigmoid": lambda v: jnp.clip(alpha * v + beta, 0, 1),
        "elu": lambda v: jnp.where(v > 0, v, alpha * jnp.expm1(jnp.minimum(v, 0))),
    }
    key = name.lower()
    if key not in table:
        raise NotImplementedError(f"recurrent activation {name!r}")
    return table[key]


_DEFAULT_ALPHA = {"affine": 1.0, "leakyrelu": 0.01, "thresholdedrelu": 1.0, "scaledtanh": 1.0,
                  "hardsigmoid": 0.2, "elu": 1.0}
_DEFAULT_BETA = {"affine": 0.0, "scaledtanh": 1.0, "hardsigmoid": 0.5}


def _activations(ctx: NodeContext, defaults: Sequence[str], directions: int) -> list[list[Activation]]:
    """Per direction, the list of activation functions (alpha/beta consumed in order of use)."""
    names = ctx.attr("activations") or list(defaults) * directions
    alphas = list(ctx.attr("activation_alpha") or [])
    betas = list(ctx.attr("activation_beta") or [])
    functions = []
    for name in names:
        key = name.lower()
        alpha = alphas.pop(0) if key in _DEFAULT_ALPHA and alphas else _DEFAULT_ALPHA.get(key)
        beta = betas.pop(0) if key in _DEFAULT_BETA and betas else _DEFAULT_BETA.get(key)
        functions.append(_activation(name, alpha, beta))
    per = len(defaults)
    return [functions[d * per:(d + 1) * per] for d in range(directions)]


def _reverse_time(values: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """Reverses axis 0 within each batch element's length (an involution)."""
    if lengths is None:
        return jnp.flip(values, 0)
    time = jnp.arange(values.shape[0])[:, None]
    source = jnp.where(time < lengths[None, :], lengths[None, :] - 1 - time, time)
    source = source.reshape(source.shape + (1,) * (values.ndim - 2))
    return jnp.take_along_axis(values, jnp.broadcast_to(source, values.shape), axis=0)


def _scan_direction(step: Callable, projected: jax.Array, carry: Any, lengths: jax.Array | None,
                    reverse: bool) -> tuple[jax.Array, Any]:
    """Runs `step(carry, projected_t) -> (carry, y_t)` over time; returns (ys [T, B, H], last carry)."""
    if reverse:
        projected = _reverse_time(projected, lengths)

    def body(state: Any, inputs: tuple[jax.Array, jax.Array]) -> tuple[Any, jax.Array]:
        x_t, t = inputs
        new_state, y = step(state, x_t)
        if lengths is not None:
            valid = (t < lengths)[:, None]
            new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(valid, new, old), new_state, state)
            y = jnp.where(valid, y, jnp.zeros_like(y))
        return new_state, y

    carry, ys = lax.scan(body, carry, (projected, jnp.arange(projected.shape[0])))
    if reverse:
        ys = _reverse_time(ys, lengths)
    return ys, carry


def _setup(ctx: NodeContext, x: Any, w: Any, r: Any, b: Any, lengths: Any, initial: Sequence[Any], gates: int):
    """Common argument handling: layout, directions, hidden size, biases and initial states."""
    layout = ctx.attr("layout", 0)
    x = jnp.asarray(x)
    if layout:
        x = jnp.swapaxes(x, 0, 1)
        initial = [None if s is None else jnp.swapaxes(jnp.asarray(s), 0, 1) for s in initial]
    steps, batch, _ = x.shape
    directions = shape_of(w)[0]
    hidden = ctx.attr("hidden_size") or shape_of(r)[-1]
    if b is None:
        b = jnp.zeros((directions, 2 * gates * hidden), x.dtype)
    states = [jnp.zeros((directions, batch, hidden), x.dtype) if s is None else jnp.asarray(s, x.dtype)
              for s in initial]
    if lengths is not None:
        lengths = jnp.asarray(lengths).astype(jnp.int32)
    direction = ctx.attr("direction", "forward")
    reverse_flags = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    return x, jnp.asarray(w), jnp.asarray(r), jnp.asarray(b), lengths, states, hidden, reverse_flags, layout


def _project(ctx: NodeContext, x: jax.Array, w: jax.Array, bias: jax.Array) -> jax.Array:
    return jnp.einsum("tbi,gi->tbg", x, w, precision=ctx.precision) + bias


def _finish(ys: list[jax.Array], finals: list[list[jax.Array]], layout: int) -> tuple[jax.Array, ...]:
    y = jnp.stack(ys, axis=1)  # [T, directions, B, H]
    last = [jnp.stack(states, axis=0) for states in zip(*finals)]  # each [directions, B, H]
    if layout:
        y = jnp.transpose(y, (2, 0, 1, 3))
        last = [jnp.swapaxes(s, 0, 1) for s in last]
    return (y, *last)


def _clipper(ctx: NodeContext) -> Callable[[jax.Array], jax.Array]:
    limit = ctx.attr("clip")
    return (lambda v: v) if limit is None else (lambda v: jnp.clip(v, -limit, limit))


@register("LSTM", numpy_ok=False)
def lstm(ctx: NodeContext, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None,
         initial_h: Any = None, initial_c: Any = None, peepholes: Any = None) -> tuple[Any, ...]:
    x, w, r, b, lengths, (h0, c0), hidden, reverse_flags, layout = _setup(
        ctx, x, w, r, b, sequence_lens, [initial_h, initial_c], gates=4)
    functions = _activations(ctx, ("Sigmoid", "Tanh", "Tanh"), len(reverse_flags))
    clip = _clipper(ctx)
    couple_forget = bool(ctx.attr("input_forget", 0))
    if peepholes is None:
        peepholes = jnp.zeros((len(reverse_flags), 3 * hidden), x.dtype)
    ys, finals = [], []
    for d, reverse in enumerate(reverse_flags):
        f, g, h = functions[d]
        p_i, p_o, p_f = jnp.split(jnp.asarray(peepholes)[d], 3)
        r_t = r[d].T

        def step(state, projected_t, r_t=r_t, f=f, g=g, h=h, p_i=p_i, p_o=p_o, p_f=p_f):
            h_prev, c_prev = state
            gates = projected_t + jnp.matmul(h_prev, r_t, precision=ctx.precision)
            i_pre, o_pre, f_pre, c_pre = jnp.split(gates, 4, axis=-1)
            i_gate = f(clip(i_pre + p_i * c_prev))
            f_gate = 1 - i_gate if couple_forget else f(clip(f_pre + p_f * c_prev))
            c_new = f_gate * c_prev + i_gate * g(clip(c_pre))
            o_gate = f(clip(o_pre + p_o * c_new))
            h_new = o_gate * h(c_new)
            return (h_new, c_new), h_new

        projected = _project(ctx, x, w[d], b[d, :4 * hidden] + b[d, 4 * hidden:])
        y, (h_last, c_last) = _scan_direction(step, projected, (h0[d], c0[d]), lengths, reverse)
        ys.append(y)
        finals.append([h_last, c_last])
    return _finish(ys, finals, layout)


@register("GRU", numpy_ok=False)
def gru(ctx: NodeContext, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None,
        initial_h: Any = None) -> tuple[Any, ...]:
    x, w, r, b, lengths, (h0,), hidden, reverse_flags, layout = _setup(
        ctx, x, w, r, b, sequence_lens, [initial_h], gates=3)
    functions = _activations(ctx, ("Sigmoid", "Tanh"), len(reverse_flags))
    clip = _clipper(ctx)
    linear_before_reset = bool(ctx.attr("linear_before_reset", 0))
    ys, finals = [], []
    for d, reverse in enumerate(reverse_flags):
        f, g = functions[d]
        r_z, r_r, r_h = jnp.split(r[d], 3, axis=0)
        rb_z, rb_r, rb_h = jnp.split(b[d, 3 * hidden:], 3)
        r_zr = jnp.concatenate([r_z, r_r], axis=0).T
        bias_zr = jnp.concatenate([rb_z, rb_r])

        def step(h_prev, projected_t, f=f, g=g, r_zr=r_zr, bias_zr=bias_zr, r_h=r_h, rb_h=rb_h):
            x_z, x_r, x_h = jnp.split(projected_t, 3, axis=-1)
            recurrent = jnp.matmul(h_prev, r_zr, precision=ctx.precision) + bias_zr
            z = f(clip(x_z + recurrent[:, :hidden]))
            reset = f(clip(x_r + recurrent[:, hidden:]))
            if linear_before_reset:
                candidate = g(clip(x_h + reset * (jnp.matmul(h_prev, r_h.T, precision=ctx.precision) + rb_h)))
            else:
                candidate = g(clip(x_h + jnp.matmul(reset * h_prev, r_h.T, precision=ctx.precision) + rb_h))
            h_new = (1 - z) * candidate + z * h_prev
            return h_new, h_new

        projected = _project(ctx, x, w[d], b[d, :3 * hidden])
        y, h_last = _scan_direction(step, projected, h0[d], lengths, reverse)
        ys.append(y)
        finals.append([h_last])
    return _finish(ys, finals, layout)


@register("RNN", numpy_ok=False)
def rnn(ctx: NodeContext, x: Any, w: Any, r: Any, b: Any = None, sequence_lens: Any = None,
        initial_h: Any = None) -> tuple[Any, ...]:
    x, w, r, b, lengths, (h0,), hidden, reverse_flags, layout = _setup(
        ctx, x, w, r, b, sequence_lens, [initial_h], gates=1)
    functions = _activations(ctx, ("Tanh",), len(reverse_flags))
    clip = _clipper(ctx)
    ys, finals = [], []
    for d, reverse in enumerate(reverse_flags):
        (f,) = functions[d]
        r_t = r[d].T

        def step(h_prev, projected_t, f=f, r_t=r_t):
            h_new = f(clip(projected_t + jnp.matmul(h_prev, r_t, precision=ctx.precision)))
            return h_new, h_new

        projected = _project(ctx, x, w[d], b[d, :hidden] + b[d, hidden:])
        y, h_last = _scan_direction(step, projected, h0[d], lengths, reverse)
        ys.append(y)
        finals.append([h_last])
    return _finish(ys, finals, layout)
