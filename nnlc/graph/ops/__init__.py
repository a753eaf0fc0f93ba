"""ONNX operators, one small function each, grouped by family; importing this registers them all."""

from nnlc.graph.ops import (activations, control, conv, elementwise, indexing, nn, reduce, resize,  # noqa: F401
                            rnn, shape)
