"""Turns ONNX graphs into plans and runs them node by node with numpy (trace-time) or jax values.

Values in the environment are numpy arrays when they are known at trace time (shape arithmetic,
integer constants, weights left at the model's values) and jax arrays or tracers otherwise. A node
whose inputs are all numpy is folded with numpy when its op allows it, so `Shape -> Gather -> Concat
-> Reshape` chains never reach the traced program.
"""

from __future__ import annotations

import dataclasses
from collections import ChainMap
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import numpy_helper

from nnlc.graph.registry import DEFAULT_DOMAIN, NodeContext, OpSpec, lookup, normalize_domain

_CONCRETE_SCALARS = (np.ndarray, np.generic, int, float, bool)


class TraceTimeValueError(ValueError):
    """A value that decides output shapes (e.g. Reshape's `shape`) is only known at run time."""


@dataclasses.dataclass
class CompiledNode:
    """One node with its attributes decoded and its subgraphs compiled."""

    op_type: str
    domain: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    subgraphs: dict[str, CompiledGraph]
    opset: int
    spec: OpSpec | None


@dataclasses.dataclass
class CompiledGraph:
    """A graph ready to run: `path` is its prefix in tensor names ('' for the main graph)."""

    path: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    initializers: dict[str, np.ndarray]
    nodes: list[CompiledNode]

    def walk(self) -> Iterator[tuple[CompiledGraph, CompiledNode]]:
        """Every (graph, node) pair, nested subgraphs included."""
        for node in self.nodes:
            yield self, node
            for subgraph in node.subgraphs.values():
                yield from subgraph.walk()


def subgraph_path(parent_path: str, node: onnx.NodeProto, index: int, attribute: str) -> str:
    """Name prefix of a subgraph: `<node name or OpType_index>/<attribute>`, nested with '/'."""
    owner = node.name or f"{node.op_type}_{index}"
    return f"{parent_path}/{owner}/{attribute}" if parent_path else f"{owner}/{attribute}"


def _attribute_value(attribute: onnx.AttributeProto, compile_sub) -> Any:
    kind = attribute.type
    if kind == onnx.AttributeProto.FLOAT:
        return float(attribute.f)
    if kind == onnx.AttributeProto.INT:
        return int(attribute.i)
    if kind == onnx.AttributeProto.STRING:
        return attribute.s.decode("utf-8", errors="replace")
    if kind == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(attribute.t)
    if kind == onnx.AttributeProto.FLOATS:
        return [float(v) for v in attribute.floats]
    if kind == onnx.AttributeProto.INTS:
        return [int(v) for v in attribute.ints]
    if kind == onnx.AttributeProto.STRINGS:
        return [v.decode("utf-8", errors="replace") for v in attribute.strings]
    if kind == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in attribute.tensors]
    if kind == onnx.AttributeProto.GRAPH:
        return compile_sub(attribute.name, attribute.g)
    if kind == onnx.AttributeProto.GRAPHS:
        return [compile_sub(f"{attribute.name}[{i}]", g) for i, g in enumerate(attribute.graphs)]
    return attribute  # sparse tensors, type protos: left for the op to reject


def compile_graph(graph: onnx.GraphProto, opsets: Mapping[str, int], path: str = "") -> CompiledGraph:
    """Decodes every node's attributes and compiles nested subgraphs."""
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    nodes = []
    for index, node in enumerate(graph.node):
        domain = normalize_domain(node.domain)
        subgraphs: dict[str, CompiledGraph] = {}

        def compile_sub(attr_name: str, subgraph: onnx.GraphProto, node=node, index=index) -> CompiledGraph:
            compiled = compile_graph(subgraph, opsets, subgraph_path(path, node, index, attr_name))
            subgraphs[attr_name] = compiled
            return compiled

        attrs = {a.name: _attribute_value(a, compile_sub) for a in node.attribute}
        nodes.append(CompiledNode(
            op_type=node.op_type, domain=domain, name=node.name or f"{node.op_type}_{index}",
            inputs=tuple(node.input), outputs=tuple(node.output), attrs=attrs, subgraphs=subgraphs,
            opset=int(opsets.get(domain, 0)), spec=lookup(node.op_type, domain)))
    return CompiledGraph(path, tuple(i.name for i in graph.input), tuple(o.name for o in graph.output),
                         initializers, nodes)


def model_opsets(model: onnx.ModelProto) -> dict[str, int]:
    opsets = {normalize_domain(o.domain): int(o.version) for o in model.opset_import}
    opsets.setdefault(DEFAULT_DOMAIN, 1)
    return opsets


