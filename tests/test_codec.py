"""Post-training compression end to end: encoder -> bitstream -> standalone decoder -> ONNX."""

import numpy as np
import onnx
import pytest

import onnx_builders
from nnlc import encoder, onnx_io
from nnlc.decoder import decode_bitstream, inspect_bitstream
from nnlc.errors import BitstreamError

MODELS = sorted(onnx_builders.ALL_MODELS)


def _non_float_content(model):
    """Every integer tensor, and the graph with float data removed, as comparable values."""
    names = set(onnx_io.find_float_tensors(model))
    stripped = onnx_io.strip_tensors(model, names)
    return stripped.graph.SerializeToString(deterministic=True)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("qp", [-40, -24])
def test_round_trip_error_within_half_a_step(name, qp):
    model, feeds = onnx_builders.ALL_MODELS[name]()
    result = encoder.compress_model(model, qp=qp)
    decoded = decode_bitstream(result.bitstream)
    onnx.checker.check_model(decoded)
    rows = {row["name"]: row for row in result.rows}
    original = onnx_io.find_float_tensors(model)
    for tensor_name, record in onnx_io.find_float_tensors(decoded).items():
        reference = original[tensor_name].array
        assert record.array.dtype == reference.dtype and record.array.shape == reference.shape
        row = rows[tensor_name]
        if row["mode"] == "raw":
            np.testing.assert_array_equal(record.array, reference)  # bit-exact, -inf included
        else:
            error = np.abs(record.array.astype(np.float64) - reference)
            assert np.all(error <= row["step"] / 2 * (1 + 1e-6) + np.spacing(np.abs(reference)))
    assert _non_float_content(decoded) == _non_float_content(model)
    expected, actual = onnx_builders.run(model, feeds), onnx_builders.run(decoded, feeds)
    tolerance = 5e-3 if qp == -40 else 0.15
    for reference, output in zip(expected, actual):
        scale = np.max(np.abs(reference)) + 1e-6
        assert np.max(np.abs(reference - output)) / scale < tolerance


def test_tiny_and_nonfinite_constants_are_stored_exactly():
    model, _ = onnx_builders.attention()
    result = encoder.compress_model(model, qp=-8)
    rows = {row["name"]: row for row in result.rows}
    assert rows["scale"]["mode"] == "raw" and rows["scale"]["lossless_reason"] == "0-d constant"
    assert rows["mask"]["mode"] == "raw" and rows["mask"]["lossless_reason"] == "holds inf or nan"
    decoded = onnx_io.find_float_tensors(decode_bitstream(result.bitstream))
    assert np.isneginf(decoded["mask"].array).sum() == 10


def test_user_marked_lossless_tensors_are_exact():
    model, _ = onnx_builders.conv_bn_gemm()
    result = encoder.compress_model(model, qp=-16, lossless_names=["fc\\..*"])
    decoded = onnx_io.find_float_tensors(decode_bitstream(result.bitstream))
    original = onnx_io.find_float_tensors(model)
    for name in ("fc.weight", "fc.bias"):
        np.testing.assert_array_equal(decoded[name].array, original[name].array)
    assert np.any(decoded["conv.weight"].array != original["conv.weight"].array)


