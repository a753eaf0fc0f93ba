"""The bitstream syntax and container: round trips, documentation in sync, corrupted input."""

import pathlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import onnx_builders
from nnlc import encoder
from nnlc.bitstream import syntax
from nnlc.bitstream.container import UnitType, read_container, write_container
from nnlc.decoder import decode_bitstream, inspect_bitstream
from nnlc.errors import BitstreamError

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "bitstream.md"


@given(st.text(max_size=40), st.integers(0, 1 << 24), st.integers(0, 255))
@settings(max_examples=50, deadline=None)
def test_fields_round_trip(producer, tensor_count, flags):
    values = {"flags": flags, "tensor_count": tensor_count, "producer": producer}
    data = syntax.write_fields("model_header", values)
    assert syntax.read_exact("model_header", data) == values


@given(st.integers(-(1 << 62), 1 << 62))
def test_svarint_round_trip(value):
    field = syntax.Field("v", "svarint", "")
    writer = syntax.Writer()
    writer.element(field, value)
    assert syntax.Reader(bytes(writer.buffer)).element(field) == value


@given(st.lists(st.integers(0, (1 << 64) - 1), min_size=0, max_size=80), st.binary(max_size=12))
@settings(max_examples=150, deadline=None)
def test_varints_vectorised_read_equals_one_by_one(values, tail):
    """Long varint lists are parsed vectorised; values, position and errors match the scalar reader."""
    field = syntax.Field("v", "varints", "")
    writer = syntax.Writer()
    writer.element(field, values)
    data = bytes(writer.buffer) + tail
    reader = syntax.Reader(data)
    assert reader.element(field) == values
    scalar = syntax.Reader(data)
    count = scalar.varint("v")
    assert [scalar.varint("v") for _ in range(count)] == values and scalar.position == reader.position
    for cut in range(len(writer.buffer)):  # truncated anywhere: a BitstreamError, as before
        with pytest.raises(BitstreamError):
            syntax.Reader(bytes(writer.buffer)[:cut]).element(field)


def test_limits_are_enforced_on_both_sides():
    with pytest.raises(ValueError, match="limit"):
        syntax.write_fields("model_header", {"flags": 0, "tensor_count": (1 << 24) + 1, "producer": ""})
    writer = syntax.Writer()
    writer.buffer.append(0)
    writer.varint((1 << 24) + 1)
    writer.varint(0)
    with pytest.raises(BitstreamError, match="tensor_count"):
        syntax.read_exact("model_header", bytes(writer.buffer))


def test_docs_embed_the_current_syntax():
    text = DOCS.read_text()
    assert syntax.markdown_table() in text, "regenerate the tables: python -m nnlc.bitstream.syntax"


def test_container_round_trip_and_version_check():
    data = write_container([(UnitType.MODEL_HEADER, b"abc"), (UnitType.TENSOR, b"")])
    units = read_container(data)
    assert [(u.type, bytes(u.payload)) for u in units] == [(UnitType.MODEL_HEADER, b"abc"), (UnitType.TENSOR, b"")]
    future = bytearray(data)
    future[4] = syntax.FORMAT_VERSION[0] + 1
    with pytest.raises(BitstreamError, match="unsupported bitstream version"):
        read_container(bytes(future))
    with pytest.raises(BitstreamError, match="bad magic"):
        read_container(b"ONNX" + data[4:])


def test_corrupted_unit_error_names_the_unit():
    bitstream = bytearray(encoder.compress_model(onnx_builders.conv_bn_gemm()[0], qp=-30).bitstream)
    bitstream[len(bitstream) // 2] ^= 0x10
    with pytest.raises(BitstreamError, match=r"unit \d+: corrupted"):
        decode_bitstream(bytes(bitstream))


@pytest.fixture(scope="module")
def small_bitstream():
    model, _ = onnx_builders.depthwise()
    return encoder.compress_model(model, qp=-20).bitstream


def _decode_everything(data: bytes) -> None:
    decode_bitstream(data)
    inspect_bitstream(data)


def test_every_truncation_raises_bitstream_error_only(small_bitstream):
    for length in range(len(small_bitstream)):
        with pytest.raises(BitstreamError):
            _decode_everything(small_bitstream[:length])


def test_random_bit_flips_raise_bitstream_error_only(small_bitstream):
    rng = np.random.default_rng(0)
    for _ in range(1000):
        data = bytearray(small_bitstream)
        for _ in range(int(rng.integers(1, 4))):
            position = int(rng.integers(0, len(data) * 8))
            data[position // 8] ^= 1 << (position % 8)
        try:
            _decode_everything(bytes(data))
        except BitstreamError:
            pass


def test_valid_crc_with_garbage_payloads_raise_bitstream_error_only(small_bitstream):
    """Re-seal corrupted units with a correct CRC, so the parsers themselves see the garbage."""
    units = read_container(small_bitstream)
    rng = np.random.default_rng(1)
    for _ in range(300):
        rebuilt = []
        for unit in units:
            payload = bytearray(unit.payload)
            if payload and rng.random() < 0.5:
                for _ in range(int(rng.integers(1, 4))):
                    payload[int(rng.integers(0, len(payload)))] = int(rng.integers(0, 256))
            rebuilt.append((unit.type, bytes(payload)))
        try:
            _decode_everything(write_container(rebuilt))
        except BitstreamError:
            pass
