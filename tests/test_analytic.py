"""Generated tensors (bitstream mode 4): windowed DFT bases detected, coded and decoded bit for bit.

The bases are built here with numpy's own cos, sin and windows (never nnlc's generator, never
../shared), the way STFT code builds them.
"""

import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import onnx_builders
from nnlc import analytic, encoder, onnx_io
from nnlc.bitstream.container import UnitType, read_container, required_version, write_container
from nnlc.bitstream.syntax import FORMAT_VERSION, read_exact, write_fields
from nnlc.coding.symbols import encode_symbols
from nnlc.decoder import analytic as generator
from nnlc.decoder import decode_bitstream, decode_tensor, inspect_bitstream, parse_tensor_unit
from nnlc.errors import BitstreamError
from test_decoder_standalone import BLOCKER

CORPUS = pathlib.Path(__file__).resolve().parents[1] / "fuzz" / "corpus"
WINDOWS = {
    generator.RECTANGULAR: lambda n: np.ones(n),
    generator.HANN_PERIODIC: lambda n: 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n),
    generator.HANN_SYMMETRIC: np.hanning,
    generator.HAMMING_PERIODIC: lambda n: 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(n) / n),
    generator.HAMMING_SYMMETRIC: np.hamming,
}


def numpy_basis(n_fft: int = 64, bins: int | None = None, window: int = generator.HANN_PERIODIC,
                imag_sign: int = generator.MINUS_SIN, scale: float = 1.0, float32_product: bool = False,
                shape: tuple[int, ...] | None = None) -> np.ndarray:
    """[cos(2 pi k t / n) w(t); -+sin(2 pi k t / n) w(t)] * scale with numpy's cos and sin."""
    bins = n_fft // 2 + 1 if bins is None else bins
    angles = 2 * np.pi * np.outer(np.arange(bins), np.arange(n_fft)) / n_fft
    sign = -1.0 if imag_sign == generator.MINUS_SIN else 1.0
    trig = np.concatenate([np.cos(angles), sign * np.sin(angles)])
    weights = WINDOWS[window](n_fft)
    if float32_product:  # a float32 basis times a float32 window (tacotron2-style STFT modules)
        values = trig.astype(np.float32) * weights.astype(np.float32) * np.float32(scale)
    else:
        values = (trig * weights * scale).astype(np.float32)
    return values.reshape(shape or (2 * bins, 1, n_fft))


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def round_trip(weight: np.ndarray) -> tuple[np.ndarray, encoder.EncodeResult]:
    model, _ = onnx_builders.stft_conv(weight)
    result = encoder.compress_model(model, qp=-20)
    decoded = onnx_io.find_float_tensors(decode_bitstream(result.bitstream))["basis"].array
    return decoded, result


@pytest.mark.parametrize("window", sorted(WINDOWS))
@pytest.mark.parametrize("imag_sign", [generator.MINUS_SIN, generator.PLUS_SIN])
@pytest.mark.parametrize("scale", [1.0, 1 / 64, 1 / 8.0, 0.37])
def test_detection_finds_window_sign_and_scale(window, imag_sign, scale):
    array = numpy_basis(64, window=window, imag_sign=imag_sign, scale=scale)
    found = analytic.detect_generated(array)
    assert found is not None and found.generator == generator.DFT_BASIS
    assert found.parameters[:4] == (64, 33, window, imag_sign)
    assert abs(float(found.scale) - scale) <= 1e-6 * scale
    assert np.array_equal(bits(found.reconstruct(array.shape)), bits(array))
    assert found.estimated_bits < 0.2 * 8 * array.nbytes  # numpy's cos misses exact zeros: those cost


@pytest.mark.parametrize("shape", [(66, 64), (66, 1, 1, 64)])
def test_detection_of_other_ranks_bin_counts_and_float32_arithmetic(shape):
    array = numpy_basis(64, shape=shape)
    found = analytic.detect_generated(array)
    assert found is not None and found.parameters[:2] == (64, 33)
    few_bins = numpy_basis(48, bins=10, window=generator.HANN_SYMMETRIC, float32_product=True)
    found = analytic.detect_generated(few_bins)
    assert found.parameters == (48, 10, generator.HANN_SYMMETRIC, generator.MINUS_SIN, generator.FLOAT32_PRODUCT)


