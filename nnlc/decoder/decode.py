"""Parsing and decoding of .nnlc units into numpy arrays and an ONNX model (see docs/bitstream.md)."""

from __future__ import annotations

import dataclasses
import lzma
import struct
import zlib
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from nnlc import onnx_io
from nnlc.bitstream.container import UnitType, iter_units
from nnlc.bitstream.syntax import read_exact
from nnlc.coding.symbols import decode_dequantized, decode_symbols
from nnlc.decoder import analytic, dependent, latents
from nnlc.errors import BitstreamError, ModelError
from nnlc.quantization import MAX_QUANTIZED_MAGNITUDE, dequantize

RAW, QUANTIZED, INTEGER, LATENT, GENERATED, GROUPED, DEPENDENT = 0, 1, 2, 3, 4, 5, 6
MODE_NAMES = {RAW: "raw", QUANTIZED: "quantized", INTEGER: "integer", LATENT: "latent", GENERATED: "generated",
              GROUPED: "grouped", DEPENDENT: "dependent"}
FLAG_TOPOLOGY = 1
_NUMPY_TYPES = {**onnx_io.FLOAT_TYPES, **onnx_io.INTEGER_TYPES}
# Errors that malformed content can provoke in parsing libraries; all become BitstreamError.
_DATA_ERRORS = (ValueError, IndexError, KeyError, OverflowError, TypeError, struct.error, lzma.LZMAError,
                zlib.error, DecodeError, RuntimeError, UnicodeDecodeError, FloatingPointError)
XZ_MEMORY_LIMIT = 1 << 28  # liblzma's memory for the topology (the encoder's preset 9 needs 65 MiB)
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data more than this
MAX_DCT_SIZE = 1024  # per spatial axis of a dct latent tensor
DCT_WORK_PER_ELEMENT = 16  # dct: elements x (sum of spatial axes) <= this x Limits.max_tensor_elements


@dataclasses.dataclass(frozen=True)
class Limits:
    """Caps checked before allocating (docs/bitstream.md, "Limits")."""

    max_tensor_elements: int = 1 << 30
    max_total_bytes: int = 1 << 34
    max_topology_bytes: int = 1 << 31
    max_units: int = 1 << 24

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if not isinstance(getattr(self, field.name), int) or getattr(self, field.name) < 1:
                raise ValueError(f"Limits.{field.name} must be a positive integer")


@dataclasses.dataclass
class TensorUnit:
    """A parsed (not yet decoded) tensor unit."""

    graph_path: str
    onnx_name: str
    storage: int
    role: str
    data_type: int
    shape: tuple[int, ...]
    mode: int
    body: memoryview
    unit_bytes: int = 0

    @property
    def name(self) -> str:
        return f"{self.graph_path}/{self.onnx_name}" if self.graph_path else self.onnx_name

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def dtype(self) -> np.dtype:
        name = _NUMPY_TYPES[self.data_type]
        if name == "bfloat16":
            return np.dtype(np.float32)  # decoded as float32, written back as bfloat16
        return np.dtype(name)


def parse_tensor_unit(payload: bytes | memoryview, limits: Limits = Limits()) -> TensorUnit:
    """Parses a tensor unit's fields and checks them against the format and `limits`."""
    fields = read_exact("tensor", payload)
    if fields["storage"] not in onnx_io.STORAGE_KINDS:
        raise BitstreamError(f"tensor {fields['onnx_name']!r}: unknown storage {fields['storage']}")
    if fields["data_type"] not in _NUMPY_TYPES:
        raise BitstreamError(f"tensor {fields['onnx_name']!r}: unsupported data type {fields['data_type']}")
    if fields["mode"] not in MODE_NAMES:
        raise BitstreamError(f"tensor {fields['onnx_name']!r}: unknown mode {fields['mode']}")
    shape = tuple(fields["shape"])
    size = 1
    for dimension in shape:
        size *= dimension
        if size > limits.max_tensor_elements:
            raise BitstreamError(f"tensor {fields['onnx_name']!r}: more than {limits.max_tensor_elements} elements")
    role = onnx_io.ROLES[fields["role"]] if fields["role"] < len(onnx_io.ROLES) else "other"
    return TensorUnit(fields["graph_path"], fields["onnx_name"], fields["storage"], role, fields["data_type"],
                      shape, fields["mode"], fields["body"], len(payload))


