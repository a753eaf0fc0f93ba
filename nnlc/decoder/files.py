"""File-level decoding shared by `nnlc-decode` and `nnlc decompress`: read, decode, write atomically.

Every output is written to a hidden temporary file beside it and renamed into place, so a reader (or a
crash) never sees a partial file under the output's name (`atomic_file`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import onnx
from onnx import numpy_helper

from nnlc import onnx_io
from nnlc.decoder.decode import Limits, assemble_model, decode_tensors
from nnlc.decoder.onnx_writer import spliced_pieces, write_pieces
from nnlc.errors import ModelError

TWO_GIB = 2 * 1024 ** 3
EXTERNAL_MIN_BYTES = 1024  # tensors this large go to the external data file (as onnx's default)
EXTERNAL_ALIGNMENT = 64  # byte alignment of each tensor in the external data file


def read_bytes(path: str) -> bytes:
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory")
    with open(path, "rb") as handle:
        return handle.read()


def _sync_directory(directory: str) -> None:
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to someone else
        return True
    return True


def writer_tag(pid: int) -> str:
    """`<pid>.<host>`: who writes a temporary (the host matters on shared file systems)."""
    return f"{pid}.{zlib.crc32(socket.gethostname().encode()):08x}"


def remove_stale_temporaries(path: str) -> None:
    """Removes `.tmp-<pid>.<host>-*-<name>` files beside `path` left by killed writers of this host."""
    directory, name = os.path.split(os.path.abspath(path))
    host = writer_tag(0).split(".")[1]
    with contextlib.suppress(OSError):
        for entry in os.listdir(directory):
            parts = entry.split("-", 3)
            if len(parts) != 4 or parts[0] != ".tmp" or parts[3] != name:
                continue
            pid, _, writer_host = parts[1].partition(".")
            if writer_host == host and pid.isdigit() and int(pid) != os.getpid() and not _process_exists(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(directory, entry))


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[BinaryIO]:
    """Yields a binary stream; when the block succeeds its bytes replace `path` in one rename.

    The bytes go to a hidden `.tmp-<pid>.<host>-<random>-<name>` file beside `path` first, which is synced,
    renamed over `path` (one atomic step) and the directory synced. On an exception the temporary is
    removed; one left by a killed process is removed by the next write to the same path.
    """
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".tmp-{writer_tag(os.getpid())}-",
                                             suffix=f"-{os.path.basename(path)}", dir=directory)
    os.fchmod(descriptor, 0o666 & ~_umask())
    try:
        with os.fdopen(descriptor, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        temporary = None
        _sync_directory(directory)
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically (see `atomic_file`)."""
    with atomic_file(path) as stream:
        stream.write(data)


def _large_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers and Constant-node tensors (subgraphs included) of at least EXTERNAL_MIN_BYTES."""
    for _, graph in onnx_io.iter_graphs(model.graph):
        tensors = list(graph.initializer)
        for node in graph.node:
            tensors += [attribute.t for attribute in node.attribute if attribute.type == onnx.AttributeProto.TENSOR]
        for tensor in tensors:
            if tensor.data_type in (onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
                continue
            if not tensor.HasField("raw_data"):  # e.g. bfloat16 kept in int32_data: move it to raw_data
                if int(np.prod(tensor.dims, dtype=np.int64)) * 2 < EXTERNAL_MIN_BYTES:
                    continue
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name))
            if len(tensor.raw_data) >= EXTERNAL_MIN_BYTES:
                yield tensor


def save_model(model: onnx.ModelProto, path: str, external_data: bool = False,
               threshold: int = TWO_GIB) -> int:
    """Writes `model` to `path` atomically; returns the bytes written (data file included).

    With `external_data`, or when the model is `threshold` bytes or more (protobuf cannot serialise
    2 GiB), tensors of EXTERNAL_MIN_BYTES or more go to `<path>.data` beside it, referenced by a
    relative location as ONNX specifies. `model` is changed in place in that case.
    """
    large = list(_large_tensors(model)) if external_data or model.ByteSize() >= threshold else []
    if not large:
        serialized = model.SerializeToString()
        atomic_write(path, serialized)
        return len(serialized)
    location = os.path.basename(path) + ".data"
    offset = 0
    with atomic_file(os.path.join(os.path.dirname(os.path.abspath(path)), location)) as stream:
        for tensor in large:
            padding = -offset % EXTERNAL_ALIGNMENT
            stream.write(bytes(padding))
            offset += padding
            data = tensor.raw_data
            stream.write(data)
            del tensor.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(len(data)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
            offset += len(data)
    if model.ByteSize() >= TWO_GIB:
        raise ModelError("the model is over 2 GiB even without its tensor data")
    serialized = model.SerializeToString()
    atomic_write(path, serialized)
    return len(serialized) + offset


def progress_printer(label: str, quiet: bool = False):
    """A progress callback printing `label i/n name` on one refreshed stderr line."""
    if quiet or not sys.stderr.isatty():
        return None

    def report(done: int, total: int, name: str) -> None:
        end = "\n" if done == total else ""
        print(f"\r{label} {done}/{total} {name[:60]:<60}", end=end, file=sys.stderr, flush=True)

    return report


def decode_file(bitstream_path: str, output_path: str, structure_path: str | None = None,
                quantized: bool = False, quiet: bool = False, limits: Limits = Limits(),
                external_data: bool = False, external_threshold: int = TWO_GIB) -> int:
    """Decodes a .nnlc file to an ONNX file; returns the bytes written (see `save_model`)."""
    data = read_bytes(bitstream_path)
    structure = onnx_io.load_model(structure_path) if structure_path else None
    model, values, quantized_tensors = decode_tensors(data, structure, quantized, limits,
                                                      progress_printer("decoding", quiet))
    del data
    if not quantized and not external_data:
        written = _save_spliced(model, values, output_path, external_threshold)
        if written is not None:
            return written
    return save_model(assemble_model(model, values, quantized_tensors), output_path, external_data, external_threshold)


def split_for_streaming(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Puts the decoded values that are not main-graph initializers into `model` (subgraph and
    Constant tensors) and returns the others, which `onnx_writer.spliced_pieces` streams."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    streamed = {name: values[name] for name in values if name in initializers}
    assemble_model(model, {name: value for name, value in values.items() if name not in streamed})
    return streamed


def _save_spliced(model: onnx.ModelProto, values: dict[str, np.ndarray], path: str, threshold: int) -> int | None:
    """Writes the model with main-graph initializers streamed from their arrays (`onnx_writer`);
    returns the bytes written, or None when the file would reach `threshold` (`values` then holds
    only the streamed tensors, the others being in `model` already)."""
    streamed = split_for_streaming(model, values)
    values.clear()
    if model.ByteSize() + sum(np.asarray(value).nbytes + 64 for value in streamed.values()) >= threshold:
        values.update(streamed)
        return None
    pieces, length = spliced_pieces(model, streamed)
    with atomic_file(path) as stream:
        write_pieces(stream, pieces)
    return length