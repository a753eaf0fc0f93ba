"""Replays the fuzzing corpus and every crash input, and crafted hostile bitstreams (docs/fuzzing.md).

Only `BitstreamError`, with a message, may escape the decoder; hostile inputs are refused quickly and
with little memory, before anything large is allocated (docs/bitstream.md, "Limits").
"""

import importlib.util
import lzma
import pathlib
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from nnlc.bitstream.container import UnitType, read_container, write_container
from nnlc.bitstream.syntax import write_fields
from nnlc.decoder import Limits, decode_bitstream, inspect_bitstream
from nnlc.errors import BitstreamError

FUZZ = pathlib.Path(__file__).resolve().parents[1] / "fuzz"
_spec = importlib.util.spec_from_file_location("fuzz_decoder", FUZZ / "fuzz_decoder.py")
fuzz_decoder = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_decoder)

SEEDS = sorted((FUZZ / "corpus").glob("*.nnlc"))
CRASHES = sorted(path for path in (FUZZ / "crashes").glob("*") if path.is_file() and not path.name.startswith("."))


def test_the_corpus_is_there():
    assert len(SEEDS) >= 20


@pytest.mark.parametrize("path", SEEDS + CRASHES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_replay_raises_only_bitstream_errors(path):
    fuzz_decoder.exercise(path.read_bytes())  # raises AssertionError or the escaped exception on a finding


@pytest.mark.parametrize("path", [seed for seed in SEEDS if "no_topology" not in seed.name], ids=lambda p: p.name)
def test_seeds_are_valid_bitstreams(path):
    onnx.checker.check_model(decode_bitstream(path.read_bytes()))


def test_mutator_keeps_the_framing_and_reseals_crcs():
    seed = SEEDS[0].read_bytes()
    framed = 0
    for number in range(200):
        mutated = fuzz_decoder.mutate(seed, 1 << 16, number)
        if fuzz_decoder.lenient_units(mutated) is not None:
            framed += 1
            sealed = fuzz_decoder.resealed(mutated) or mutated
            try:
                read_container(sealed)
            except BitstreamError as error:  # a mutated unit type or order, never a CRC
                assert "corrupted" not in str(error)
        fuzz_decoder.exercise(mutated)
    assert framed > 100


# ----------------------------------------------------------------------------- crafted hostile input


def _model_with_slot(shape, data_type=TensorProto.FLOAT, extra=()) -> onnx.ModelProto:
    tensor = onnx.TensorProto(name="w", data_type=data_type, dims=list(shape))
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [],
                              [helper.make_tensor_value_info("y", data_type, None)], [tensor, *extra])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _with_dictionary_byte(xz: bytes, dictionary_byte: int) -> bytes:
    """The xz stream with its LZMA2 dictionary size property replaced (block header CRC fixed)."""
    header_size = (xz[12] + 1) * 4  # the block header follows the 12-byte stream header
    header = bytearray(xz[12:12 + header_size])
    position = header.index(b"\x21\x01") + 2  # filter LZMA2, one property byte
    header[position] = dictionary_byte
    header[-4:] = zlib.crc32(bytes(header[:-4])).to_bytes(4, "little")
    return xz[:12] + bytes(header) + xz[12 + header_size:]


def _topology(model_bytes: bytes, raw_length: int | None = None, dictionary_byte: int | None = None) -> bytes:
    data = lzma.compress(model_bytes, format=lzma.FORMAT_XZ, filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 16}])
    if dictionary_byte is not None:
        data = _with_dictionary_byte(data, dictionary_byte)
    return write_fields("topology", {"codec": 1, "raw_length": len(model_bytes) if raw_length is None else raw_length,
                                     "data": data})


def _tensor(shape, mode, body: bytes, data_type=TensorProto.FLOAT, name="w", storage=0) -> bytes:
    return write_fields("tensor", {"graph_path": "", "onnx_name": name, "storage": storage, "role": 2,
                                   "data_type": data_type, "shape": list(shape), "mode": mode, "body": body})


