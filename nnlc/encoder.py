"""Post-training (data-free) compression: ONNX model -> .nnlc bitstream.

Every float tensor is quantized uniformly with a step derived from one global quality parameter
(`quantization.py`) and entropy coded with a table fitted to its values (`coding/symbols.py`).
Tensors that are not weights (0-d or tiny constants used as exponents, epsilons, clip bounds, shape
arithmetic, anything holding inf/nan) and tensors the user marks lossless are stored exactly; integer
initializers are coded losslessly. Float tensors that are already quantized (their values lie exactly
on a uniform grid, per tensor or per output channel: `grids.py`) are coded exactly as their grid
indices, whatever the qp. Analytic constants the decoder can compute (windowed DFT bases of STFT
front ends: `analytic.py`) are coded as generator parameters plus an exact residual (mode 4), also
whatever the qp. Learned mode reuses `write_bitstream` with its own symbols.
"""

from __future__ import annotations

import dataclasses
import lzma
import re
import zlib
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import onnx

from nnlc import analytic, grids, onnx_io, quantization
from nnlc.bitstream import UnitType, write_container, write_fields
from nnlc.coding import symbols as symbol_coding
from nnlc.decoder import dependent, latents
from nnlc.decoder.decode import (  # noqa: F401 (re-exported: the format's constants, defined once)
    DEPENDENT, FLAG_TOPOLOGY, GENERATED, GROUPED, INTEGER, LATENT, MODE_NAMES, QUANTIZED, RAW)

TINY_TENSOR_ELEMENTS = 16  # float tensors this small are stored exactly
MIN_GENERATED_ELEMENTS = 256  # float tensors this large (ndim >= 2) are checked for analytic constants
MIN_INTEGER_ELEMENTS = 64
RAW_IF_SMALLER_ELEMENTS = 1 << 14  # up to this size, store exactly when that is no bigger than quantized  # integer initializers this large are entropy coded (smaller stay in topology)
PRODUCER = "nnlc 0.1 post-training"


@dataclasses.dataclass
class CodedTensor:
    """What the encoder decided for one tensor, and the integers it will code."""

    record: onnx_io.TensorRecord
    mode: int
    step: np.float32 | None = None
    symbols: np.ndarray | None = None  # int64, same number of elements as the tensor
    lossless_reason: str = ""
    latent_decoder: int = 0  # LATENT mode: nnlc.decoder.latents.SCALAR, CHANNEL or DCT
    steps: np.ndarray | None = None  # LATENT mode: float32 steps; GROUPED mode: the float32 step of each group
    row_groups: np.ndarray | None = None  # GROUPED mode: the group (index into `steps`) of each row along axis 0
    coding_plan: symbol_coding.CodingPlan | None = None  # a given table (else fitted to the symbols)
    exact: bool = False  # already-quantized tensor coded as its exact grid (decodes bit for bit)
    generated: analytic.Generated | None = None  # GENERATED mode (symbols: its residual; decodes bit for bit)
    row_length: int = 0  # DEPENDENT mode: elements per row of the state machine (nnlc.decoder.dependent)
    transposed: bool = False  # DEPENDENT mode: rows are the columns of the stored 2-D matrix


@dataclasses.dataclass
class EncodeResult:
    bitstream: bytes
    rows: list[dict]  # one per tensor: see `_report_row`
    topology_bytes: int
    header_bytes: int

    @property
    def total_bytes(self) -> int:
        return len(self.bitstream)


def lossless_reason(record: onnx_io.TensorRecord, lossless_names: Iterable[str] = ()) -> str:
    """Why a float tensor must be stored exactly ('' when it may be quantized)."""
    array = record.array
    for pattern in lossless_names:
        if record.name == pattern or re.fullmatch(pattern, record.name):
            return "marked lossless"
    if record.role == "quantization":
        return "quantization parameter"
    if array.ndim == 0:
        return "0-d constant"
    if array.size <= TINY_TENSOR_ELEMENTS:
        return "tiny tensor"
    if not np.all(np.isfinite(array.astype(np.float64))):
        return "holds inf or nan"
    return ""


