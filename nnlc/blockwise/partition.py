"""Blocks of an ONNX graph: cut where few activations cross, so each block trains on its own.

The main graph's nodes are in topological order (ONNX requires it). A cut between node i-1 and node
i is crossed by every activation produced before i (a node output) that a node at or after i reads;
a graph output leaves from the block that makes it. Graph inputs are not counted: every block may read them. A cut is a
*boundary* when its crossing count is the smallest over all interior cuts (1 in a chain of residual
blocks: the residual stream; 2 in a BERT-like encoder: the hidden states and the extended attention
mask, which is counted apart: see `weight_dependent`). Inside a residual block, an attention layer or around an LSTM's state more activations
cross, so those stay whole. Among the boundaries, `partition` keeps cuts greedily so that every
block holds at least `min_params` weights (about total / `target_blocks`).

Each `Block` becomes a standalone ONNX model (`block_model`): its nodes, the initializers they read,
its crossing inputs (and the graph inputs it reads) as inputs, its crossing outputs as outputs.
Running the blocks in order, each fed the outputs of those before it, reproduces the graph
(`run_blocks`; tests/test_blockwise_partition.py checks exact equality on a residual CNN, a
transformer and an LSTM model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, shape_inference


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE)
_RANDOM_OPS = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial")


@dataclasses.dataclass
class Block:
    """Nodes [start, end) of the main graph, with what crosses into and out of them."""

    index: int
    start: int
    end: int
    inputs: list[str]  # activations from earlier blocks, then graph inputs read here
    outputs: list[str]  # activations later blocks (or the graph's outputs) read
    weights: list[str]  # float initializers read by these nodes
    params: int

    def describe(self) -> str:
        return (f"block {self.index}: nodes {self.start}-{self.end - 1}, {self.params:,} params, "
                f"in {', '.join(self.inputs)} -> out {', '.join(self.outputs)}")


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    names: set[str] = set()
    for attribute in node.attribute:
        graphs = list(attribute.graphs) + ([attribute.g] if attribute.HasField("g") else [])
        for graph in graphs:
            local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
            for inner in graph.node:
                local.update(inner.output)
            for inner in graph.node:
                names.update(n for n in inner.input if n and n not in local)
                names.update(n for n in _subgraph_reads(inner) if n not in local)
    return names


def node_reads(node: onnx.NodeProto) -> set[str]:
    return {name for name in node.input if name} | _subgraph_reads(node)


WEIGHT_ELEMENTS = 16  # float initializers larger than this are weights (as the encoder's tiny-tensor rule)


def constant_values(model: onnx.ModelProto) -> set[str]:
    """Node outputs that any block can recompute cheaply: computed from graph inputs, Constant nodes
    and small initializers without touching a weight (shapes, scales, BERT's extended attention mask).

    They do not count as crossing activations: a block that reads one gets its producing nodes.
    """
    graph = model.graph
    weights = {tensor.name for tensor in graph.initializer
               if tensor.data_type in _FLOAT_TYPES and int(np.prod(tensor.dims, dtype=np.int64)) > WEIGHT_ELEMENTS}
    known = ({tensor.name for tensor in graph.initializer} - weights) | {value.name for value in graph.input}
    constants: set[str] = set()
    for node in graph.node:
        reads = node_reads(node)
        if node.op_type not in _RANDOM_OPS and not reads & weights and \
                all(name in known or name in constants for name in reads):
            constants.update(name for name in node.output if name)
    return constants


def weight_dependent(model: onnx.ModelProto) -> set[str]:
    """Node outputs whose values depend on a weight (Shape and Size outputs depend on shapes only)."""
    graph = model.graph
    weights = {tensor.name for tensor in graph.initializer
               if tensor.data_type in _FLOAT_TYPES and int(np.prod(tensor.dims, dtype=np.int64)) > WEIGHT_ELEMENTS}
    dependent: set[str] = set()
    for node in graph.node:
        if node.op_type in ("Shape", "Size"):
            continue
        if node_reads(node) & (weights | dependent):
            dependent.update(name for name in node.output if name)
    return dependent


def _constant_producers(model: onnx.ModelProto, names: set[str], constants: set[str]) -> list[onnx.NodeProto]:
    """The nodes (in graph order) that compute the constant values `names` from initializers."""
    producer = {out: node for node in model.graph.node for out in node.output if out in constants}
    needed: set[int] = set()
    order = {id(node): index for index, node in enumerate(model.graph.node)}
    stack = [name for name in names if name in producer]
    while stack:
        node = producer[stack.pop()]
        if order[id(node)] in needed:
            continue
        needed.add(order[id(node)])
        stack.extend(name for name in node_reads(node) if name in producer)
    return [model.graph.node[index] for index in sorted(needed)]


def crossing_counts(model: onnx.ModelProto, constants: set[str] | None = None) -> list[list[str]]:
    """For every cut 0..len(nodes), the activations crossing it (see the module docstring)."""
    graph = model.graph
    constants = constants if constants is not None else constant_values(model)
    initializers = {tensor.name for tensor in graph.initializer} | constants
    graph_inputs = {value.name for value in graph.input} - initializers
    nodes = list(graph.node)
    produced_at: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            if name:
                produced_at[name] = index
    last_read: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node_reads(node):
            if name in produced_at:
                last_read[name] = max(last_read.get(name, -1), index)
    # graph outputs leave from the block that makes them (Block.outputs): they do not cross later cuts
    crossings = []
    for cut in range(len(nodes) + 1):
        crossings.append(sorted(name for name, produced in produced_at.items()
                                if produced < cut <= last_read.get(name, -1) and name not in graph_inputs
                                and name not in initializers))
    return crossings


def _weights_of(model: onnx.ModelProto, start: int, end: int) -> list[str]:
    floats = {tensor.name: tensor for tensor in model.graph.initializer if tensor.data_type in _FLOAT_TYPES}
    used: list[str] = []
    for node in model.graph.node[start:end]:
        for name in sorted(node_reads(node)):
            if name in floats and name not in used:
                used.append(name)
    return used


def _params(model: onnx.ModelProto, names: Sequence[str]) -> int:
    by_name = {tensor.name: tensor for tensor in model.graph.initializer}
    return int(sum(np.prod(by_name[n].dims, dtype=np.int64) for n in names))


def partition(model: onnx.ModelProto, target_blocks: int = 8, min_params: int | None = None) -> list[Block]:
    """Blocks of the main graph cut at minimal-crossing boundaries, each with >= min_params weights."""
    nodes = list(model.graph.node)
    if not nodes:
        raise ValueError("the graph has no nodes")
    constants = constant_values(model)
    crossings = crossing_counts(model, constants)
    dependent = weight_dependent(model)
    # boundaries are counted in activations that carry weights' effects; shape-only values (a BERT
    # mask expanded to the hidden states' shape) cross too, as extra block inputs, but do not count
    width = [sum(name in dependent for name in names) for names in crossings]
    interior = [width[cut] for cut in range(1, len(nodes))]
    narrowest = min((c for c in interior if c > 0), default=0)
    total = _params(model, _weights_of(model, 0, len(nodes)))
    if min_params is None:
        min_params = max(1, total // max(1, target_blocks))
    cuts, start = [], 0
    for cut in range(1, len(nodes)):
        if width[cut] != narrowest:
            continue
        if _params(model, _weights_of(model, start, cut)) >= min_params and \
                _params(model, _weights_of(model, cut, len(nodes))) >= min_params // 2:
            cuts.append(cut)
            start = cut
    bounds = [0] + cuts + [len(nodes)]
    initializers = {tensor.name for tensor in model.graph.initializer}
    graph_inputs = [value.name for value in model.graph.input if value.name not in initializers]
    graph_outputs = [value.name for value in model.graph.output]
    blocks = []
    for index, (begin, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        own = nodes[begin:end]
        produced_here = {name for node in own for name in node.output if name}
        borrowed = _constant_producers(model, set().union(*(node_reads(n) for n in own)) - produced_here, constants)
        reads = set().union(*(node_reads(node) for node in own + borrowed))
        inputs = list(crossings[begin]) if begin else []
        inputs = [name for name in inputs if name in reads]
        inputs += [name for name in graph_inputs if name in reads]
        outputs = [name for name in crossings[end] if name in produced_here] if end < len(nodes) else []
        outputs += [name for name in graph_outputs if name in produced_here and name not in outputs]
        weights = _weights_of(model, begin, end)
        blocks.append(Block(index, begin, end, inputs, outputs, weights, _params(model, weights)))
    return blocks


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes are optional; types fall back to float
        inferred = model
    infos = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        infos[value.name] = value
    return infos


def block_model(model: onnx.ModelProto, block: Block, infos: Mapping[str, onnx.ValueInfoProto] | None = None,
                constants: set[str] | None = None) -> onnx.ModelProto:
    """The block as a standalone ONNX model (same opsets), runnable by onnxruntime or nnlc.graph."""
    infos = infos if infos is not None else _value_infos(model)
    constants = constants if constants is not None else constant_values(model)
    nodes = list(model.graph.node[block.start:block.end])
    produced = {name for node in nodes for name in node.output}
    reads = set().union(*(node_reads(node) for node in nodes))
    borrowed = _constant_producers(model, {n for n in reads - produced if n in constants}, constants)
    nodes = [node for node in borrowed if not set(node.output) & produced] + nodes
    reads = set().union(*(node_reads(node) for node in nodes))
    initializers = [tensor for tensor in model.graph.initializer if tensor.name in reads]

    def info(name: str) -> onnx.ValueInfoProto:
        if name in infos and infos[name].type.HasField("tensor_type"):
            return infos[name]
        return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)

    graph = helper.make_graph(nodes, f"{model.graph.name}_block{block.index}", [info(n) for n in block.inputs],
                              [info(n) for n in block.outputs], initializers)
    result = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    result.functions.extend(model.functions)
    return result


def block_models(model: onnx.ModelProto, blocks: Sequence[Block]) -> list[onnx.ModelProto]:
    infos, constants = _value_infos(model), constant_values(model)
    return [block_model(model, block, infos, constants) for block in blocks]


def run_blocks(models: Sequence[onnx.ModelProto], blocks: Sequence[Block], feeds: Mapping[str, np.ndarray],
               optimise: bool = False) -> dict[str, np.ndarray]:
    """Runs the blocks in order with onnxruntime, each fed the graph inputs and earlier blocks' outputs."""
    import onnxruntime as ort

    values: dict[str, np.ndarray] = dict(feeds)
    options = ort.SessionOptions()
    if not optimise:  # same kernels as an unoptimised run of the whole graph: bit-exact comparison
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    for block_proto, block in zip(models, blocks, strict=True):
        session = ort.InferenceSession(block_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        outputs = session.run(block.outputs, {name: values[name] for name in block.inputs})
        values.update(zip(block.outputs, outputs, strict=True))
    return values
