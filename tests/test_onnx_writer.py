"""The streaming ONNX writer: files parse to exactly the model onnx.save would write."""

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_builders
from nnlc import encoder, onnx_io
from nnlc.decoder import decode_bitstream
from nnlc.decoder.files import decode_file
from nnlc.decoder.onnx_writer import spliced_pieces, varint, write_pieces
from nnlc.errors import ModelError


def _mixed_model() -> onnx.ModelProto:
    """Initializers of several dtypes (one with a doc_string), an integer one, a Constant in an If."""
    rng = np.random.default_rng(0)
    initializers = [
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w32"),
        numpy_helper.from_array(rng.standard_normal((3,)).astype(np.float16), "w16"),
        numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((3,)).astype(np.float64), "w64"),
    ]
    initializers[0].doc_string = "kept by neither writer"
    bf16 = helper.make_tensor("wbf", TensorProto.BFLOAT16, [3], rng.standard_normal(3).astype(np.float32).tolist())
    initializers.append(bf16)
    branch = helper.make_graph([helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
        rng.standard_normal((2,)).astype(np.float32), "c"))], "then", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=copy.deepcopy(branch))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 1 << 35, (1 << 63) - 1])
def test_varint_matches_protobuf(value):
    tensor = onnx.TensorProto(dims=[value])  # dims is a non-packed repeated int64 (proto2): tag 0x08, varint
    assert tensor.SerializeToString() == b"\x08" + varint(value)


def test_spliced_file_parses_to_the_model_onnx_save_writes(tmp_path):
    model = _mixed_model()
    rng = np.random.default_rng(1)
    values = {"w32": rng.standard_normal((4, 3)).astype(np.float32), "w16": rng.standard_normal(3).astype(np.float32),
              "w64": rng.standard_normal(3), "wbf": np.array([1.0, -2.5, 3e-3], dtype=np.float32)}
    expected = onnx_io.replace_tensors(model, values)
    pieces, length = spliced_pieces(copy.deepcopy(model), values)
    path = tmp_path / "spliced.onnx"
    with open(path, "wb") as stream:
        write_pieces(stream, pieces)
    assert path.stat().st_size == length
    parsed = onnx.load(str(path))
    assert parsed.SerializeToString() == expected.SerializeToString()
    assert [t.name for t in parsed.graph.initializer] == ["w32", "w16", "shape", "w64", "wbf"]
    assert parsed.graph.initializer[1].data_type == TensorProto.FLOAT16
    onnx.checker.check_model(str(path))


def test_spliced_writer_refuses_unknown_names_and_shapes():
    model = _mixed_model()
    with pytest.raises(ModelError, match="no initializer named"):
        spliced_pieces(copy.deepcopy(model), {"nope": np.zeros(3, np.float32)})
    with pytest.raises(ModelError, match="shape"):
        spliced_pieces(copy.deepcopy(model), {"w32": np.zeros(3, np.float32)})


@pytest.mark.parametrize("build", [onnx_builders.conv_bn_gemm, onnx_builders.lstm, onnx_builders.if_constants])
def test_decode_file_output_equals_in_memory_decoding(tmp_path, build):
    model, feeds = build()
    bitstream = tmp_path / "m.nnlc"
    bitstream.write_bytes(encoder.compress_model(model, qp=-36).bitstream)
    output = tmp_path / "decoded.onnx"
    written = decode_file(str(bitstream), str(output), quiet=True)
    assert written == output.stat().st_size
    in_memory = decode_bitstream(bitstream.read_bytes())
    assert onnx.load(str(output)).SerializeToString() == in_memory.SerializeToString()
    import onnxruntime as ort

    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    for actual, wanted in zip(session.run(None, feeds), onnx_builders.run(in_memory, feeds)):
        np.testing.assert_array_equal(actual, wanted)
