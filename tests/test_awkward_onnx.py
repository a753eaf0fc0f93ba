"""Awkward ONNX models: external data, no float weights, shared weights, fp16/bf16, QDQ graphs, opsets."""

import copy
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_builders
from nnlc import encoder, onnx_io
from nnlc.decoder import decode_bitstream
from nnlc.decoder.files import decode_file, save_model
from nnlc.errors import ModelError


def _session(model_or_path):
    import onnxruntime

    source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])


def _graph_without_data(model: onnx.ModelProto) -> bytes:
    names = set(onnx_io.find_tensors(model, include_integer=True))
    return onnx_io.strip_tensors(model, names).graph.SerializeToString(deterministic=True)


def _model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "awkward", inputs, outputs, list(initializers))
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


# ----------------------------------------------------------------------------- external data


def test_external_data_on_read(tmp_path):
    model, feeds = onnx_builders.conv_bn_gemm()
    path = tmp_path / "external.onnx"
    onnx.save(copy.deepcopy(model), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    loaded = onnx_io.load_model(path)
    assert not onnx_io.external_data_tensors(loaded)
    decoded = decode_bitstream(encoder.compress_model(loaded, qp=-40).bitstream)
    np.testing.assert_allclose(onnx_builders.run(decoded, feeds)[0], onnx_builders.run(model, feeds)[0], atol=5e-3)
    (tmp_path / "weights.bin").rename(tmp_path / "moved.bin")
    with pytest.raises(ModelError, match="cannot read its external data"):
        onnx_io.load_model(path)


def test_topology_is_refused_when_external_data_was_not_loaded(tmp_path):
    model, _ = onnx_builders.conv_bn_gemm()
    path = tmp_path / "external.onnx"
    onnx.save(copy.deepcopy(model), str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    unloaded = onnx_io.load_model(path, load_external_data=False)
    with pytest.raises(ModelError, match="external file that was not loaded"):
        encoder.compress_model(unloaded, qp=-30)


@pytest.mark.parametrize("how", ["asked", "over_threshold", "cli"])
def test_external_data_on_write(tmp_path, how):
    model, feeds = onnx_builders.lstm()
    bitstream = tmp_path / "m.nnlc"
    bitstream.write_bytes(encoder.compress_model(model, qp=-40).bitstream)
    output = tmp_path / "decoded.onnx"
    if how == "asked":
        decode_file(str(bitstream), str(output), quiet=True, external_data=True)
    elif how == "over_threshold":  # the 2 GiB rule, with a threshold this small model exceeds
        decode_file(str(bitstream), str(output), quiet=True, external_threshold=10_000)
    else:
        subprocess.run([sys.executable, "-m", "nnlc.decoder", str(bitstream), "-o", str(output), "--external_data",
                        "--quiet"], check=True)
    data = tmp_path / "decoded.onnx.data"
    assert data.stat().st_size > 2 * 64 * 6 * 4 and output.stat().st_size < 4000
    header_only = onnx.load(str(output), load_external_data=False)
    locations = {entry.value for tensor in header_only.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    assert locations == {"decoded.onnx.data"}
    onnx.checker.check_model(str(output))
    in_memory = decode_bitstream(bitstream.read_bytes())
    for expected, actual in zip(onnx_builders.run(in_memory, feeds), _session(str(output)).run(None, feeds)):
        np.testing.assert_array_equal(actual, expected)


def test_small_models_stay_in_one_file(tmp_path):
    model, _ = onnx_builders.depthwise()
    save_model(model, str(tmp_path / "small.onnx"))
    assert [path.name for path in tmp_path.iterdir()] == ["small.onnx"]


# ----------------------------------------------------------------------------- no float weights


def test_model_without_any_initializer():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    result = encoder.compress_model(model, qp=-30)
    assert result.rows == []
    decoded = decode_bitstream(result.bitstream)
    assert decoded.graph.SerializeToString(deterministic=True) == model.graph.SerializeToString(deterministic=True)


def test_model_with_only_integer_tensors(tmp_path):
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.integers(-50, 50, (20, 8)).astype(np.int64), "table")
    shape = numpy_helper.from_array(np.array([4, 40], np.int64), "shape")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["g"]), helper.make_node("Reshape", ["g", "shape"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, [4, 5])],
                   [helper.make_tensor_value_info("y", TensorProto.INT64, [4, 40])], [table, shape])
    result = encoder.compress_model(model)
    assert [(row["name"], row["mode"]) for row in result.rows] == [("table", "integer")]  # 'shape' stays in topology
    decoded = decode_bitstream(result.bitstream)
    assert decoded.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)
    path = tmp_path / "ints.onnx"
    onnx.save(model, str(path))
    cli = subprocess.run([sys.executable, "-m", "nnlc.cli", "compress", str(path), "-o", str(tmp_path / "m.nnlc")],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr


# ----------------------------------------------------------------------------- one weight, two ops


def _tied_embedding(gather_first: bool) -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(3)
    weight = numpy_helper.from_array((rng.standard_normal((40, 24)) * 0.1).astype(np.float32), "tied")
    gather = helper.make_node("Gather", ["tied", "ids"], ["embedded"])
    matmul = helper.make_node("MatMul", ["tied", "h"], ["scores"])  # [40, 24] x [24, 3]
    nodes = [gather, matmul] if gather_first else [matmul, gather]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, [5]),
              helper.make_tensor_value_info("h", TensorProto.FLOAT, [24, 3])]
    outputs = [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [5, 24]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [40, 3])]
    feeds = {"ids": np.array([0, 3, 39, 7, 3]), "h": rng.standard_normal((24, 3)).astype(np.float32)}
    return _model(nodes, inputs, outputs, [weight]), feeds


