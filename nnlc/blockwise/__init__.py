"""Block-wise stage: cut an ONNX graph into blocks that train on their own (issue 12)."""