def grid_tensor(record: onnx_io.TensorRecord) -> CodedTensor | None:
    """The tensor coded exactly as its grid indices (`grids.detect_grid`), when it lies on a grid and
    that is smaller than storing it raw; None otherwise. Per tensor: mode QUANTIZED with the grid step;
    per output channel: mode LATENT with the CHANNEL decoder and one step per channel."""
    grid = grids.detect_grid(record.array)
    if grid is None:
        return None
    symbols = grid.indices.ravel()
    plan = symbol_coding.plan_coding(symbols)
    if grid.kind == grids.PER_TENSOR:
        item = CodedTensor(record, QUANTIZED, np.float32(grid.step), symbols, coding_plan=plan, exact=True)
        side_bits = 32
    else:
        item = CodedTensor(record, LATENT, symbols=symbols, latent_decoder=latents.CHANNEL,
                           steps=np.asarray(grid.steps, dtype=np.float32), coding_plan=plan, exact=True)
        side_bits = 32 * grid.steps.size
    return item if plan.estimated_bits + side_bits < 8 * record.array.nbytes else None


def generated_tensor(record: onnx_io.TensorRecord) -> CodedTensor | None:
    """The tensor as an analytic constant plus exact residual (`analytic.detect_generated`), when it
    is one (float32, ndim >= 2, >= MIN_GENERATED_ELEMENTS) and that is smaller than raw; else None."""
    array = record.array
    if array.dtype != np.float32 or array.ndim < 2 or array.size < MIN_GENERATED_ELEMENTS:
        return None
    generated = analytic.detect_generated(array)
    if generated is None or generated.estimated_bits >= 8 * array.nbytes:
        return None
    return CodedTensor(record, GENERATED, symbols=generated.residual, coding_plan=generated.coding_plan,
                       lossless_reason=f"generated {generated.name}", generated=generated)


def _cached(cache: dict[str, CodedTensor | None] | None, record: onnx_io.TensorRecord,
            detect: Callable[[onnx_io.TensorRecord], CodedTensor | None]) -> CodedTensor | None:
    if cache is None:
        return detect(record)
    if record.name not in cache:
        cache[record.name] = detect(record)
    return cache[record.name]


def plan_tensors(model: onnx.ModelProto, qp: int | None = None, nonweight_qp: int = -75,
                 steps: Mapping[str, float] | None = None, lossless_names: Iterable[str] = (),
                 detect_grids: bool = True,
                 grid_cache: dict[str, CodedTensor | None] | None = None,
                 detect_generated: bool = True,
                 generated_cache: dict[str, CodedTensor | None] | None = None) -> list[CodedTensor]:
    """Chooses a mode and step for every tensor: `steps` (by name) overrides the qp-derived step.

    With `detect_generated`, analytic constants (`generated_tensor`: windowed DFT bases) are coded
    exactly in mode GENERATED whatever the qp, `steps` or lossless marks. With `detect_grids`, float
    tensors already on an exact uniform grid are coded exactly (`grid_tensor`, `exact=True`)
    whatever the qp or `steps`. `generated_cache` and `grid_cache` (by tensor name) keep the
    detections between calls on the same model.
    """
    lossless_names = list(lossless_names)
    steps = dict(steps or {})
    weight_step = quantization.step_from_qp(qp) if qp is not None else None
    bias_step = quantization.step_from_qp(nonweight_qp)
    planned = []
    for record in onnx_io.find_tensors(model, include_integer=True).values():
        if not record.is_float:
            if record.array.dtype != np.bool_ and record.array.size >= MIN_INTEGER_ELEMENTS and \
                    record.array.dtype != np.uint64 and np.all(np.abs(record.array.astype(np.int64)) < 1 << 62):
                planned.append(CodedTensor(record, INTEGER, symbols=record.array.astype(np.int64).ravel()))
            continue
        generated = _cached(generated_cache, record, generated_tensor) if detect_generated else None
        if generated is not None:
            planned.append(generated)
            continue
        reason = lossless_reason(record, lossless_names)
        if reason:
            planned.append(CodedTensor(record, RAW, lossless_reason=reason))
            continue
        exact = _cached(grid_cache, record, grid_tensor) if detect_grids else None
        if exact is not None:
            planned.append(exact)
            continue
        step = steps.get(record.name, weight_step if record.array.ndim >= 2 else bias_step)
        if step is None:
            raise ValueError("give qp or a step for every tensor")
        values = record.array.astype(np.float32)
        step32 = quantization.usable_step(values, step)
        symbols = quantization.quantize(values, step32)
        plan = symbol_coding.plan_coding(symbols) if record.array.size <= RAW_IF_SMALLER_ELEMENTS else None
        if plan is not None and plan.estimated_bits >= 8 * record.array.nbytes:
            planned.append(CodedTensor(record, RAW, lossless_reason="raw is smaller than quantized"))
            continue
        planned.append(CodedTensor(record, QUANTIZED, step32, symbols, coding_plan=plan))
    return planned


