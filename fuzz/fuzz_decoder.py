"""Coverage-guided fuzzing of the .nnlc reader and decoder with atheris (docs/fuzzing.md).

    python fuzz/fuzz_decoder.py fuzz/work fuzz/corpus -runs=200000 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix=fuzz/crashes/

Every input goes through `exercise`: `inspect_bitstream` and `decode_bitstream` (float or
`quantized` output, with a structure model when the stream carries no topology, then serialised as
`nnlc-decode` does), once as given and once re-sealed: the unit framing is parsed leniently and every
unit rewritten with a correct CRC by `write_container`, so that the parsers behind the CRC see the
mutations. The custom mutator is structure-aware: half of its mutations edit one unit, or one field of
a tensor unit (shape, mode, table, ANS words, ...), and re-seal the container.

Only `BitstreamError` with a message may escape. `--keep_going` saves each new kind of failure to
fuzz/crashes/ and carries on instead of stopping at the first. `tests/test_fuzz_corpus.py` replays
fuzz/corpus/ and fuzz/crashes/ through `exercise` without atheris.
"""

from __future__ import annotations

import contextlib
import hashlib
import pathlib
import random
import struct
import sys
import traceback
import zlib
from typing import Any

import onnx

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

_INSTRUMENTATION: Any = contextlib.nullcontext()
if __name__ == "__main__":
    import atheris

    _INSTRUMENTATION = atheris.instrument_imports(include=["nnlc"])

with _INSTRUMENTATION:
    from nnlc.bitstream.container import UnitType, write_container
    from nnlc.bitstream.syntax import MAGIC, SYNTAX, Field, Reader, read_exact, write_fields
    from nnlc.decoder import Limits, decode_bitstream, inspect_bitstream
    from nnlc.decoder.decode import decode_tensors
    from nnlc.decoder.files import split_for_streaming
    from nnlc.decoder.onnx_writer import spliced_pieces
    from nnlc.errors import BitstreamError

# Small caps, so that an input that gets past them is a finding, not a legitimately large model.
FUZZ_LIMITS = Limits(max_tensor_elements=1 << 20, max_total_bytes=1 << 26, max_topology_bytes=1 << 22,
                     max_units=1 << 12)
CRASHES = ROOT / "fuzz" / "crashes"
_BODY_STRUCTURES = {0: "tensor_raw", 1: "tensor_quantized", 2: "tensor_integer", 3: "tensor_latent",
                    4: "tensor_generated", 5: "tensor_grouped", 6: "tensor_dependent"}
_INTERESTING = (0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1 << 16, (1 << 16) + 1,
                1 << 20, 1 << 23, (1 << 24) + 1, 1 << 30, (1 << 31) - 1, 1 << 32, 1 << 40, (1 << 63) - 1)


def _structures() -> list:
    import onnx_builders  # tests/onnx_builders.py: the models of the no-topology seeds

    return [build()[0] for _, build in sorted(onnx_builders.ALL_MODELS.items())]


_STRUCTURE_MODELS: list | None = None


def _check(error: BitstreamError) -> None:
    if not str(error).strip():
        raise AssertionError("BitstreamError without a message")


def _decode(data: bytes, structure=None) -> None:
    """Decodes as `nnlc-decode` does: float output through the streaming ONNX writer, or --quantized."""
    if zlib.crc32(data) & 1:
        decode_bitstream(data, structure, quantized=True, limits=FUZZ_LIMITS).SerializeToString()
        return
    model, values, _ = decode_tensors(data, structure, False, FUZZ_LIMITS)
    pieces, _ = spliced_pieces(model, split_for_streaming(model, values))
    onnx.ModelProto.FromString(b"".join(bytes(piece) for piece in pieces))