@pytest.mark.parametrize("gather_first, role", [(True, "embedding"), (False, "dense")])
def test_weight_shared_by_two_ops(gather_first, role):
    model, feeds = _tied_embedding(gather_first)
    assert onnx_io.find_float_tensors(model)["tied"].role == role  # the first consumer decides
    result = encoder.compress_model(model, qp=-36)
    assert [(row["name"], row["role"]) for row in result.rows] == [("tied", role)]
    decoded = decode_bitstream(result.bitstream)
    assert _graph_without_data(decoded) == _graph_without_data(model)
    embedded, scores = onnx_builders.run(decoded, feeds)
    tied = onnx_io.find_float_tensors(decoded)["tied"].array
    np.testing.assert_array_equal(embedded, tied[feeds["ids"]])  # both ops read the one decoded tensor
    np.testing.assert_allclose(scores, tied @ feeds["h"], rtol=1e-5, atol=1e-6)
    exact = decode_bitstream(encoder.compress_model(model, lossless_names=["tied"]).bitstream)
    assert exact.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)


# ----------------------------------------------------------------------------- fp16 and bf16


def _half_model(data_type: int) -> tuple[onnx.ModelProto, np.ndarray]:
    values = (np.random.default_rng(4).standard_normal((32, 48)) * 0.3).astype(np.float32)
    values[0, :3] = [1000.0, -1e-3, 65000.0 if data_type == TensorProto.FLOAT16 else 3e38]
    weight = helper.make_tensor("w", data_type, values.shape, values.ravel().tolist())
    bias = helper.make_tensor("b", data_type, [48], (values[1] * 0.1).tolist())
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", data_type, [1, 32])],
                   [helper.make_tensor_value_info("y", data_type, [1, 48])], [weight, bias])
    return model, values


@pytest.mark.parametrize("data_type", [TensorProto.FLOAT16, TensorProto.BFLOAT16], ids=["fp16", "bf16"])
def test_half_precision_weights(data_type):
    model, _ = _half_model(data_type)
    original = onnx_io.find_float_tensors(model)
    result = encoder.compress_model(model, qp=-30)
    steps = {row["name"]: row["step"] for row in result.rows}
    decoded_model = decode_bitstream(result.bitstream)
    assert [tensor.data_type for tensor in decoded_model.graph.initializer] == [data_type, data_type]
    for name, record in onnx_io.find_float_tensors(decoded_model).items():
        reference = original[name].array.astype(np.float32)
        actual = record.array.astype(np.float32)
        assert record.array.dtype == original[name].array.dtype
        # float32 reconstruction within step / 2, then one rounding to the tensor's type (half an ulp)
        half_ulp = np.abs(reference) * (2.0 ** -11 if data_type == TensorProto.FLOAT16 else 2.0 ** -8)
        if steps[name] is None:  # stored raw: exact
            assert record.array.tobytes() == original[name].array.tobytes()
        else:
            assert np.all(np.abs(actual - reference) <= steps[name] / 2 * (1 + 1e-6) + half_ulp + 1e-30)
    assert {row["name"]: row["mode"] for row in result.rows}["w"] == "quantized"
    lossless = decode_bitstream(encoder.compress_model(model, lossless_names=[".*"]).bitstream)
    assert _graph_without_data(lossless) == _graph_without_data(model)
    for name, record in onnx_io.find_float_tensors(lossless).items():  # the same bits (stored as raw_data)
        assert record.array.tobytes() == original[name].array.tobytes()