def test_integer_initializers_are_coded_losslessly():
    rng = np.random.default_rng(0)
    table = rng.integers(-100, 100, (50, 8)).astype(np.int32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", ["table", "i"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT32, [3, 8])],
        [onnx.numpy_helper.from_array(table, "table")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    result = encoder.compress_model(model)
    assert [row["mode"] for row in result.rows] == ["integer"]
    decoded = onnx_io.find_tensors(decode_bitstream(result.bitstream), include_integer=True)["table"].array
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, table)


def test_code_length_close_to_ideal_and_side_information_reported():
    rng = np.random.default_rng(1)
    weight = (rng.laplace(0, 0.05, (256, 512))).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 256])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 512])],
        [onnx.numpy_helper.from_array(weight, "w")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    result = encoder.compress_model(model, qp=-36)
    (row,) = result.rows
    assert 8 * row["payload_bytes"] <= row["ideal_payload_bits"] * 1.005
    assert 0 < row["side_bytes"] < 0.01 * row["bytes"]
    assert result.topology_bytes > 0


@pytest.mark.parametrize("name", ["conv_bn_gemm", "if_constants"])
def test_two_runs_give_identical_bitstreams(name):
    model, _ = onnx_builders.ALL_MODELS[name]()
    assert encoder.compress_model(model, qp=-30).bitstream == encoder.compress_model(model, qp=-30).bitstream


def test_without_topology_the_structure_is_needed():
    model, feeds = onnx_builders.if_constants()
    with_topology = encoder.compress_model(model, qp=-30).bitstream
    without = encoder.compress_model(model, qp=-30, carry_topology=False).bitstream
    assert len(without) < len(with_topology)
    with pytest.raises(BitstreamError, match="structure"):
        decode_bitstream(without)
    decoded = decode_bitstream(without, structure=model)
    np.testing.assert_array_equal(onnx_builders.run(decoded, feeds)[0], onnx_builders.run(decode_bitstream(with_topology), feeds)[0])


def test_structure_that_does_not_match_is_refused():
    model, _ = onnx_builders.conv_bn_gemm()
    other, _ = onnx_builders.depthwise()
    bitstream = encoder.compress_model(model, qp=-30, carry_topology=False).bitstream
    with pytest.raises(BitstreamError, match="no place in the model structure"):
        decode_bitstream(bitstream, structure=other)


@pytest.mark.parametrize("name", MODELS)
def test_quantized_output_uses_dequantize_linear_and_matches_float_output(name):
    model, feeds = onnx_builders.ALL_MODELS[name]()
    bitstream = encoder.compress_model(model, qp=-30).bitstream
    float_model = decode_bitstream(bitstream)
    quantized_model = decode_bitstream(bitstream, quantized=True)
    onnx.checker.check_model(quantized_model)
    ops = [node.op_type for _, graph in onnx_io.iter_graphs(quantized_model.graph) for node in graph.node]
    assert "DequantizeLinear" in ops
    for expected, actual in zip(onnx_builders.run(float_model, feeds), onnx_builders.run(quantized_model, feeds)):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_bits_per_param_target_is_met():
    model, _ = onnx_builders.lstm(hidden=32)
    params = sum(r.array.size for r in onnx_io.find_float_tensors(model).values())
    for target in (3.0, 6.0):
        result = encoder.compress_model(model, qp=None, bits_per_param=target)
        coded = sum(row["bytes"] for row in result.rows)
        assert 8 * coded / params <= target * 1.02
        finer = encoder.plan_tensors(model, encoder.qp_for_bits_per_param(model, target) - 1)
        assert encoder.estimated_bits(finer) / params > target


def test_inspect_lists_every_tensor():
    model, _ = onnx_builders.conv_bn_gemm()
    result = encoder.compress_model(model, qp=-30)
    facts = inspect_bitstream(result.bitstream)
    assert [row["name"] for row in facts["tensors"]] == [row["name"] for row in result.rows]
    assert facts["bytes"] == len(result.bitstream)
    by_name = {row["name"]: row for row in facts["tensors"]}
    assert by_name["conv.weight"]["role"] == "conv_kernel" and by_name["conv.weight"]["shape"] == [16, 3, 3, 3]
    assert by_name["conv.weight"]["step"] == pytest.approx(2.0 ** -7.5 * 1.0, rel=0.2)


@pytest.mark.parametrize("kind", ["scalar", "channel", "dct"])
def test_latent_tensors_decode_through_the_documented_decoder(kind):
    from nnlc.decoder import latents

    model, feeds = onnx_builders.conv_bn_gemm()
    decoder = {"scalar": latents.SCALAR, "channel": latents.CHANNEL, "dct": latents.DCT}[kind]
    rng = np.random.default_rng(0)
    planned = []
    for item in encoder.plan_tensors(model, qp=-30):
        if item.record.name == "conv.weight":
            shape = item.record.array.shape
            steps = rng.uniform(0.01, 0.05, latents.step_count(decoder, shape)).astype(np.float32)
            symbols = rng.integers(-20, 21, shape).astype(np.int64)
            item = encoder.CodedTensor(item.record, encoder.LATENT, symbols=symbols.ravel(), latent_decoder=decoder,
                                       steps=steps)
            expected = latents.decode_latents(decoder, symbols, steps)
        planned.append(item)
    bitstream = encoder.write_bitstream(model, planned).bitstream
    decoded = decode_bitstream(bitstream)
    np.testing.assert_array_equal(onnx_io.find_float_tensors(decoded)["conv.weight"].array, expected)
    quantized = decode_bitstream(bitstream, quantized=True)
    names = [node.name for node in quantized.graph.node if node.op_type == "DequantizeLinear"]
    assert ("conv.weight__dequantize" in names) == (kind != "dct")
    np.testing.assert_allclose(onnx_builders.run(quantized, feeds)[0], onnx_builders.run(decoded, feeds)[0],
                               rtol=1e-5, atol=1e-5)
    row = next(r for r in inspect_bitstream(bitstream)["tensors"] if r["name"] == "conv.weight")
    assert row["mode"] == "latent" and row["step"] > 0