def decode_all_ways(data: bytes) -> None:
    """inspect + decode one input; raises only on a finding (anything but BitstreamError)."""
    global _STRUCTURE_MODELS
    try:
        inspect_bitstream(data, FUZZ_LIMITS)
    except BitstreamError as error:
        _check(error)
    try:
        _decode(data)
    except BitstreamError as error:
        _check(error)
        if "carries no topology" not in str(error):
            return
        if _STRUCTURE_MODELS is None:
            _STRUCTURE_MODELS = _structures()
        for structure in _STRUCTURE_MODELS:
            try:
                _decode(data, structure)
            except BitstreamError as inner:
                _check(inner)


def lenient_units(data: bytes) -> list[tuple[int, bytes]] | None:
    """(type, payload) of the units before END, ignoring CRCs; None when the framing is unreadable."""
    if len(data) < 6 or data[:4] != MAGIC:
        return None
    reader = Reader(data, 6)
    units = []
    try:
        while reader.remaining:
            unit_type = reader.take(1, "type")[0]
            length = reader.varint("length")
            payload = bytes(reader.take(length, "payload"))
            reader.take(4, "crc")
            if unit_type == UnitType.END:
                break
            units.append((unit_type, payload))
    except BitstreamError:
        return None
    return units


def resealed(data: bytes) -> bytes | None:
    """`data` with every unit's CRC recomputed (None if unchanged or unreadable)."""
    units = lenient_units(data)
    if units is None:
        return None
    sealed = write_container(units)
    return None if sealed == data else sealed


def exercise(data: bytes) -> None:
    """The fuzz target: the input as given, then re-sealed."""
    decode_all_ways(data)
    sealed = resealed(data)
    if sealed is not None:
        decode_all_ways(sealed)


# ----------------------------------------------------------------------------- structure-aware mutator


