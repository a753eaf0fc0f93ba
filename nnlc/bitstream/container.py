"""The unit container: file header, then units of (type, length, payload, CRC-32).

Units decode independently: a reader can walk the unit headers and decode one tensor without the
others. Every unit's CRC is checked before its payload is parsed.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import zlib
from collections.abc import Iterable, Iterator

from nnlc.bitstream.syntax import (FORMAT_VERSION, MAGIC, MODE_VERSIONS, OLDEST_WRITTEN_VERSION, SYNTAX, Reader,
                                   Writer, read_fields, write_fields)
from nnlc.errors import BitstreamError


class UnitType(enum.IntEnum):
    MODEL_HEADER = 1
    TOPOLOGY = 2
    TENSOR = 3
    END = 4


@dataclasses.dataclass
class Unit:
    type: UnitType
    payload: bytes | memoryview
    index: int = -1  # position in the file (0-based), for error messages
    offset: int = -1  # byte offset of the unit header in the file


def _unit_bytes(unit_type: int, payload: bytes) -> bytes:
    header = write_fields("unit_header", {"unit_type": int(unit_type), "payload_length": len(payload)})
    crc = zlib.crc32(payload, zlib.crc32(header))
    return header + payload + write_fields("unit_trailer", {"crc32": crc})


def _tensor_mode(payload: bytes | memoryview) -> int | None:
    """The mode of a tensor unit's payload, None when it does not parse."""
    try:
        return read_fields("tensor", payload)[0]["mode"]
    except BitstreamError:
        return None


def required_version(units: Iterable[tuple[int, bytes]]) -> tuple[int, int]:
    """The oldest format version that holds these units: 1.1, or the first version of the newest mode used
    (`MODE_VERSIONS`: 1.2 for mode 4, 1.3 for mode 5, 1.4 for mode 6)."""
    version = OLDEST_WRITTEN_VERSION
    for unit_type, payload in units:
        if unit_type == UnitType.TENSOR:
            version = max(version, MODE_VERSIONS.get(_tensor_mode(payload), OLDEST_WRITTEN_VERSION))
    return version


def write_container(units: Iterable[tuple[int, bytes]], version: tuple[int, int] | None = None) -> bytes:
    """File header followed by the given (type, payload) units and a closing END unit.

    The header carries `version`, by default the oldest that holds the units (`required_version`)."""
    units = list(units)
    version = required_version(units) if version is None else version
    if version[0] != FORMAT_VERSION[0] or version > FORMAT_VERSION:
        raise ValueError(f"cannot write format version {version[0]}.{version[1]}")
    magic = struct.unpack("<I", MAGIC)[0]
    parts = [write_fields("file_header", {"magic": magic, "version_major": version[0],
                                          "version_minor": version[1]})]
    parts += [_unit_bytes(unit_type, payload) for unit_type, payload in units]
    parts.append(_unit_bytes(UnitType.END, b""))
    return b"".join(parts)


def read_file_header(data: bytes | memoryview) -> tuple[tuple[int, int], int]:
    """Checks the magic and version; returns ((major, minor), position after the header)."""
    if len(data) < 4 or bytes(data[:4]) != MAGIC:
        raise BitstreamError("not an nnlc bitstream (bad magic)")
    values, position = read_fields("file_header", data)
    version = (values["version_major"], values["version_minor"])
    if version[0] != FORMAT_VERSION[0]:
        raise BitstreamError(f"unsupported bitstream version {version[0]}.{version[1]} "
                             f"(this decoder reads {FORMAT_VERSION[0]}.x)")
    return version, position


def iter_units(data: bytes | memoryview, max_units: int = 1 << 24) -> Iterator[Unit]:
    """Yields the units after checking each one's length and CRC; stops after the END unit."""
    data = memoryview(data)
    _, position = read_file_header(data)
    for index in range(max_units + 1):
        start = position
        reader = Reader(data, position)
        try:
            header = {field.name: reader.element(field) for field in SYNTAX["unit_header"]}
            header_end = reader.position
            payload = reader.take(header["payload_length"], "unit payload")
            (crc,) = struct.unpack("<I", reader.take(4, "unit crc32"))
        except BitstreamError as error:
            raise BitstreamError(f"unit {index}: truncated or malformed ({error})") from None
        expected = zlib.crc32(payload, zlib.crc32(data[start:header_end]))
        if crc != expected:
            raise BitstreamError(f"unit {index}: corrupted (CRC-32 mismatch)")
        try:
            unit_type = UnitType(header["unit_type"])
        except ValueError:
            raise BitstreamError(f"unit {index}: unknown unit type {header['unit_type']}") from None
        position = reader.position
        if unit_type == UnitType.END:
            if position != len(data):
                raise BitstreamError(f"{len(data) - position} unexpected bytes after the end unit")
            return
        yield Unit(unit_type, payload, index, start)
    raise BitstreamError(f"more than {max_units} units")


def read_container(data: bytes | memoryview) -> list[Unit]:
    """All units of a bitstream (see `iter_units`)."""
    return list(iter_units(data))


__all__ = ["Unit", "UnitType", "Writer", "iter_units", "read_container", "read_file_header", "required_version",
           "write_container"]