def _decode_raw(unit: TensorUnit) -> np.ndarray:
    fields = read_exact("tensor_raw", unit.body)
    dtype = np.dtype(_NUMPY_TYPES[unit.data_type]) if unit.data_type != onnx.TensorProto.BFLOAT16 else None
    if dtype is None:  # bfloat16: stored as float32 bytes
        dtype = np.dtype(np.float32)
    expected = unit.size * dtype.itemsize
    data = bytes(fields["data"])
    if fields["compression"] == 1:
        if expected > DEFLATE_MAX_RATIO * len(data) + 64:
            raise BitstreamError(f"tensor {unit.name!r}: {len(data)} zlib bytes cannot inflate to {expected}")
        decompressor = zlib.decompressobj()
        data = decompressor.decompress(data, expected + 1)
        if not decompressor.eof or decompressor.unconsumed_tail:
            raise BitstreamError(f"tensor {unit.name!r}: raw data does not inflate to {expected} bytes")
    elif fields["compression"] != 0:
        raise BitstreamError(f"tensor {unit.name!r}: unknown compression {fields['compression']}")
    if len(data) != expected:
        raise BitstreamError(f"tensor {unit.name!r}: raw data holds {len(data)} bytes, expected {expected}")
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(unit.shape)


def decode_tensor(unit: TensorUnit, want_symbols: bool = False,
                  limits: Limits = Limits()) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """(values, integer symbols or None, step or None) of a parsed tensor unit.

    Symbols of quantized tensors are returned only with `want_symbols` (the fast path skips them).
    """
    if unit.mode == RAW:
        return _decode_raw(unit), None, None
    if unit.mode == LATENT:
        return _decode_latent(unit, limits)
    if unit.mode == GENERATED:
        return _decode_generated(unit), None, None
    if unit.mode == GROUPED:
        return _decode_grouped(unit)
    if unit.mode == DEPENDENT:
        return _decode_dependent(unit)
    structure = "tensor_quantized" if unit.mode == QUANTIZED else "tensor_integer"
    fields = read_exact(structure, unit.body)
    if unit.mode == INTEGER:
        symbols = decode_symbols(fields["symbols"], unit.size).reshape(unit.shape)
        info = np.iinfo(unit.dtype) if unit.dtype.kind in "iu" else None
        if info is None or symbols.size and (symbols.min() < info.min or symbols.max() > info.max):
            raise BitstreamError(f"tensor {unit.name!r}: integer values outside {unit.dtype}")
        return symbols.astype(unit.dtype), symbols, None
    step = _checked_step(unit, fields["step"])
    symbols = None
    with np.errstate(over="raise", invalid="raise"):  # finite q * step overflowing float32: malformed
        if want_symbols:
            symbols = decode_symbols(fields["symbols"], unit.size).reshape(unit.shape)
            _check_quantized(unit, symbols)
            values = dequantize(symbols, step)
        else:
            values = decode_dequantized(fields["symbols"], unit.size, step, MAX_QUANTIZED_MAGNITUDE).reshape(unit.shape)
    return _to_dtype(values, unit), symbols, float(step)


def _checked_step(unit: TensorUnit, value: float) -> np.float32:
    """A tensor's float32 step, refused unless finite and positive."""
    step = np.float32(value)
    if not np.isfinite(step) or step <= 0:
        raise BitstreamError(f"tensor {unit.name!r}: invalid step {step}")
    return step