def _bitstream(tensors: list[bytes], topology: bytes | None = None, shape=(4, 4)) -> bytes:
    topology = topology if topology is not None else _topology(_model_with_slot(shape).SerializeToString())
    header = write_fields("model_header", {"flags": 1, "tensor_count": len(tensors), "producer": "crafted"})
    return write_container([(UnitType.MODEL_HEADER, header), (UnitType.TOPOLOGY, topology)]
                           + [(UnitType.TENSOR, tensor) for tensor in tensors])


def _symbols(frequencies, words=b"", precision=1, first_bin=0, escapes=b"", raw_bits=b"", exact_log2=4) -> dict:
    return {"exact_log2": exact_log2, "mantissa_bits": 1, "precision": precision, "first_bin": first_bin,
            "frequencies": list(frequencies), "escape_frequency": 0, "ans_words": words, "escapes": escapes,
            "raw_bits": raw_bits}


def _quantized(symbols: dict, step: float = 0.01) -> bytes:
    return write_fields("tensor_quantized", {"step": step, "symbols": symbols})


def _refused(data: bytes, match: str, max_megabytes: float = 8, limits: Limits = Limits(), **options) -> None:
    """decode_bitstream raises BitstreamError matching `match` with little memory, i.e. before it
    allocates what the header declares (memory, not wall time: the check must not depend on the machine)."""
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match=match):
            decode_bitstream(data, limits=limits, **options)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < max_megabytes * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB"


def test_tensor_over_the_element_limit_is_refused():
    shape = (1 << 20, 1 << 20, 1 << 4)
    _refused(_bitstream([_tensor(shape, 0, write_fields("tensor_raw", {"compression": 0, "data": b""}))],
                        shape=shape), "more than 1073741824 elements")


def test_total_size_is_checked_before_decoding_anything():
    # Twenty tensors of 2**28 elements, each a free one-symbol table: 40 GiB declared in a few hundred bytes.
    shape = (1 << 14, 1 << 14)
    body = _quantized(_symbols([2]))
    slots = [onnx.TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=shape) for i in range(20)]
    topology = _topology(_model_with_slot((1,), extra=slots).SerializeToString())
    data = _bitstream([_tensor(shape, 1, body, name=f"w{i}") for i in range(20)], topology)
    assert len(data) < 2000
    _refused(data, "decoded tensors exceed 17179869184 bytes")
    with pytest.raises(BitstreamError, match="decoded tensors exceed"):
        decode_bitstream(_bitstream([_tensor(shape, 1, body, name="w0")], topology),
                         limits=Limits(max_total_bytes=1 << 30))


def test_zlib_bomb_is_refused_with_little_memory():
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in ~64 KiB
    data = _bitstream([_tensor((256, 256), 0, write_fields("tensor_raw", {"compression": 1, "data": bomb}))],
                      shape=(256, 256))
    _refused(data, "does not inflate to 262144 bytes")
    claim = (1 << 14, 1 << 14)  # 1 GiB claimed from 11 bytes: impossible for deflate, refused unread
    data = _bitstream([_tensor(claim, 0, write_fields("tensor_raw", {"compression": 1, "data": zlib.compress(b"x")}))],
                      shape=claim)
    _refused(data, "cannot inflate to")


def test_topology_bombs_are_refused_with_little_memory():
    model = _model_with_slot((4, 4)).SerializeToString()
    tensor = _tensor((4, 4), 0, write_fields("tensor_raw", {"compression": 0, "data": bytes(64)}))
    _refused(_bitstream([tensor], _topology(model, raw_length=1 << 30)), "exceeds the limit",
             limits=Limits(max_topology_bytes=1 << 20))
    padded = model + bytes(4 << 20)  # inflates far beyond the declared length
    _refused(_bitstream([tensor], _topology(padded, raw_length=len(model))), "declared length")
    claimed = _topology(model, raw_length=1 << 30)  # claims 1 GiB, holds a few bytes
    _refused(_bitstream([tensor], claimed), "declared length")
    _refused(_bitstream([tensor], _topology(model, dictionary_byte=40)), "Memory usage limit")  # a 4 GiB dictionary