def test_fft_basis_is_reproduced_exactly():
    """np.fft.fft(eye) times a float32 window, as tacotron2-style STFT modules (Silero VAD) build it."""
    array = onnx_builders.fft_basis(256)
    found = analytic.detect_generated(array)
    assert found.parameters == (256, 129, generator.HANN_PERIODIC, generator.MINUS_SIN, generator.FLOAT32_PRODUCT)
    assert not np.any(found.residual) and found.estimated_bits < 8 * 32


def test_noisy_random_and_misshapen_tensors_are_not_detected(monkeypatch):
    rng = np.random.default_rng(0)
    basis = numpy_basis(64)
    noisy = (basis + 1e-3 * rng.standard_normal(basis.shape)).astype(np.float32)
    assert analytic.detect_generated(noisy) is None
    assert analytic.detect_generated(basis.reshape(33, 2, 64)) is None  # middle axis is not 1
    assert analytic.detect_generated(basis.reshape(66, 64).T.copy()) is None  # transposed
    assert analytic.detect_generated(basis[:-2]) is None  # a real row without its imaginary row
    assert analytic.detect_generated(basis.astype(np.float16)) is None
    monkeypatch.setattr(generator, "dft_basis", lambda *args: pytest.fail("a basis was computed"))
    for shape in [(66, 1, 64), (512, 512), (66, 64), (16, 1, 9)]:  # rejected before any basis is built
        assert analytic.detect_generated(rng.standard_normal(shape).astype(np.float32)) is None


def test_ordered_map_is_monotone_and_bijective():
    tiny = np.float32(1e-45)
    values = np.array([-np.inf, -1.0, -tiny, -0.0, 0.0, tiny, 1.0, np.inf], np.float32)
    keys = generator.ordered_from_float32(values)
    assert keys.tolist()[2:6] == [-2, -1, 0, 1] and np.all(np.diff(keys) > 0)
    patterns = np.random.default_rng(1).integers(0, 1 << 32, 10000, dtype=np.uint64).astype(np.uint32)
    patterns[:4] = [0, 1 << 31, 0xFFFFFFFF, 0x7FFFFFFF]
    restored = generator.float32_from_ordered(generator.ordered_from_float32(patterns.view(np.float32)))
    assert np.array_equal(bits(restored), patterns)
    with pytest.raises(BitstreamError, match="outside"):
        generator.float32_from_ordered(np.array([1 << 31]))


def test_trigonometry_is_exact_at_quarter_turns_and_accurate_elsewhere():
    for m in (1, 2, 3, 4, 7, 64, 100, 256, 1000):
        p = np.arange(3 * m)
        cosine, sine = generator.cos_sin_turns(p, m)
        assert np.max(np.abs(cosine - np.cos(2 * np.pi * p / m))) < 4e-15
        assert np.max(np.abs(sine - np.sin(2 * np.pi * p / m))) < 4e-15
        quarter = (4 * p) % m == 0
        assert np.all(np.isin(cosine[quarter], (-1.0, 0.0, 1.0))) and not np.any(np.signbit(sine[sine == 0]))


def _perturbed_bases() -> dict[str, np.ndarray]:
    basis = numpy_basis(64, window=generator.HANN_SYMMETRIC)
    flipped = basis.copy().ravel()
    for index, steps in ((5, 3), (700, -2), (3000, 1)):
        for _ in range(abs(steps)):
            flipped[index] = np.nextafter(flipped[index], np.float32(np.inf * steps))
    zeros = basis.copy().ravel()
    exact_zeros = np.flatnonzero(generator.dft_basis(64, 33, generator.HANN_SYMMETRIC, 0, 0, 1.0, basis.shape) == 0)
    zeros[exact_zeros[0]] = -0.0  # -0 where the generator gives +0
    zeros[exact_zeros[1]] = -np.float32(1e-45)  # tiny of the opposite sign
    return {"exact": basis, "flipped": flipped.reshape(basis.shape), "zeros": zeros.reshape(basis.shape)}