def _raw_body(array: np.ndarray) -> bytes:
    if array.dtype.name == "bfloat16":  # the format stores bfloat16 as float32 (exact)
        array = array.astype(np.float32)
    data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    packed = zlib.compress(data, 9)
    if len(packed) < len(data):
        return write_fields("tensor_raw", {"compression": 1, "data": packed})
    return write_fields("tensor_raw", {"compression": 0, "data": data})


def _data_type(record: onnx_io.TensorRecord, model_types: Mapping[str, int]) -> int:
    return model_types[record.name]


def grouped_parts(item: CodedTensor) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(steps of the groups some row uses, each row's group among them, the integers of each group's
    rows in row order) of a GROUPED tensor: groups without rows are dropped."""
    rows = item.record.array.shape[0]
    integers = np.asarray(item.symbols, np.int64).reshape(rows, -1)
    row_groups = np.asarray(item.row_groups, np.int64).ravel()
    steps = np.asarray(item.steps, np.float32).ravel()
    if row_groups.shape != (rows,) or (rows and (row_groups.min() < 0 or row_groups.max() >= len(steps))):
        raise ValueError(f"{item.record.name}: row groups must give each of the {rows} rows a group of the steps")
    used, row_groups = np.unique(row_groups, return_inverse=True)
    return steps[used], row_groups.astype(np.int64), [integers[row_groups == g].ravel() for g in range(len(used))]


def grouped_estimated_bits(item: CodedTensor) -> float:
    """Estimated coded bits of a GROUPED tensor: its groups' integers, the row map and the steps."""
    steps, row_groups, parts = grouped_parts(item)
    return (32.0 * len(steps) + symbol_coding.plan_coding(row_groups).estimated_bits
            + sum(symbol_coding.plan_coding(part).estimated_bits for part in parts))


def _grouped_body(item: CodedTensor) -> tuple[bytes, dict]:
    """The `tensor_grouped` body and, for the report, the coded parts' sizes summed."""
    steps, row_groups, parts = grouped_parts(item)
    map_fields = symbol_coding.encode_symbols(row_groups)
    group_fields = [symbol_coding.encode_symbols(part) for part in parts]
    body = write_fields("tensor_grouped", {"steps": steps.astype("<f4").tobytes(),
                                           "row_groups": map_fields, "groups": group_fields})
    coded = sum(len(f["ans_words"]) + len(f["escapes"]) + len(f["raw_bits"]) for f in group_fields)
    ideal = sum(symbol_coding.ideal_code_bits(f, part) for f, part in zip(group_fields, parts, strict=True))
    return body, {"coded_bytes": coded, "ideal_bits": ideal}


def _tensor_payload(item: CodedTensor, data_type: int) -> tuple[bytes, dict]:
    record = item.record
    if item.mode == RAW:
        body = _raw_body(record.array)
        fields = None
    elif item.mode == GROUPED:
        body, fields = _grouped_body(item)
    else:
        fields = symbol_coding.encode_symbols(item.symbols, item.coding_plan)
        structure = {QUANTIZED: "tensor_quantized", INTEGER: "tensor_integer", LATENT: "tensor_latent",
                     GENERATED: "tensor_generated", DEPENDENT: "tensor_dependent"}[item.mode]
        if item.mode == GENERATED:
            values = {**item.generated.side_fields(), "residual": fields}
        else:
            values = {"symbols": fields}
        if item.mode in (QUANTIZED, DEPENDENT):
            values["step"] = float(item.step)
        if item.mode == DEPENDENT:
            values["transposed"] = int(item.transposed)
            values["row_length"] = int(item.row_length)
        if item.mode == LATENT:
            values["decoder"] = item.latent_decoder
            values["steps"] = np.asarray(item.steps, dtype="<f4").tobytes()
        body = write_fields(structure, values)
    payload = write_fields("tensor", {
        "graph_path": record.graph_path, "onnx_name": record.onnx_name, "storage": record.storage,
        "role": onnx_io.ROLES.index(record.role if record.role in onnx_io.ROLES else "other"),
        "data_type": data_type, "shape": list(record.array.shape), "mode": item.mode, "body": body})
    return payload, fields