def test_fp16_model_runs_after_decoding():
    model, _ = _half_model(TensorProto.FLOAT16)
    feeds = {"x": np.random.default_rng(5).standard_normal((1, 32)).astype(np.float16) * np.float16(0.01)}
    decoded = decode_bitstream(encoder.compress_model(model, qp=-40).bitstream)
    expected, actual = _session(model).run(None, feeds)[0], _session(decoded).run(None, feeds)[0]
    assert actual.dtype == np.float16
    np.testing.assert_allclose(actual.astype(np.float32), expected.astype(np.float32), rtol=0.02, atol=0.05)


# ----------------------------------------------------------------------------- already-quantized (QDQ) graphs


def _qdq_conv(channels: int = 72) -> tuple[onnx.ModelProto, dict]:
    rng = np.random.default_rng(6)
    initializers = [
        numpy_helper.from_array(rng.integers(-127, 128, (channels, 8, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(rng.uniform(0.001, 0.02, channels).astype(np.float32), "w_scale"),
        numpy_helper.from_array(rng.integers(-3, 4, channels).astype(np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(3, np.uint8), "x_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=0),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["y"], pads=[1, 1, 1, 1]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 6, 6])], initializers, opset=13)
    return model, {"x": rng.standard_normal((1, 8, 6, 6)).astype(np.float32)}


@pytest.mark.parametrize("quantized_output", [False, True])
def test_qdq_graph_is_coded_exactly(quantized_output):
    model, feeds = _qdq_conv()
    result = encoder.compress_model(model, qp=-8)  # a coarse qp: nothing here may be quantized anyway
    modes = {row["name"]: (row["mode"], row["role"]) for row in result.rows}
    assert modes == {"w_q": ("integer", "other"), "w_scale": ("raw", "quantization"),
                     "w_zero": ("integer", "quantization"), "x_scale": ("raw", "quantization")}
    decoded = decode_bitstream(result.bitstream, quantized=quantized_output)
    assert decoded.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)
    np.testing.assert_array_equal(onnx_builders.run(decoded, feeds)[0], onnx_builders.run(model, feeds)[0])


# ----------------------------------------------------------------------------- opsets


def _conv_bn_gemm_at(opset: int) -> tuple[onnx.ModelProto, dict]:
    model, feeds = onnx_builders.conv_bn_gemm()
    return _model(list(model.graph.node), list(model.graph.input), list(model.graph.output),
                  list(model.graph.initializer), opset=opset), feeds


def _onnxruntime_runs_dequantize_linear(opset: int) -> bool:
    """onnxruntime may lag the newest opset's DequantizeLinear (1.32 has no kernel for opset 28)."""
    scale = numpy_helper.from_array(np.array(0.5, np.float32), "s")
    model = _model([helper.make_node("DequantizeLinear", ["q", "s"], ["y"])], [],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                   [numpy_helper.from_array(np.array([1, 2], np.int8), "q"), scale], opset=opset)
    try:
        _session(model)
    except Exception as error:  # onnxruntime's NOT_IMPLEMENTED
        return "NOT_IMPLEMENTED" not in str(error)
    return True


@pytest.mark.parametrize("opset", sorted({11, 12, 13, 15, 17, 19, 21, 23, onnx.defs.onnx_opset_version()}))
def test_opsets_round_trip_and_run(opset):
    model, feeds = _conv_bn_gemm_at(opset)
    bitstream = encoder.compress_model(model, qp=-40).bitstream
    expected = onnx_builders.run(model, feeds)[0]
    for quantized_output in (False, True):
        decoded = decode_bitstream(bitstream, quantized=quantized_output)
        onnx.checker.check_model(decoded)
        assert [entry.version for entry in decoded.opset_import] == [opset]
        assert decoded.ir_version == model.ir_version
        if quantized_output and not _onnxruntime_runs_dequantize_linear(opset):
            continue
        actual = _session(decoded).run(None, feeds)[0]
        np.testing.assert_allclose(actual, expected, rtol=0.02, atol=0.02)