def test_topology_referring_to_external_data_is_refused():
    model = _model_with_slot((4, 4))
    outside = onnx.TensorProto(name="secret", data_type=TensorProto.FLOAT, dims=[4])
    outside.data_location = TensorProto.EXTERNAL
    entry = outside.external_data.add()
    entry.key, entry.value = "location", "../../etc/passwd"
    model.graph.initializer.append(outside)
    tensor = _tensor((4, 4), 0, write_fields("tensor_raw", {"compression": 0, "data": bytes(64)}))
    _refused(_bitstream([tensor], _topology(model.SerializeToString())), "external data file")


def test_ans_words_must_match_the_symbols():
    table = dict(frequencies=[1, 1], precision=1)
    _refused(_bitstream([_tensor((4, 4), 1, _quantized(_symbols(words=bytes(range(1, 201)) * 4, **table)))]),
             "more than 16 symbols can need")
    _refused(_bitstream([_tensor((4, 4), 1, _quantized(_symbols(words=b"\x01\x00\x00\x00" * 5, **table)))]),
             "data left after decoding")


def test_escapes_and_raw_bits_must_be_used_exactly():
    _refused(_bitstream([_tensor((4, 4), 1, _quantized(_symbols([2], escapes=b"\x05")))]),
             "escapes: 1 values left")
    _refused(_bitstream([_tensor((4, 4), 1, _quantized(_symbols([2], raw_bits=b"\xff")))]),
             "raw_bits: length")


def test_dct_kernels_are_capped():
    def latent(shape, steps):
        body = write_fields("tensor_latent", {"decoder": 3, "steps": np.full(steps, 0.1, "<f4").tobytes(),
                                              "symbols": _symbols([2])})
        return _bitstream([_tensor(shape, 3, body)], shape=shape)

    _refused(latent((1, 1, 1, 1 << 16), 1 << 16), "exceeds 1024 per axis")
    _refused(latent((64, 64, 32, 32), 1024), "work limit", limits=Limits(max_tensor_elements=1 << 22))


def test_overflowing_weights_are_refused():
    body = _quantized(_symbols([1, 1], words=b"\x09\x00\x00\x00", first_bin=1), step=3e38)
    with pytest.raises(BitstreamError, match="overflow"):
        decode_bitstream(_bitstream([_tensor((4, 4), 1, body)]))


def test_constant_float_slots_check_the_shape():
    nodes = [helper.make_node("Constant", [], ["w"], value_float=1.0)]
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("w", TensorProto.FLOAT, None)])
    topology = _topology(helper.make_model(graph).SerializeToString())
    body = write_fields("tensor_raw", {"compression": 0, "data": bytes(4)})
    with pytest.raises(BitstreamError, match="does not match"):
        decode_bitstream(_bitstream([_tensor((1,), 0, body, storage=2)], topology))
    decode_bitstream(_bitstream([_tensor((), 0, body, storage=2)], topology))


def test_inspect_respects_the_limits():
    data = SEEDS[0].read_bytes()
    with pytest.raises(BitstreamError, match="elements"):
        inspect_bitstream(data, Limits(max_tensor_elements=4))


def test_decoder_cli_takes_limits(tmp_path):
    bitstream = next(seed for seed in SEEDS if seed.name.startswith("conv_bn_gemm_qp40"))
    command = [sys.executable, "-m", "nnlc.decoder", str(bitstream), "-o", str(tmp_path / "out.onnx"), "--quiet"]
    refused = subprocess.run(command + ["--max_tensor_elements=100"], capture_output=True, text=True)
    assert refused.returncode == 1 and "more than 100 elements" in refused.stderr
    assert not (tmp_path / "out.onnx").exists()
    invalid = subprocess.run(command + ["--max_total_bytes=0"], capture_output=True, text=True)
    assert invalid.returncode == 2 and "positive" in invalid.stderr
    subprocess.run(command + ["--max_tensor_elements=1000"], check=True, capture_output=True)
    assert (tmp_path / "out.onnx").exists()
