"""Syntax of every structure in a .nnlc bitstream, declared once and used by reader and writer.

Each structure is a list of `Field`s. `write_fields` turns a dict of values into bytes and
`read_fields` does the reverse, checking every length and count against the bytes that remain and
against the limit the field declares before anything is allocated. `docs/bitstream.md` embeds the
table printed by `python -m nnlc.bitstream.syntax` (a test keeps the two in sync).

Element types (all multi-byte integers little-endian):
  u8, u16, u32          unsigned fixed-width integers
  f32                   IEEE-754 binary32
  varint                unsigned LEB128, at most 10 bytes, value <= the field's limit
  svarint               zigzag-mapped signed LEB128 (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...)
  str                   varint byte length (<= limit), then UTF-8 bytes
  bytes                 varint byte length (<= limit), then the bytes
  varints               varint count (<= limit), then that many varints
  symbols_list          varint count (<= limit), then that many `symbols` structures
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from nnlc.errors import BitstreamError

MAGIC = b"NNLC"
FORMAT_VERSION = (1, 4)  # (major, minor): readers reject another major version; 1.1 added mode 3, 1.2 mode 4,
# 1.3 mode 5, 1.4 mode 6. Writers set the oldest minor version that holds what a file uses (`container.required_version`):
# files without a mode-4 or mode-5 tensor stay 1.1 byte for byte, and 1.1 readers read them.
OLDEST_WRITTEN_VERSION = (1, 1)
MODE_VERSIONS = {4: (1, 2), 5: (1, 3), 6: (1, 4)}  # tensor mode -> the first version that has it (modes 0..3: 1.1 or earlier)

_MAX_VARINT_BYTES = 10
U64_MAX = (1 << 64) - 1


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    kind: str
    meaning: str
    limit: int = U64_MAX  # max value (varint), max length (str, bytes) or max count (varints)


# Limits (documented in docs/bitstream.md, "Limits").
MAX_NAME_BYTES = 4096
MAX_RANK = 16
MAX_TABLE_SIZE = 1 << 16
MAX_UNIT_BYTES = (1 << 40)
MAX_GROUPS = 256  # row groups of a mode-5 tensor

SYNTAX: dict[str, list[Field]] = {
    "file_header": [
        Field("magic", "u32", "the bytes 'NNLC'"),
        Field("version_major", "u8", "format major version; readers reject others"),
        Field("version_minor", "u8", "format minor version; additions readers may ignore"),
    ],
    "unit_header": [
        Field("unit_type", "u8", "1 model header, 2 topology, 3 tensor, 4 end"),
        Field("payload_length", "varint", "bytes of payload that follow", MAX_UNIT_BYTES),
    ],
    "unit_trailer": [
        Field("crc32", "u32", "CRC-32 (zlib) of unit_type, payload_length and payload bytes"),
    ],
    "model_header": [
        Field("flags", "u8", "bit 0: a topology unit follows; other bits 0"),
        Field("tensor_count", "varint", "number of tensor units", 1 << 24),
        Field("producer", "str", "free text naming the encoder and its settings", 1024),
    ],
    "topology": [
        Field("codec", "u8", "1: xz/LZMA2 (Python lzma, FORMAT_XZ)"),
        Field("raw_length", "varint", "length of the ONNX ModelProto after decompression", 1 << 31),
        Field("data", "bytes", "compressed ONNX ModelProto with the coded tensors' data removed", 1 << 31),
    ],
    "tensor": [
        Field("graph_path", "str", "'' for the main graph, else e.g. 'If_0/then_branch'", MAX_NAME_BYTES),
        Field("onnx_name", "str", "initializer name, or output name of the Constant node", MAX_NAME_BYTES),
        Field("storage", "u8", "0 initializer, 1 Constant value, 2 Constant value_float, 3 Constant value_floats"),
        Field("role", "u8", "index into ROLES (conv_kernel, depthwise_kernel, dense, ...); informative"),
        Field("data_type", "u8", "ONNX TensorProto data type of the tensor"),
        Field("shape", "varints", "dimensions", MAX_RANK),
        Field("mode", "u8", "0 raw (lossless bytes), 1 quantized, 2 integer (lossless, entropy coded), 3 latent, "
                            "4 generated (lossless, format 1.2), 5 grouped (quantized, a step per row group, format 1.3), "
                            "6 dependent (two quantizers chosen by a 4-state machine, format 1.4)"),
        Field("body", "bytes", "a tensor_raw, tensor_quantized, tensor_integer, tensor_latent, tensor_generated, "
                               "tensor_grouped or tensor_dependent structure", MAX_UNIT_BYTES),
    ],
    "tensor_raw": [
        Field("compression", "u8", "0 none, 1 zlib"),
        Field("data", "bytes", "little-endian element bytes in data_type (bool: 1 byte)", MAX_UNIT_BYTES),
    ],
    "tensor_quantized": [
        Field("step", "f32", "quantization step; weight = float32(q) * step in float32"),
        Field("symbols", "symbols", "the integers q (structure `symbols`)"),
    ],
    "tensor_latent": [
        Field("decoder", "u8", "latent decoder: 1 scalar, 2 channel (axis 0), 3 dct (spatial axes)"),
        Field("steps", "bytes", "float32 little-endian steps: 1, shape[0], or the spatial size", MAX_UNIT_BYTES),
        Field("symbols", "symbols", "the integer latents (structure `symbols`)"),
    ],
    "tensor_integer": [
        Field("symbols", "symbols", "the tensor's integer values (structure `symbols`)"),
    ],
    "tensor_generated": [
        Field("generator", "u8", "1: windowed DFT basis (nnlc/decoder/analytic.py)"),
        Field("parameters", "varints", "generator 1: n_fft (1..65536), bins (1..n_fft; shape [2 bins, 1, ..., 1, "
                                       "n_fft]), window (0 rectangular, 1 Hann periodic, 2 Hann symmetric, 3 Hamming "
                                       "periodic, 4 Hamming symmetric), imag_sign (0: -sin, 1: +sin), arithmetic "
                                       "(0 float64, 1 float32 product)", 16),
        Field("scale", "f32", "finite, nonzero factor of the generated values"),
        Field("residual", "symbols", "ordered(original) - ordered(generated) per element, ordered: the monotone "
                                     "float32 bits -> integer map (structure `symbols`)"),
    ],
    "tensor_grouped": [
        Field("steps", "bytes", "float32 little-endian step of each group (1 to 256 groups)", 4 * MAX_GROUPS),
        Field("row_groups", "symbols", "the group (0 .. groups - 1) of each row along axis 0 (structure `symbols`)"),
        Field("groups", "symbols_list", "per group, the integers q of its rows in row order (C order within a row); "
                                        "weight = float32(q) * the group's step in float32", MAX_GROUPS),
    ],
    "tensor_dependent": [
        Field("step", "f32", "the step d; weight = float32(level) * d in float32 (nnlc/decoder/dependent.py)"),
        Field("transposed", "u8", "1: the rows are the columns of the stored matrix (2-D tensors only); else 0"),
        Field("row_length", "varint", "elements per row (divides the tensor's size); the state restarts at 0 "
                                      "on each row", 1 << 40),
        Field("symbols", "symbols", "the integers k in C order (structure `symbols`); along a row, level = 2k in "
                                    "states 0 and 1, 2k - sgn(k) in states 2 and 3, then state = [[0, 2], [2, 0], "
                                    "[1, 3], [3, 1]][state][k & 1]"),
    ],
    "symbols": [
        Field("exact_log2", "u8", "magnitudes below 2**exact_log2 are their own bin", 62),
        Field("mantissa_bits", "u8", "bins per octave above that: 2**mantissa_bits", 62),
        Field("precision", "u8", "table frequencies sum to 2**precision", 16),
        Field("first_bin", "svarint", "signed bin of the first table entry"),
        Field("frequencies", "varints", "frequency of each bin first_bin, first_bin+1, ...", MAX_TABLE_SIZE),
        Field("escape_frequency", "varint", "frequency of the escape symbol (0: no escape)", 1 << 16),
        Field("ans_words", "bytes", "constriction AnsCoder compressed words (uint32 little-endian)", MAX_UNIT_BYTES),
        Field("escapes", "bytes", "signed bins of escaped symbols as svarints, in symbol order", MAX_UNIT_BYTES),
        Field("raw_bits", "bytes", "low bits of large magnitudes, most significant first", MAX_UNIT_BYTES),
    ],
}


class Writer:
    """Appends syntax elements to a bytearray."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def varint(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"varint cannot hold {value}")
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                self.buffer.append(byte | 0x80)
            else:
                self.buffer.append(byte)
                return

    def element(self, field: Field, value: Any) -> None:
        kind = field.kind
        if kind == "u8":
            self.buffer += struct.pack("<B", value)
        elif kind == "u16":
            self.buffer += struct.pack("<H", value)
        elif kind == "u32":
            self.buffer += struct.pack("<I", value)
        elif kind == "f32":
            self.buffer += struct.pack("<f", value)
        elif kind == "varint":
            self._check_limit(field, value)
            self.varint(value)
        elif kind == "svarint":
            self.varint(2 * value if value >= 0 else -2 * value - 1)
        elif kind in ("str", "bytes"):
            data = value.encode("utf-8") if kind == "str" else bytes(value)
            self._check_limit(field, len(data))
            self.varint(len(data))
            self.buffer += data
        elif kind == "varints":
            values = [int(v) for v in value]
            self._check_limit(field, len(values))
            self.varint(len(values))
            for v in values:
                self.varint(v)
        elif kind == "symbols_list":
            self._check_limit(field, len(value))
            self.varint(len(value))
            for structure in value:
                self.buffer += write_fields("symbols", structure)
        elif kind in SYNTAX:
            self.buffer += write_fields(kind, value)
        else:
            raise ValueError(f"unknown element type {kind}")

    @staticmethod
    def _check_limit(field: Field, value: int) -> None:
        if value > field.limit:
            raise ValueError(f"{field.name}: {value} exceeds the format limit {field.limit}")