def _check_quantized(unit: TensorUnit, integers: np.ndarray) -> None:
    """Quantized integers beyond 2**23 (float32(q) would not be exact) make the tensor malformed."""
    if integers.size and np.max(np.abs(integers)) > MAX_QUANTIZED_MAGNITUDE:
        raise BitstreamError(f"tensor {unit.name!r}: quantized value beyond 2**23")


def _to_dtype(values: np.ndarray, unit: TensorUnit) -> np.ndarray:
    """float32 weights in the tensor's float type (IEEE rounding; beyond float16's range gives inf)."""
    if unit.dtype == np.float32:
        return values
    with np.errstate(over="ignore"):
        return values.astype(unit.dtype)


def _check_dct_size(unit: TensorUnit, limits: Limits) -> None:
    spatial = unit.shape[2:]
    if any(size > MAX_DCT_SIZE for size in spatial):
        raise BitstreamError(f"tensor {unit.name!r}: dct kernel {spatial} exceeds {MAX_DCT_SIZE} per axis")
    if unit.size * sum(spatial) > DCT_WORK_PER_ELEMENT * limits.max_tensor_elements:
        raise BitstreamError(f"tensor {unit.name!r}: dct of {unit.size} elements over {spatial} exceeds the work limit")


def _decode_latent(unit: TensorUnit, limits: Limits) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Learned-mode tensor: integer latents through the documented float32 decoder."""
    fields = read_exact("tensor_latent", unit.body)
    kind = fields["decoder"]
    if kind not in latents.KIND_NAMES:
        raise BitstreamError(f"tensor {unit.name!r}: unknown latent decoder {kind}")
    count = latents.step_count(kind, unit.shape)
    if kind == latents.DCT:
        _check_dct_size(unit, limits)
    if len(fields["steps"]) != 4 * count:
        raise BitstreamError(f"tensor {unit.name!r}: {len(fields['steps'])} bytes of steps, expected {4 * count}")
    steps = np.frombuffer(bytes(fields["steps"]), dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(steps)) or np.any(steps <= 0):
        raise BitstreamError(f"tensor {unit.name!r}: invalid steps")
    symbols = decode_symbols(fields["symbols"], unit.size).reshape(unit.shape)
    if symbols.size and np.max(np.abs(symbols)) > MAX_QUANTIZED_MAGNITUDE:
        raise BitstreamError(f"tensor {unit.name!r}: latent beyond 2**23")
    with np.errstate(over="raise", invalid="raise"):
        values = latents.decode_latents(kind, symbols, steps)
    return _to_dtype(values, unit), symbols, steps


def _decode_generated(unit: TensorUnit) -> np.ndarray:
    """Mode 4: the generator's float32 tensor plus the residual in ordered float32 bits (exact)."""
    fields = read_exact("tensor_generated", unit.body)
    if unit.data_type != onnx.TensorProto.FLOAT:
        raise BitstreamError(f"tensor {unit.name!r}: generated tensors are float32, not data type {unit.data_type}")
    generated = analytic.generate(fields["generator"], fields["parameters"], fields["scale"], unit.shape)
    if generated.size != unit.size:  # the generator's own shape checks make this unreachable
        raise BitstreamError(f"tensor {unit.name!r}: generated {generated.size} elements, expected {unit.size}")
    residual = decode_symbols(fields["residual"], unit.size)
    if residual.size and np.max(np.abs(residual)) >= 1 << 32:
        raise BitstreamError(f"tensor {unit.name!r}: residual beyond 2**32 float32 steps")
    keys = analytic.ordered_from_float32(generated).ravel() + residual
    return analytic.float32_from_ordered(keys).reshape(unit.shape)