def _mutate_bytes(value: bytes, rng: random.Random, mutate_bytes) -> bytes:
    if mutate_bytes is not None and rng.random() < 0.7:
        return mutate_bytes(value, max(16, 2 * len(value)))
    data = bytearray(value)
    choice = rng.randrange(4)
    if choice == 0 and data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 1 and data:
        del data[rng.randrange(len(data)):]
    elif choice == 2:
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    else:
        data = bytearray(data[: len(data) // 2] * 2)
    return bytes(data)


def _mutate_value(field: Field, value: Any, rng: random.Random, mutate_bytes) -> Any:
    kind = field.kind
    if kind in ("u8", "u16", "u32"):
        bits = {"u8": 8, "u16": 16, "u32": 32}[kind]
        return rng.choice([rng.randrange(1 << bits), value ^ (1 << rng.randrange(bits)), value + 1, max(0, value - 1),
                           min(rng.choice(_INTERESTING), (1 << bits) - 1)]) % (1 << bits)
    if kind == "f32":
        return rng.choice([0.0, -1.0, 1e-45, 3.4e38, float("inf"), float("nan"), value * 2, -value, value / 1024])
    if kind in ("varint", "svarint"):
        new = rng.choice([rng.choice(_INTERESTING), value + 1, value - 1, value * 2, value >> 1, value ^ 1])
        return new if kind == "svarint" else max(0, min(new, field.limit))
    if kind == "str":
        return _mutate_bytes(value.encode(), rng, mutate_bytes).decode("utf-8", "replace")[: field.limit]
    if kind == "varints":
        values = list(value)
        choice = rng.randrange(4)
        if choice == 0 and values:
            values[rng.randrange(len(values))] = rng.choice(_INTERESTING)
        elif choice == 1 and values:
            values.pop(rng.randrange(len(values)))
        elif choice == 2:
            values.insert(rng.randrange(len(values) + 1), rng.choice(_INTERESTING))
        elif values:
            position = rng.randrange(len(values))
            values[position] = max(0, values[position] + rng.choice((-1, 1)))
        return values[: field.limit]
    if kind == "bytes":
        return _mutate_bytes(bytes(value), rng, mutate_bytes)
    if kind == "symbols_list":  # one structure changed, dropped or repeated
        structures = [dict(v) for v in value]
        choice = rng.randrange(3)
        if choice == 0 and structures:
            index = rng.randrange(len(structures))
            structures[index] = _mutate_structure("symbols", structures[index], rng, mutate_bytes)
        elif choice == 1 and structures:
            structures.pop(rng.randrange(len(structures)))
        elif structures:
            structures.insert(rng.randrange(len(structures) + 1), dict(rng.choice(structures)))
        return structures[: field.limit]
    return _mutate_structure(kind, value, rng, mutate_bytes)


def _mutate_structure(structure: str, values: dict, rng: random.Random, mutate_bytes) -> dict:
    """A copy of `values` (one parsed `structure`) with one field changed, nested bodies included."""
    values = dict(values)
    field = rng.choice(SYNTAX[structure])
    if structure == "tensor" and field.name == "body" and values["mode"] in _BODY_STRUCTURES and rng.random() < 0.8:
        try:
            body = read_exact(_BODY_STRUCTURES[values["mode"]], values["body"])
        except BitstreamError:
            body = None
        if body is not None:
            values["body"] = write_fields(_BODY_STRUCTURES[values["mode"]],
                                          _mutate_structure(_BODY_STRUCTURES[values["mode"]], body, rng, mutate_bytes))
            return values
    values[field.name] = _mutate_value(field, values[field.name], rng, mutate_bytes)
    return values


def _mutate_unit(unit_type: int, payload: bytes, rng: random.Random, mutate_bytes) -> bytes:
    structure = {UnitType.MODEL_HEADER: "model_header", UnitType.TOPOLOGY: "topology",
                 UnitType.TENSOR: "tensor"}.get(unit_type)
    if structure is not None and rng.random() < 0.75:
        try:
            return write_fields(structure, _mutate_structure(structure, read_exact(structure, payload), rng,
                                                             mutate_bytes))
        except (BitstreamError, ValueError, OverflowError, struct.error):
            pass
    return _mutate_bytes(payload, rng, mutate_bytes)


def mutate(data: bytes, max_size: int, seed: int, mutate_bytes=None) -> bytes:
    """Structure-aware mutation: edit one unit or one field and re-seal, or plain byte mutation."""
    rng = random.Random(seed)
    units = lenient_units(data)
    if units is None or not units or rng.random() < 0.3:
        if mutate_bytes is not None:
            return mutate_bytes(data, max_size)
        return _mutate_bytes(data, rng, None)[:max_size]
    index = rng.randrange(len(units))
    choice = rng.random()
    if choice < 0.8:
        units[index] = (units[index][0], _mutate_unit(*units[index], rng, mutate_bytes))
    elif choice < 0.87:
        units.insert(rng.randrange(len(units) + 1), units[index])
    elif choice < 0.94:
        units.pop(index)
    else:
        units[index] = (rng.choice([1, 2, 3, 4, 5, 255]), units[index][1])
    sealed = write_container(units)
    return sealed if len(sealed) <= max_size else data


# ----------------------------------------------------------------------------- running


def failure_signature(error: BaseException) -> str:
    """Exception type and the innermost nnlc frame: one name per distinct finding."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if "/nnlc/" in frame.filename]
    where = f"{pathlib.Path(frames[-1].filename).stem}_{frames[-1].lineno}" if frames else "outside"
    return f"{type(error).__name__}_{where}"


def _keep_going_target(data: bytes) -> None:
    try:
        exercise(data)
    except Exception as error:  # noqa: BLE001 - every other exception is a finding
        signature = failure_signature(error)
        CRASHES.mkdir(parents=True, exist_ok=True)
        if not any(CRASHES.glob(f"{signature}-*")):
            path = CRASHES / f"{signature}-{hashlib.sha1(data).hexdigest()[:12]}"
            path.write_bytes(data)
            print(f"\nFINDING {signature}: {error!r} -> {path}", file=sys.stderr, flush=True)


def main() -> None:
    keep_going = "--keep_going" in sys.argv
    argv = [argument for argument in sys.argv if argument != "--keep_going"]
    atheris.Setup(argv, _keep_going_target if keep_going else exercise,
                  custom_mutator=lambda data, max_size, seed: mutate(data, max_size, seed, atheris.Mutate))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