def _report_row(item: CodedTensor, payload: bytes, fields: dict | None) -> dict:
    record = item.record
    size = max(1, record.array.size)
    row = {"name": record.name, "shape": list(record.array.shape), "role": record.role,
           "mode": MODE_NAMES[item.mode], "bytes": len(payload), "bits_per_param": 8 * len(payload) / size,
           "params": int(record.array.size), "step": float(item.step) if item.step is not None else None}
    if fields is not None and item.mode == GROUPED:
        row["payload_bytes"] = fields["coded_bytes"]
        row["ideal_payload_bits"] = fields["ideal_bits"]
        row["side_bytes"] = len(payload) - fields["coded_bytes"]
    elif fields is not None:
        coded = len(fields["ans_words"]) + len(fields["escapes"]) + len(fields["raw_bits"])
        row["payload_bytes"] = coded
        row["ideal_payload_bits"] = symbol_coding.ideal_code_bits(fields, item.symbols)
        row["side_bytes"] = len(payload) - coded
    if item.mode in (QUANTIZED, LATENT, GROUPED, DEPENDENT):
        if item.mode == DEPENDENT:
            decoded = dependent.reconstruct(np.asarray(item.symbols, np.int64).reshape(record.array.shape),
                                            item.step, item.row_length, item.transposed)
        elif item.mode == GROUPED:
            steps = quantization.group_row_steps(item.steps, item.row_groups)
            decoded = quantization.dequantize_rows(np.asarray(item.symbols, np.int64).reshape(record.array.shape),
                                                   item.steps, item.row_groups)
            row["groups"] = int(len(item.steps))
            row["step"] = float(np.exp(np.mean(np.log(steps)))) if steps.size else None
        elif item.mode == QUANTIZED:
            decoded = quantization.dequantize(item.symbols, item.step).reshape(record.array.shape)
        else:
            decoded = latents.decode_latents(item.latent_decoder, item.symbols.reshape(record.array.shape), item.steps)
            row["latent_decoder"] = latents.KIND_NAMES[item.latent_decoder]
        error = decoded - record.array.astype(np.float32)
        row["mse"] = float(np.mean(error.astype(np.float64) ** 2))
        row["max_abs_error"] = float(np.max(np.abs(error))) if error.size else 0.0
        if item.exact:
            row["grid"] = grids.PER_TENSOR if item.mode == QUANTIZED else grids.PER_CHANNEL
    elif item.mode == GENERATED:
        row.update(generator=item.generated.name, generated=item.generated.describe(), mse=0.0, max_abs_error=0.0,
                   lossless_reason=item.lossless_reason)
    elif item.lossless_reason:
        row["lossless_reason"] = item.lossless_reason
    return row


def _model_data_types(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, int]:
    shapes = onnx_io.slot_shapes(model)
    return {name: shapes[name][1] for name in names}


def compress_topology(serialized: bytes) -> bytes:
    """xz (LZMA2 preset 9) with a dictionary no larger than the data needs, so decoders allocate little."""
    dictionary = min(1 << 26, max(1 << 16, 1 << (len(serialized) - 1).bit_length()))
    return lzma.compress(serialized, format=lzma.FORMAT_XZ,
                         filters=[{"id": lzma.FILTER_LZMA2, "preset": 9, "dict_size": dictionary}])