class Reader:
    """Reads syntax elements from bytes; every failure is a BitstreamError naming the field."""

    def __init__(self, data: bytes | memoryview, position: int = 0, end: int | None = None) -> None:
        self.data = memoryview(data)
        self.position = position
        self.end = len(self.data) if end is None else end

    @property
    def remaining(self) -> int:
        return self.end - self.position

    def take(self, count: int, what: str) -> memoryview:
        if count < 0 or count > self.remaining:
            raise BitstreamError(f"{what}: needs {count} bytes, only {self.remaining} remain")
        chunk = self.data[self.position:self.position + count]
        self.position += count
        return chunk

    def varint(self, what: str) -> int:
        value = 0
        for index in range(_MAX_VARINT_BYTES):
            byte = self.take(1, what)[0]
            value |= (byte & 0x7F) << (7 * index)
            if not byte & 0x80:
                if value > U64_MAX:
                    break
                return value
        raise BitstreamError(f"{what}: malformed varint")

    def element(self, field: Field) -> Any:
        kind, what = field.kind, field.name
        if kind == "u8":
            return self.take(1, what)[0]
        if kind == "u16":
            return struct.unpack("<H", self.take(2, what))[0]
        if kind == "u32":
            return struct.unpack("<I", self.take(4, what))[0]
        if kind == "f32":
            return struct.unpack("<f", self.take(4, what))[0]
        if kind == "varint":
            return self._limited(field, self.varint(what))
        if kind == "svarint":
            raw = self.varint(what)
            return raw >> 1 if raw % 2 == 0 else -(raw >> 1) - 1
        if kind == "str":
            length = self._limited(field, self.varint(what))
            try:
                return bytes(self.take(length, what)).decode("utf-8")
            except UnicodeDecodeError:
                raise BitstreamError(f"{what}: not UTF-8") from None
        if kind == "bytes":
            length = self._limited(field, self.varint(what))
            return self.take(length, what)
        if kind == "varints":
            count = self._limited(field, self.varint(what))
            if count > self.remaining:  # each varint takes at least one byte
                raise BitstreamError(f"{what}: {count} values cannot fit in {self.remaining} bytes")
            return self._varints(count, what)
        if kind == "symbols_list":
            count = self._limited(field, self.varint(what))
            if count > self.remaining:  # each structure takes at least one byte
                raise BitstreamError(f"{what}: {count} structures cannot fit in {self.remaining} bytes")
            structures = []
            for _ in range(count):
                values, self.position = read_fields("symbols", self.data, self.position, self.end)
                structures.append(values)
            return structures
        if kind in SYNTAX:
            values, self.position = read_fields(kind, self.data, self.position, self.end)
            return values
        raise BitstreamError(f"unknown element type {kind}")

    def _varints(self, count: int, what: str) -> list[int]:
        """`count` varints; vectorised when each has at most 9 bytes (values < 2**63), which covers
        every well-formed table; otherwise (or when malformed) one by one, for the exact error."""
        if count >= 16:
            window = np.frombuffer(self.data, dtype=np.uint8, count=min(self.remaining, 9 * count),
                                   offset=self.position)
            ends = np.flatnonzero(window < 0x80)[:count]
            if len(ends) == count:
                starts = np.empty(count, dtype=np.int64)
                starts[0] = 0
                starts[1:] = ends[:-1] + 1
                if int(np.max(ends - starts)) <= 8:
                    owner = np.repeat(np.arange(count), ends - starts + 1)
                    used = window[:ends[-1] + 1]
                    shifts = (7 * (np.arange(len(used)) - starts[owner])).astype(np.uint64)
                    values = np.bitwise_or.reduceat((used & 0x7F).astype(np.uint64) << shifts, starts)
                    self.position += int(ends[-1]) + 1
                    return values.tolist()
        return [self.varint(what) for _ in range(count)]

    @staticmethod
    def _limited(field: Field, value: int) -> int:
        if value > field.limit:
            raise BitstreamError(f"{field.name}: {value} exceeds the format limit {field.limit}")
        return value


