"""File-level decoding shared by `nnlc-decode` and `nnlc decompress`: read, decode, write atomically."""

from __future__ import annotations

import os
import sys
import tempfile

import onnx

from nnlc import onnx_io
from nnlc.decoder.decode import decode_bitstream
from nnlc.errors import ModelError

TWO_GIB = 2 * 1024 ** 3


def read_bytes(path: str) -> bytes:
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory")
    with open(path, "rb") as handle:
        return handle.read()


def atomic_write(path: str, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def progress_printer(label: str, quiet: bool = False):
    """A progress callback printing `label i/n name` on one refreshed stderr line."""
    if quiet or not sys.stderr.isatty():
        return None

    def report(done: int, total: int, name: str) -> None:
        end = "\n" if done == total else ""
        print(f"\r{label} {done}/{total} {name[:60]:<60}", end=end, file=sys.stderr, flush=True)

    return report


def decode_file(bitstream_path: str, output_path: str, structure_path: str | None = None,
                quantized: bool = False, quiet: bool = False) -> int:
    """Decodes a .nnlc file to an ONNX file; returns the ONNX file's size in bytes."""
    data = read_bytes(bitstream_path)
    structure = onnx_io.load_model(structure_path) if structure_path else None
    model = decode_bitstream(data, structure, quantized, progress=progress_printer("decoding", quiet))
    serialized = model.SerializeToString() if model.ByteSize() < TWO_GIB else None
    if serialized is None:
        raise ModelError("decoded models over 2 GB need external data, which this decoder does not write yet")
    atomic_write(output_path, serialized)
    return len(serialized)