def _decode_dependent(unit: TensorUnit) -> tuple[np.ndarray, np.ndarray, float]:
    """Mode 6: integers, then the state machine along each row (`nnlc.decoder.dependent`)."""
    fields = read_exact("tensor_dependent", unit.body)
    step = _checked_step(unit, fields["step"])
    transposed, row_length = fields["transposed"], fields["row_length"]
    if transposed not in (0, 1) or (transposed and len(unit.shape) != 2):
        raise BitstreamError(f"tensor {unit.name!r}: transposed={transposed} for shape {unit.shape}")
    if row_length < 1 or unit.size % row_length or (transposed and row_length != unit.shape[0]):
        raise BitstreamError(f"tensor {unit.name!r}: row length {row_length} does not fit shape {unit.shape}")
    symbols = decode_symbols(fields["symbols"], unit.size).reshape(unit.shape)
    _check_quantized(unit, symbols)
    with np.errstate(over="raise", invalid="raise"):  # finite level * step overflowing float32: malformed
        values = dependent.reconstruct(symbols, step, row_length, bool(transposed))
    return _to_dtype(values, unit), symbols, float(step)


def _decode_grouped(unit: TensorUnit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mode 5: rows along axis 0 in groups, each with its own float32 step and coding table.

    Returns (values, integers, the step of every row)."""
    fields = read_exact("tensor_grouped", unit.body)
    if unit.dtype.kind != "f":
        raise BitstreamError(f"tensor {unit.name!r}: grouped tensors are floating point, not data type {unit.data_type}")
    if not unit.shape:
        raise BitstreamError(f"tensor {unit.name!r}: a grouped tensor needs at least one axis")
    raw_steps = bytes(fields["steps"])
    if not raw_steps or len(raw_steps) % 4:
        raise BitstreamError(f"tensor {unit.name!r}: {len(raw_steps)} bytes of group steps")
    steps = np.frombuffer(raw_steps, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(steps)) or np.any(steps <= 0):
        raise BitstreamError(f"tensor {unit.name!r}: invalid group steps")
    if len(fields["groups"]) != len(steps):
        raise BitstreamError(f"tensor {unit.name!r}: {len(fields['groups'])} groups coded, {len(steps)} steps")
    rows = unit.shape[0]
    row_size = unit.size // rows if rows else 0
    row_groups = decode_symbols(fields["row_groups"], rows)
    if row_groups.size and (row_groups.min() < 0 or row_groups.max() >= len(steps)):
        raise BitstreamError(f"tensor {unit.name!r}: a row group outside 0..{len(steps) - 1}")
    symbols = np.zeros((rows, row_size), np.int64)
    values = np.zeros((rows, row_size), np.float32)
    with np.errstate(over="raise", invalid="raise"):
        for group, (step, coded) in enumerate(zip(steps, fields["groups"], strict=True)):
            members = np.flatnonzero(row_groups == group)
            integers = decode_symbols(coded, members.size * row_size)
            _check_quantized(unit, integers)
            symbols[members] = integers.reshape(members.size, row_size)
            values[members] = dequantize(integers, step).reshape(members.size, row_size)
    return _to_dtype(values.reshape(unit.shape), unit), symbols.reshape(unit.shape), steps[row_groups]


def _wrap(index: int, what: str, function, *args):
    try:
        return function(*args)
    except BitstreamError as error:
        raise BitstreamError(f"unit {index}: {error}") from None
    except _DATA_ERRORS as error:
        raise BitstreamError(f"unit {index}: malformed {what} ({type(error).__name__}: {error})") from None


def _read_header(units: list) -> tuple[dict[str, Any], int]:
    if not units or units[0].type != UnitType.MODEL_HEADER:
        raise BitstreamError("unit 0: expected the model header unit")
    return _wrap(0, "model header", read_exact, "model_header", units[0].payload), 1


def _decompress_topology(payload: memoryview, limits: Limits) -> onnx.ModelProto:
    fields = read_exact("topology", payload)
    if fields["codec"] != 1:
        raise BitstreamError(f"unknown topology codec {fields['codec']}")
    if fields["raw_length"] > limits.max_topology_bytes:
        raise BitstreamError(f"topology of {fields['raw_length']} bytes exceeds the limit {limits.max_topology_bytes}")
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT)
    raw = decompressor.decompress(bytes(fields["data"]), max_length=fields["raw_length"] + 1)
    if len(raw) != fields["raw_length"] or not decompressor.eof or decompressor.unused_data:
        raise BitstreamError("topology does not decompress to its declared length")
    model = onnx.ModelProto()
    model.ParseFromString(raw)
    _check_no_external_data(model)
    return model


def _check_no_external_data(model: onnx.ModelProto) -> None:
    """The topology must be self-contained: a reference to a file would make the output read it."""
    names = onnx_io.external_data_tensors(model)
    if names:
        raise BitstreamError(f"topology: tensor {names[0]!r} refers to an external data file")


def _check_slot(unit: TensorUnit, slots: dict) -> None:
    """The unit fits its slot: same storage, shape and data type (a stripped value_floats has length 0)."""
    found = slots.get(unit.name)
    if found is None:
        raise BitstreamError(f"tensor {unit.name!r} has no place in the model structure")
    shape, data_type, storage = found
    if storage == onnx_io.CONSTANT_FLOATS:
        fits = len(unit.shape) == 1 and shape in ((0,), unit.shape)
    else:
        fits = shape == unit.shape
    if storage != unit.storage or not fits or data_type != unit.data_type:
        raise BitstreamError(f"tensor {unit.name!r}: {unit.shape} {unit.data_type} does not match the "
                             f"model structure's {shape} {data_type}")


def _slot_shapes(model: onnx.ModelProto) -> dict:
    return onnx_io.slot_shapes(model)


def decode_bitstream(data: bytes, structure: onnx.ModelProto | None = None, quantized: bool = False,
                     limits: Limits = Limits(), progress=None) -> onnx.ModelProto:
    """Decodes a bitstream to an ONNX model.

    The topology comes from the bitstream, or from `structure` (the original model, or any model with
    the same graph) when the bitstream carries none. With `quantized`, quantized tensors become
    integer tensors + DequantizeLinear (inference without full reconstruction).
    """
    model, values, quantized_tensors = decode_tensors(data, structure, quantized, limits, progress)
    return assemble_model(model, values, quantized_tensors)


def assemble_model(model: onnx.ModelProto, values: dict[str, np.ndarray],
                   quantized_tensors: dict[str, tuple[np.ndarray, float]] | None = None) -> onnx.ModelProto:
    """Puts decoded `values` (and, for `--quantized`, integer tensors + DequantizeLinear) into `model`."""
    try:
        onnx_io.replace_tensors(model, values, in_place=True)
        if quantized_tensors:
            from nnlc.decoder.quantized_graph import insert_dequantize_nodes

            insert_dequantize_nodes(model, quantized_tensors)
    except (ModelError, *_DATA_ERRORS) as error:  # decode_tensors' checks should make this unreachable
        raise BitstreamError(f"tensors do not fit the model structure ({error})") from None
    return model


def decode_tensors(data: bytes, structure: onnx.ModelProto | None = None, quantized: bool = False,
                   limits: Limits = Limits(), progress=None) -> tuple[onnx.ModelProto, dict, dict]:
    """(model structure, decoded arrays by tensor name, quantized tensors) of a bitstream; every unit
    is checked against the structure. `assemble_model` puts them together (see `decode_bitstream`)."""
    units = list(iter_units(data, limits.max_units))
    header, position = _read_header(units)
    if header["flags"] & ~FLAG_TOPOLOGY:
        raise BitstreamError(f"unit 0: unknown flags {header['flags']:#x}")
    if header["flags"] & FLAG_TOPOLOGY:
        if position >= len(units) or units[position].type != UnitType.TOPOLOGY:
            raise BitstreamError(f"unit {position}: expected the topology unit")
        model = _wrap(position, "topology", _decompress_topology, units[position].payload, limits)
        position += 1
    elif structure is None:
        raise BitstreamError("the bitstream carries no topology: give the original model as structure (--structure)")
    else:
        import copy

        model = copy.deepcopy(structure)
    tensor_units = units[position:]
    if len(tensor_units) != header["tensor_count"] or any(u.type != UnitType.TENSOR for u in tensor_units):
        raise BitstreamError(f"expected {header['tensor_count']} tensor units after the header, found "
                             f"{sum(u.type == UnitType.TENSOR for u in tensor_units)} among {len(tensor_units)} units")
    slots = _slot_shapes(model)
    parsed: dict[str, tuple[int, TensorUnit]] = {}
    total_bytes = 0
    for unit_frame in tensor_units:  # every unit is checked before any tensor is decoded
        unit = _wrap(unit_frame.index, "tensor unit", parse_tensor_unit, unit_frame.payload, limits)
        if unit.name in parsed:
            raise BitstreamError(f"unit {unit_frame.index}: tensor {unit.name!r} appears twice")
        _wrap(unit_frame.index, "tensor unit", _check_slot, unit, slots)
        total_bytes += unit.size * 8
        if total_bytes > limits.max_total_bytes:
            raise BitstreamError(f"decoded tensors exceed {limits.max_total_bytes} bytes (unit {unit_frame.index})")
        parsed[unit.name] = (unit_frame.index, unit)
    values: dict[str, np.ndarray] = {}
    quantized_tensors: dict[str, tuple[np.ndarray, float]] = {}
    for count, (index, unit) in enumerate(parsed.values()):
        array, symbols, step = _wrap(index, "tensor data", decode_tensor, unit, quantized, limits)
        values[unit.name] = array
        if quantized and (unit.mode == QUANTIZED or (unit.mode == LATENT and _is_linear_latent(unit))):
            quantized_tensors[unit.name] = (symbols, step)
        if progress is not None:
            progress(count + 1, len(parsed), unit.name)
    return model, values, quantized_tensors


def _is_linear_latent(unit: TensorUnit) -> bool:
    """Scalar and per-channel latent decoders are uniform quantizers (DequantizeLinear can run them)."""
    return read_exact("tensor_latent", unit.body)["decoder"] in (latents.SCALAR, latents.CHANNEL)


def inspect_bitstream(data: bytes, limits: Limits = Limits()) -> dict:
    """Header facts and one row per tensor (name, shape, role, mode, bytes, bits/param, step), no decoding."""
    units = list(iter_units(data, limits.max_units))
    header, _ = _read_header(units)
    rows = []
    topology_bytes = 0
    for unit_frame in units[1:]:
        if unit_frame.type == UnitType.TOPOLOGY:
            topology_bytes = len(unit_frame.payload)
            continue
        unit = _wrap(unit_frame.index, "tensor unit", parse_tensor_unit, unit_frame.payload, limits)
        step = None
        if unit.mode in (QUANTIZED, DEPENDENT):
            structure = "tensor_quantized" if unit.mode == QUANTIZED else "tensor_dependent"
            step = _wrap(unit_frame.index, "tensor unit", read_exact, structure, unit.body)["step"]
        elif unit.mode in (LATENT, GROUPED):  # the geometric mean of the tensor's steps
            structure = "tensor_latent" if unit.mode == LATENT else "tensor_grouped"
            fields = _wrap(unit_frame.index, "tensor unit", read_exact, structure, unit.body)
            steps = np.frombuffer(bytes(fields["steps"])[: len(fields["steps"]) // 4 * 4], dtype="<f4")
            step = float(np.exp(np.mean(np.log(steps)))) if steps.size and np.all(steps > 0) else None
        rows.append({"name": unit.name, "shape": list(unit.shape), "role": unit.role, "mode": MODE_NAMES[unit.mode],
                     "bytes": unit.unit_bytes, "params": unit.size,
                     "bits_per_param": 8 * unit.unit_bytes / max(1, unit.size), "step": step})
    return {"producer": header["producer"], "bytes": len(data), "topology_bytes": topology_bytes,
            "tensor_count": header["tensor_count"], "tensors": rows}