def write_bitstream(model: onnx.ModelProto, planned: list[CodedTensor], carry_topology: bool = True,
                    producer: str = PRODUCER, progress: Callable[[int, int, str], None] | None = None) -> EncodeResult:
    """Codes the planned tensors (and optionally the stripped topology) into a bitstream."""
    names = [item.record.name for item in planned]
    data_types = _model_data_types(model, names)
    header = write_fields("model_header", {"flags": FLAG_TOPOLOGY if carry_topology else 0,
                                           "tensor_count": len(planned), "producer": producer})
    units: list[tuple[int, bytes]] = [(UnitType.MODEL_HEADER, header)]
    topology_bytes = 0
    if carry_topology:
        stripped = onnx_io.strip_tensors(model, set(names)).SerializeToString()
        compressed = compress_topology(stripped)
        topology = write_fields("topology", {"codec": 1, "raw_length": len(stripped), "data": compressed})
        units.append((UnitType.TOPOLOGY, topology))
        topology_bytes = len(topology)
    rows = []
    for index, item in enumerate(planned):
        payload, fields = _tensor_payload(item, data_types[item.record.name])
        units.append((UnitType.TENSOR, payload))
        rows.append(_report_row(item, payload, fields))
        if progress is not None:
            progress(index + 1, len(planned), item.record.name)
    bitstream = write_container(units)
    header_bytes = len(bitstream) - sum(len(p) for _, p in units) + len(header)
    return EncodeResult(bitstream, rows, topology_bytes, header_bytes)


def compress_model(model: onnx.ModelProto, qp: int | None = -38, bits_per_param: float | None = None,
                   nonweight_qp: int = -75, lossless_names: Iterable[str] = (), carry_topology: bool = True,
                   progress: Callable[[int, int, str], None] | None = None,
                   detect_grids: bool = True, detect_generated: bool = True) -> EncodeResult:
    """Post-training compression at a qp, or at the finest qp whose size meets `bits_per_param`.

    With `detect_grids`, already-quantized tensors are coded exactly; with `detect_generated`,
    analytic constants (windowed DFT bases) are generated exactly (see `plan_tensors`)."""
    grid_cache: dict[str, CodedTensor | None] = {}
    generated_cache: dict[str, CodedTensor | None] = {}
    if bits_per_param is not None:
        qp = qp_for_bits_per_param(model, bits_per_param, nonweight_qp, lossless_names, detect_grids, grid_cache,
                                   detect_generated, generated_cache)
    planned = plan_tensors(model, qp, nonweight_qp, lossless_names=lossless_names, detect_grids=detect_grids,
                           grid_cache=grid_cache, detect_generated=detect_generated, generated_cache=generated_cache)
    producer = f"{PRODUCER} qp={qp} nonweight_qp={nonweight_qp}"
    return write_bitstream(model, planned, carry_topology, producer, progress)


def estimated_bits(planned: list[CodedTensor]) -> float:
    """Estimated coded size (bits) of the planned tensors, from the coding plans' ideal lengths."""
    total = 0.0
    for item in planned:
        if item.mode == RAW:
            total += 8 * item.record.array.nbytes
        elif item.mode == GENERATED:
            total += 8 * item.generated.side_bytes + (item.coding_plan or item.generated.coding_plan).estimated_bits
        elif item.mode == GROUPED:
            total += grouped_estimated_bits(item)
        else:
            item.coding_plan = item.coding_plan or symbol_coding.plan_coding(item.symbols)
            total += item.coding_plan.estimated_bits
    return total


def qp_for_bits_per_param(model: onnx.ModelProto, bits_per_param: float, nonweight_qp: int = -75,
                          lossless_names: Iterable[str] = (), detect_grids: bool = True,
                          grid_cache: dict[str, CodedTensor | None] | None = None,
                          detect_generated: bool = True,
                          generated_cache: dict[str, CodedTensor | None] | None = None) -> int:
    """Finest integer qp whose estimated size is within `bits_per_param` (float params only)."""
    grid_cache = {} if grid_cache is None else grid_cache
    generated_cache = {} if generated_cache is None else generated_cache
    if bits_per_param <= 0:
        raise ValueError("bits_per_param must be positive")
    params = sum(r.array.size for r in onnx_io.find_float_tensors(model).values())
    low, high = -96, 32  # coarse enough for any float32 model at the top
    while high - low > 1:
        middle = (low + high) // 2
        planned = [p for p in plan_tensors(model, middle, nonweight_qp, lossless_names=lossless_names,
                                           detect_grids=detect_grids, grid_cache=grid_cache,
                                           detect_generated=detect_generated, generated_cache=generated_cache)
                   if p.mode != INTEGER]
        if estimated_bits(planned) / max(1, params) <= bits_per_param:
            high = middle
        else:
            low = middle
    return high
