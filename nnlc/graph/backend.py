"""An `onnx.backend.base.Backend` over `from_onnx`, so ONNX's own backend test suite can run it.

Each `run` jit-compiles the model with the weights as traced arguments. Graph inputs that decide
shapes (they feed, directly or through other nodes, an input such as Reshape's `shape`) are held
fixed at trace time; all other inputs are traced.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from nnlc.graph.convert import UnsupportedOpsError, from_onnx
from nnlc.graph.interpreter import CompiledGraph, compile_graph, model_opsets
from nnlc.graph.ops._common import onnx_to_numpy_dtype


# Loops unroll at trace time when their trip count and first condition are known there.
_LOOP_CONTROL = {"Loop": (0, 1)}


def _shape_deciding_names(graph: CompiledGraph) -> set[str]:
    """Names of values that static inputs depend on, followed backwards through the graph."""
    needed: set[str] = set()
    for _, node in graph.walk():
        if node.spec is not None:
            positions = (*node.spec.static_inputs, *_LOOP_CONTROL.get(node.op_type, ()))
            needed.update(node.inputs[i] for i in positions if i < len(node.inputs) and node.inputs[i])
    producers = {output: node for _, node in graph.walk() for output in node.outputs if output}
    frontier = list(needed)
    while frontier:
        node = producers.get(frontier.pop())
        if node is None or node.op_type in ("Shape", "Size"):
            continue
        inner = [name for sub in node.subgraphs.values() for _, n in sub.walk() for name in n.inputs]
        for name in (*node.inputs, *inner):
            if name and name not in needed:
                needed.add(name)
                frontier.append(name)
    return needed


def _x64_enabled() -> bool:
    return jax.dtypes.canonicalize_dtype(np.int64) == np.int64


class JaxBackendRep(BackendRep):
    """A prepared model: `run(inputs)` returns the outputs as a tuple of numpy arrays."""

    def __init__(self, model: onnx.ModelProto, trace_weights: bool = True, jit: bool = True):
        graph = compile_graph(model.graph, model_opsets(model))
        initializer_names = {init.name for init in model.graph.initializer}
        self.input_names = [i.name for i in model.graph.input if i.name not in initializer_names]
        self.output_names = [o.name for o in model.graph.output]
        self.output_types = [o.type.tensor_type.elem_type for o in model.graph.output]
        self.static_names = _shape_deciding_names(graph) & set(self.input_names)
        self.apply, self.weights = from_onnx(model, static_inputs=self.static_names)
        self.trace_weights = trace_weights
        self.jit = jit

    def _feeds(self, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            return dict(inputs)
        if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
            inputs = [inputs]
        return dict(zip(self.input_names, inputs))

    def split_call(self, inputs: Any) -> tuple[Callable[[Any, Any], dict[str, Any]], dict[str, Any], dict[str, Any]]:
        """(fn, weights, traced inputs) such that `fn(weights, traced)` computes the outputs."""
        feeds = self._feeds(inputs)
        fixed = {k: v for k, v in feeds.items() if k in self.static_names}
        traced = {k: v for k, v in feeds.items() if k not in self.static_names}

        def call(weights: dict[str, Any], dynamic: dict[str, Any]) -> dict[str, Any]:
            return self.apply(weights, {**dynamic, **fixed})

        return call, (self.weights if self.trace_weights else {}), traced

    def finish(self, outputs: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
        """The outputs dict as the tuple `run` returns (declared types when 64-bit types are off)."""
        results = []
        for name, elem_type in zip(self.output_names, self.output_types):
            value = np.asarray(outputs[name])
            if not _x64_enabled() and elem_type:
                value = value.astype(onnx_to_numpy_dtype(elem_type))
            results.append(value)
        return tuple(results)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        call, weights, traced = self.split_call(inputs)
        return self.finish((jax.jit(call) if self.jit else call)(weights, traced))


class JaxBackend(Backend):
    """ONNX backend running models through `nnlc.graph.from_onnx` and `jax.jit`."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        try:
            from_onnx(model)
        except UnsupportedOpsError:
            return False
        return True

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> JaxBackendRep:
        super().prepare(model, device, **kwargs)
        return JaxBackendRep(model, trace_weights=kwargs.get("trace_weights", True), jit=kwargs.get("jit", True))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info: Sequence[tuple[Any, Any]] | None = None, **kwargs: Any) -> tuple:
        """One node, wrapped in a model of its own (its opset: the newest this onnx knows)."""
        super().run_node(node, inputs, device, outputs_info)
        present = [name for name in node.input if name]
        graph = onnx.helper.make_graph(
            [node], "single_node",
            [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype),
                                                np.shape(value)) for name, value in zip(present, inputs)],
            [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name])
        rep = JaxBackendRep(onnx.helper.make_model(graph), jit=kwargs.get("jit", True))
        return rep.run(list(inputs))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        kind = device.split(":")[0].upper()
        if kind == "CPU":
            return True
        return kind == "CUDA" and any(d.platform == "gpu" for d in jax.devices())


prepare = JaxBackend.prepare
run_model = JaxBackend.run_model
run_node = JaxBackend.run_node
supports_device = JaxBackend.supports_device
