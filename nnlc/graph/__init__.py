"""Run imported ONNX networks as pure, jit-compiled, differentiable JAX functions of their weights.

    apply, weights = nnlc.graph.from_onnx("model.onnx")
    outputs = jax.jit(apply)(weights, {"input": x})

See docs/graph.md.
"""

from nnlc.graph.convert import UnsupportedOpsError, from_onnx
from nnlc.graph.interpreter import TraceTimeValueError
from nnlc.graph.registry import supported_ops

__all__ = ["TraceTimeValueError", "UnsupportedOpsError", "from_onnx", "supported_ops"]