@pytest.mark.parametrize("variant", ["exact", "flipped", "zeros"])
def test_encode_decode_is_bit_for_bit(variant):
    weight = _perturbed_bases()[variant]
    decoded, result = round_trip(weight)
    row = {row["name"]: row for row in result.rows}["basis"]
    assert row["mode"] == "generated" and row["mse"] == 0 and row["max_abs_error"] == 0
    assert np.array_equal(bits(decoded), bits(weight))


def test_stft_model_is_small_and_decodes_exactly_without_jax(tmp_path):
    weight = onnx_builders.fft_basis(128)
    model, feeds = onnx_builders.stft_conv(weight)
    result = encoder.compress_model(model, qp=-20)
    quantized = encoder.compress_model(model, qp=-20, detect_generated=False)
    row = {row["name"]: row for row in result.rows}["basis"]
    assert row["mode"] == "generated" and row["generator"] == "dft_basis"
    assert row["bytes"] < 0.05 * weight.nbytes
    assert result.total_bytes < quantized.total_bytes / 4
    assert result.bitstream[4:6] == bytes((1, 2)) and FORMAT_VERSION >= (1, 2)
    assert quantized.bitstream[4:6] == bytes((1, 1))
    bitstream, output = tmp_path / "stft.nnlc", tmp_path / "stft.onnx"
    bitstream.write_bytes(result.bitstream)
    script = BLOCKER + textwrap.dedent(f"""
        from nnlc.decoder.__main__ import main
        sys.exit(main([{str(bitstream)!r}, '-o', {str(output)!r}, '--quiet']))
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    decoded = onnx.load(str(output))
    onnx.checker.check_model(decoded)
    assert np.array_equal(bits(onnx_io.find_float_tensors(decoded)["basis"].array), bits(weight))
    for expected, actual in zip(onnx_builders.run(model, feeds), onnx_builders.run(decoded, feeds)):
        assert np.array_equal(expected, actual)
    for quantized_output in (True, False):  # --quantized keeps the generated tensor float
        again = onnx_io.find_float_tensors(decode_bitstream(result.bitstream, quantized=quantized_output))
        assert np.array_equal(bits(again["basis"].array), bits(weight))
    assert [r["mode"] for r in inspect_bitstream(result.bitstream)["tensors"]] == ["generated"]


def test_planning_marks_caching_and_estimated_bits():
    model, _ = onnx_builders.stft_conv(onnx_builders.fft_basis(64))
    cache: dict = {}
    for lossless in ((), [".*"]):
        (item,) = encoder.plan_tensors(model, qp=-4, steps={"basis": 1.0}, lossless_names=lossless,
                                       generated_cache=cache)
        assert item.mode == encoder.GENERATED and cache["basis"] is item
    (quantized,) = encoder.plan_tensors(model, qp=-32, detect_generated=False)
    assert quantized.mode == encoder.QUANTIZED
    expected = 8 * item.generated.side_bytes + item.generated.coding_plan.estimated_bits
    assert encoder.estimated_bits([item]) == pytest.approx(expected)
    assert encoder.estimated_bits([item]) < encoder.estimated_bits([quantized]) / 4
    result = encoder.compress_model(model, bits_per_param=1.0)
    assert {row["name"]: row["mode"] for row in result.rows}["basis"] == "generated"
    from nnlc.reparam.groups import plan_reparam

    assert plan_reparam(onnx_io.find_float_tensors(model))["basis"].kind == "fixed"


def _generated_unit(weight: np.ndarray) -> tuple[list, int]:
    model, _ = onnx_builders.stft_conv(weight)
    units = [(unit.type, bytes(unit.payload)) for unit in read_container(encoder.compress_model(model).bitstream)]
    index = next(i for i, (kind, payload) in enumerate(units)
                 if kind == UnitType.TENSOR and read_exact("tensor", payload)["mode"] == encoder.GENERATED)
    return units, index


def _with_body(payload: bytes, **changes) -> bytes:
    fields = read_exact("tensor", payload)
    body = read_exact("tensor_generated", fields["body"])
    unit_changes = {name: changes.pop(name) for name in ("data_type", "shape") if name in changes}
    body.update(changes)
    return write_fields("tensor", {**fields, **unit_changes, "body": write_fields("tensor_generated", body)})


@pytest.mark.parametrize("changes, message", [
    ({"parameters": [1 << 17, 33, 1, 0, 1]}, "n_fft"),
    ({"parameters": [0, 33, 1, 0, 1]}, "n_fft"),
    ({"parameters": [128, 33, 1, 0, 1]}, "shape"),
    ({"parameters": [64, 32, 1, 0, 1]}, "shape"),
    ({"parameters": [64, 0, 1, 0, 1]}, "bins"),
    ({"parameters": [64, 33, 9, 0, 1]}, "window"),
    ({"parameters": [64, 33, 1, 2, 1]}, "imag_sign"),
    ({"parameters": [64, 33, 1, 0, 7]}, "arithmetic"),
    ({"parameters": [64, 33, 1, 0]}, "parameters"),
    ({"parameters": [64, 33, 1, 0, 1, 0]}, "parameters"),
    ({"generator": 2}, "unknown generator"),
    ({"scale": float("inf")}, "scale"),
    ({"scale": float("nan")}, "scale"),
    ({"scale": 0.0}, "scale"),
    ({"data_type": TensorProto.FLOAT16}, "float32"),
    ({"shape": [68, 1, 64]}, "shape"),
    ({"shape": [66, 2, 32]}, "shape"),
    ({"residual": encode_symbols(np.full(66 * 64, 1 << 33))}, "residual"),
    ({"residual": encode_symbols(np.full(66 * 64, 1 << 31))}, "outside"),
    ({"residual": encode_symbols(np.random.default_rng(0).integers(-9, 9, 10 * 66 * 64))}, "ans_words"),
])
def test_corrupted_generated_units_raise_bitstream_errors(changes, message):
    """decode_tensor names the problem (ValueError for malformed symbols, which decode_bitstream
    wraps); decode_bitstream lets only BitstreamError escape."""
    units, index = _generated_unit(numpy_basis(64))
    payload = _with_body(units[index][1], **changes)
    with pytest.raises((BitstreamError, ValueError), match=message):
        decode_tensor(parse_tensor_unit(payload))
    units[index] = (units[index][0], payload)
    with pytest.raises(BitstreamError, match=r"unit \d+"):
        decode_bitstream(write_container(units))


def test_truncated_and_garbled_generated_units_raise_bitstream_errors():
    units, index = _generated_unit(numpy_basis(64))
    payload = units[index][1]
    for cut in range(1, len(payload)):
        with pytest.raises(BitstreamError):
            decode_tensor(parse_tensor_unit(payload[:cut]))
    fields = read_exact("tensor", payload)
    body = bytes(fields["body"])
    rng = np.random.default_rng(2)
    for _ in range(300):  # resealed with a correct CRC, so the mode-4 parser sees the garbage
        garbled = bytearray(body)
        garbled[int(rng.integers(len(garbled)))] = int(rng.integers(256))
        units[index] = (UnitType.TENSOR, write_fields("tensor", {**fields, "body": bytes(garbled)}))
        try:
            decode_bitstream(write_container(units))
        except BitstreamError:
            pass


def test_files_without_generated_tensors_stay_1_1_byte_for_byte():
    """The committed fuzz seeds were written by the 1.1 encoder: they decode, and the encoder still
    writes exactly them (fuzz/make_corpus.py: each tests/onnx_builders model at qp -40 and -20)."""
    for name, build in sorted(onnx_builders.ALL_MODELS.items()):
        model, _ = build()
        for qp in (-40, -20):
            seed = (CORPUS / f"{name}_qp{-qp}.nnlc").read_bytes()
            assert seed[4:6] == bytes((1, 1))
            onnx.checker.check_model(decode_bitstream(seed))
            assert encoder.compress_model(model, qp=qp).bitstream == seed
    assert required_version([(UnitType.MODEL_HEADER, b"x"), (UnitType.TENSOR, b"\xff")]) == (1, 1)
    with pytest.raises(ValueError, match="version"):
        write_container([], version=(FORMAT_VERSION[0], FORMAT_VERSION[1] + 1))
