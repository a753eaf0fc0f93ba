"""ONNX operators, one small function each, grouped by family; importing this registers them all."""

from nnlc.graph.ops import (activations, attention, control, conv, elementwise, indexing, loss, nn,  # noqa: F401
                            quantize, reduce, resize, rnn, shape, signal)