@dataclasses.dataclass
class RunState:
    """Per-call state: the caller's weights and where each lives in the graph."""

    weights: Mapping[str, Any]
    slots: Mapping[tuple[str, str], str]  # (graph path, ONNX name) -> weight name
    precision: Any = None
    defaults: dict[int, tuple[Any, np.ndarray]] = dataclasses.field(default_factory=dict)

    def tensor_value(self, path: str, onnx_name: str, default: np.ndarray) -> Any:
        """The caller's value for a stored tensor if given, else the model's (as numpy)."""
        name = self.slots.get((path, onnx_name))
        if name is None or name not in self.weights:
            return default
        value = self.weights[name]
        if tuple(np.shape(value)) != default.shape:
            raise ValueError(f"weight {name!r} has shape {tuple(np.shape(value))}, the model's has {default.shape}")
        value = jnp.asarray(value)
        if value.dtype != jax.dtypes.canonicalize_dtype(default.dtype):
            value = value.astype(default.dtype)
        self.defaults[id(value)] = (value, default)
        return value

    def static_value(self, value: Any, node: CompiledNode, position: int) -> np.ndarray:
        """`value` as numpy; a traced weight falls back to the model's value."""
        if isinstance(value, _CONCRETE_SCALARS):
            return np.asarray(value)
        if not isinstance(value, jax.core.Tracer):
            return np.asarray(value)
        known = self.defaults.get(id(value))
        if known is not None and known[0] is value:
            return known[1]
        raise TraceTimeValueError(
            f"{node.op_type} node {node.name!r}: input {position} ({node.inputs[position]!r}) decides the "
            "output shape, so it must be known at trace time, but it depends on traced values. Pass the "
            "graph inputs it depends on as numpy arrays (see from_onnx's static_inputs).")


def _is_concrete(value: Any) -> bool:
    return value is None or isinstance(value, _CONCRETE_SCALARS)


def _as_output(value: Any) -> Any:
    return np.asarray(value) if isinstance(value, _CONCRETE_SCALARS) else value


def run_graph(graph: CompiledGraph, feeds: Mapping[str, Any], state: RunState,
              outer: Mapping[str, Any] | None = None) -> list[Any]:
    """Runs `graph` on `feeds` (values by input name); `outer` holds the enclosing scopes' values."""
    env: MutableMapping[str, Any] = ChainMap({}, outer) if outer is not None else {}
    for name, array in graph.initializers.items():
        env[name] = state.tensor_value(graph.path, name, array)
    env.update(feeds)
    for node in graph.nodes:
        _run_node(graph, node, env, state)
    missing = [name for name in graph.output_names if name not in env]
    if missing:
        raise ValueError(f"graph {graph.path or 'main'!r} never computes its outputs {missing}")
    return [env[name] for name in graph.output_names]


def _run_node(graph: CompiledGraph, node: CompiledNode, env: MutableMapping[str, Any], state: RunState) -> None:
    spec = node.spec
    if spec is None:
        raise ValueError(f"no implementation for {node.op_type!r} (node {node.name!r})")
    try:
        inputs = [env[name] if name else None for name in node.inputs]
    except KeyError as error:
        raise ValueError(f"{node.op_type} node {node.name!r} reads {error.args[0]!r}, which no earlier node "
                         "computes (the graph is not topologically sorted or is incomplete)") from None
    for position in spec.static_inputs:
        if position < len(inputs) and inputs[position] is not None:
            inputs[position] = state.static_value(inputs[position], node, position)
    use_numpy = spec.numpy_ok and all(_is_concrete(v) for v in inputs)

    def run_subgraph(attr_name: str, sub_inputs: Sequence[Any]) -> list[Any]:
        subgraph = node.subgraphs[attr_name]
        sub_feeds = dict(zip(subgraph.input_names, sub_inputs))
        return run_graph(subgraph, sub_feeds, state, outer=env)

    ctx = NodeContext(op_type=node.op_type, name=node.name, attrs=node.attrs, opset=node.opset,
                      num_outputs=len(node.outputs), xp=np if use_numpy else jnp,
                      run_subgraph=run_subgraph, precision=state.precision)
    try:
        result = spec.fn(ctx, *inputs)
    except Exception as error:
        error.add_note(f"while running {node.op_type} node {node.name!r} in graph {graph.path or 'main'!r}")
        raise
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    if node.op_type == "Constant":
        outputs = (state.tensor_value(graph.path, node.outputs[0], np.asarray(outputs[0])),)
    wanted = [i for i, name in enumerate(node.outputs) if name]
    if wanted and wanted[-1] >= len(outputs):
        raise NotImplementedError(f"{node.op_type} node {node.name!r}: output {wanted[-1]} is not implemented")
    for i in wanted:
        env[node.outputs[i]] = _as_output(outputs[i])


def unsupported_nodes(graph: CompiledGraph) -> list[tuple[str, str, int, str]]:
    """(op type, domain, opset, node name) of every node without an implementation."""
    return [(node.op_type, node.domain, node.opset, f"{g.path + '/' if g.path else ''}{node.name}")
            for g, node in graph.walk() if node.spec is None]


def weight_slots(graph: CompiledGraph) -> set[tuple[str, str]]:
    """(graph path, ONNX name) of every initializer and Constant output, nested graphs included."""
    slots = {(graph.path, name) for name in graph.initializers}
    for g, node in graph.walk():
        slots.update((g.path, name) for name in g.initializers)
        if node.op_type == "Constant" and node.outputs:
            slots.add((g.path, node.outputs[0]))
    return slots
