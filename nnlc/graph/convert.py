"""`from_onnx`: an ONNX model as a pure JAX function of its weights."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
import onnx

from nnlc.errors import ModelError
from nnlc.graph import ops as _ops  # noqa: F401  (registers every op)
from nnlc.graph.interpreter import (CompiledGraph, RunState, compile_graph, model_opsets, run_graph,
                                    unsupported_nodes, weight_slots)
from nnlc.onnx_io import find_float_tensors, load_model

ApplyFn = Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]


class UnsupportedOpsError(ModelError, ValueError):
    """The model uses operators this package cannot run; `.nodes` lists (op, domain, opset, node)."""

    def __init__(self, nodes: list[tuple[str, str, int, str]]):
        self.nodes = nodes
        lines = [f"  {op} (domain {domain or 'ai.onnx'!r}, opset {opset}) at node {name!r}"
                 for op, domain, opset, name in nodes]
        kinds = sorted({op for op, *_ in nodes})
        super().__init__(f"{len(nodes)} node(s) use operators nnlc.graph does not support "
                         f"({', '.join(kinds)}):\n" + "\n".join(lines))


def _load(model_or_path: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    return load_model(model_or_path)


def _graph_input(value: Any, static: bool) -> Any:
    """Float data becomes a jax array; integer/bool numpy data and static inputs stay numpy."""
    if isinstance(value, (np.ndarray, np.generic, int, float, bool, list, tuple)):
        array = np.asarray(value)
        if static or array.dtype.kind not in "fc":
            return array
        return jnp.asarray(array)
    return value


def from_onnx(model_or_path: onnx.ModelProto | str | os.PathLike, *, static_inputs: Iterable[str] = (),
              precision: Any = None) -> tuple[ApplyFn, dict[str, np.ndarray]]:
    """Returns `(apply, weights)` for an ONNX model.

    `weights` maps each float tensor's name (as `nnlc.onnx_io.find_float_tensors` names it) to its
    value. `apply(weights, inputs)` runs the network on a dict of input arrays and returns a dict of
    output arrays; it is pure and works under `jax.jit`, `jax.grad` and `jax.vmap`. Weights missing
    from the dict take the model's own values (and stay trace-time constants).

    Integer and boolean graph inputs given as numpy arrays, and inputs named in `static_inputs`, are
    treated as known at trace time (so shapes may depend on them); under `jax.jit`, close over them
    instead of passing them as arguments. `precision` is passed to every matmul and convolution.

    Raises UnsupportedOpsError listing every node whose operator is not implemented.
    """
    model = _load(model_or_path)
    graph = compile_graph(model.graph, model_opsets(model))
    missing = unsupported_nodes(graph)
    if missing:
        raise UnsupportedOpsError(missing)
    records = find_float_tensors(model)
    slots = {(record.graph_path, record.onnx_name): name for name, record in records.items()}
    unplaced = sorted(name for key, name in slots.items() if key not in weight_slots(graph))
    if unplaced:
        raise ModelError(f"weights {unplaced[:5]} are not initializers or Constant outputs of any graph")
    weights = {name: record.array for name, record in records.items()}
    static_names = frozenset(static_inputs)
    return _make_apply(graph, slots, frozenset(weights), static_names, precision), weights


def _make_apply(graph: CompiledGraph, slots: Mapping[tuple[str, str], str], weight_names: frozenset[str],
                static_names: frozenset[str], precision: Any) -> ApplyFn:
    required = [name for name in graph.input_names if name not in graph.initializers]

    def apply(weights: Mapping[str, Any], inputs: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(weights) - weight_names)
        if unknown:
            raise KeyError(f"unknown weight names {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        absent = [name for name in required if name not in inputs]
        if absent:
            raise KeyError(f"missing graph inputs {absent}; the model takes {list(graph.input_names)}")
        extra = sorted(set(inputs) - set(graph.input_names))
        if extra:
            raise KeyError(f"unknown graph inputs {extra}; the model takes {list(graph.input_names)}")
        feeds = {name: _graph_input(value, name in static_names) for name, value in inputs.items()}
        state = RunState(weights=weights, slots=slots, precision=precision)
        outputs = run_graph(graph, feeds, state)
        return dict(zip(graph.output_names, outputs))

    apply.input_names = tuple(required)  # type: ignore[attr-defined]
    apply.output_names = graph.output_names  # type: ignore[attr-defined]
    return apply
