"""The standalone decoder: .nnlc bitstream -> ONNX model.

Imports only numpy, onnx, constriction and the standard library (never jax, flax or optax): this is
what ships to devices. Run it as `nnlc-decode IN.nnlc -o OUT.onnx` or `python -m nnlc.decoder`.
"""

from nnlc.decoder.decode import Limits, TensorUnit, decode_bitstream, decode_tensor, inspect_bitstream, parse_tensor_unit

__all__ = ["Limits", "TensorUnit", "decode_bitstream", "decode_tensor", "inspect_bitstream", "parse_tensor_unit"]