def write_fields(structure: str, values: Mapping[str, Any]) -> bytes:
    """Serialises `values` (one entry per field of `structure`) in the declared order."""
    writer = Writer()
    for field in SYNTAX[structure]:
        writer.element(field, values[field.name])
    return bytes(writer.buffer)


def read_fields(structure: str, data: bytes | memoryview, position: int = 0,
                end: int | None = None) -> tuple[dict[str, Any], int]:
    """Parses `structure` at `position`; returns the values and the position after them."""
    reader = Reader(data, position, end)
    values = {field.name: reader.element(field) for field in SYNTAX[structure]}
    return values, reader.position


def read_exact(structure: str, data: bytes | memoryview) -> dict[str, Any]:
    """Parses `structure` from `data`, which must hold nothing else."""
    values, position = read_fields(structure, data)
    if position != len(data):
        raise BitstreamError(f"{structure}: {len(data) - position} unexpected trailing bytes")
    return values


def markdown_table() -> str:
    """The syntax as markdown tables (embedded in docs/bitstream.md)."""
    lines = []
    for structure, fields in SYNTAX.items():
        lines += [f"### `{structure}`", "", "| field | type | limit | meaning |", "|---|---|---|---|"]
        for field in fields:
            limit = "" if field.limit == U64_MAX else str(field.limit)
            lines.append(f"| `{field.name}` | {field.kind} | {limit} | {field.meaning} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
