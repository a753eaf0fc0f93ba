"""Writes an ONNX file whose large initializers come straight from numpy buffers.

`onnx.save` builds every tensor's `raw_data` as a Python bytes copy (`numpy_helper.from_array`), then
serialises the whole model (a second copy) and measures it (a third pass): for MiniLM's 90 MB that is
about half of the decoder's time. Protobuf's wire format lets us avoid all three: a singular message
field that occurs twice is merged, and repeated fields are appended (Protocol Buffers encoding guide,
"Last One Wins" / merging of embedded messages). So the file is

    ModelProto without the main graph's initializers      (serialised by protobuf, small)
    + field 7 (graph), holding only field 5 (initializer) records, in the original order

and each initializer record is a small serialised TensorProto header followed by field 9 (raw_data)
whose bytes are written from the array's buffer. Parsing the file gives exactly the model that
`onnx_io.replace_tensors` + `onnx.save` would have written (a test checks this).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import BinaryIO

import numpy as np
import onnx

from nnlc import onnx_io
from nnlc.errors import ModelError

MODEL_GRAPH_TAG = bytes([(7 << 3) | 2])  # ModelProto.graph, length-delimited
GRAPH_INITIALIZER_TAG = bytes([(5 << 3) | 2])  # GraphProto.initializer
TENSOR_RAW_DATA_TAG = bytes([(9 << 3) | 2])  # TensorProto.raw_data


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def raw_bytes(array: np.ndarray, data_type: int) -> memoryview:
    """The little-endian bytes ONNX stores as `raw_data` for `array` written as `data_type`."""
    if data_type == onnx.TensorProto.BFLOAT16:
        return memoryview(onnx_io.bfloat16_bits(array).astype("<u2"))
    target = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(data_type)).newbyteorder("<")
    data = np.ascontiguousarray(np.asarray(array).astype(target, copy=False))
    return memoryview(data).cast("B")


def _tensor_record(header: bytes, data: memoryview) -> tuple[list, int]:
    """(pieces, length) of one TensorProto message: header fields then raw_data."""
    pieces = [header, TENSOR_RAW_DATA_TAG, varint(data.nbytes), data]
    return pieces, len(header) + 1 + len(pieces[2]) + data.nbytes


def spliced_pieces(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> tuple[list, int]:
    """(byte pieces, total length) of `model` with the main graph's initializers named in `values`
    replaced (dtype and shape of the model's slot kept), the rest of the model unchanged.

    `model` is changed: its main graph's initializers are moved out of it into the returned pieces.
    Raises ModelError for a name that is not a main-graph initializer or a shape that does not match.
    """
    initializers = list(model.graph.initializer)
    known = {tensor.name for tensor in initializers}
    for name in values:
        if name not in known:
            raise ModelError(f"the model's main graph has no initializer named {name!r}")
    records = []
    for tensor in initializers:
        if tensor.name in values:
            value = np.asarray(values[tensor.name])
            if tuple(tensor.dims) != value.shape:
                raise ModelError(f"{tensor.name}: shape {value.shape} does not match the model's {tuple(tensor.dims)}")
            header = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=value.shape)
            records.append(_tensor_record(header.SerializeToString(), raw_bytes(value, tensor.data_type)))
        else:
            serialized = tensor.SerializeToString()
            records.append(([serialized], len(serialized)))
    del model.graph.initializer[:]
    pieces: list = [model.SerializeToString()]
    body_length = 0
    for _, length in records:
        body_length += 1 + len(varint(length)) + length
    if records:
        pieces += [MODEL_GRAPH_TAG, varint(body_length)]
        for record_pieces, length in records:
            pieces += [GRAPH_INITIALIZER_TAG, varint(length), *record_pieces]
    return pieces, sum(len(piece) if isinstance(piece, bytes) else piece.nbytes for piece in pieces)


def write_pieces(stream: BinaryIO, pieces: list) -> None:
    for piece in pieces:
        stream.write(piece)
