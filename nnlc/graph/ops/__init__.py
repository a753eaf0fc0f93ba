"""ONNX operators, one small function each, grouped by family; importing this registers them all."""

from nnlc.graph.ops import (activations, control, conv, elementwise, indexing, loss, nn, quantize,  # noqa: F401
                            reduce, resize, rnn, shape)
