"""nnlc.onnx_io: finding tensors wherever ONNX keeps them, roles, writing values back."""

import numpy as np
import onnx
import pytest

import onnx_builders
from nnlc import onnx_io
from nnlc.errors import ModelError


def test_roles_follow_the_consuming_op():
    model, _ = onnx_builders.conv_bn_gemm()
    roles = {name: record.role for name, record in onnx_io.find_float_tensors(model).items()}
    assert roles == {"conv.weight": "conv_kernel", "conv.bias": "bias", "bn.scale": "normalization",
                     "bn.bias": "normalization", "bn.mean": "normalization", "bn.var": "normalization",
                     "fc.weight": "dense", "fc.bias": "bias"}


@pytest.mark.parametrize("builder, expected", [
    (onnx_builders.depthwise, {"dw.weight": "depthwise_kernel", "pw.weight": "conv_kernel"}),
    (onnx_builders.lstm, {"lstm.W": "recurrent_w", "lstm.R": "recurrent_r", "lstm.B": "recurrent_b"}),
    (onnx_builders.attention, {"wq": "dense", "bo": "bias", "ln.scale": "normalization", "scale": "other"}),
])
def test_roles_of_other_layers(builder, expected):
    model, _ = builder()
    records = onnx_io.find_float_tensors(model)
    for name, role in expected.items():
        assert records[name].role == role


def test_constants_inside_if_branches_get_prefixed_names():
    model, _ = onnx_builders.if_constants()
    records = onnx_io.find_float_tensors(model)
    assert "If_2/then_branch/then_w" in records
    record = records["If_2/else_branch/else_w"]
    assert record.storage == onnx_io.CONSTANT_TENSOR and record.role == "conv_kernel"
    assert record.graph_path == "If_2/else_branch" and record.onnx_name == "else_w"
    # the int64 threshold is not a float tensor
    assert "threshold" not in records and "threshold" in onnx_io.find_tensors(model, include_integer=True)


def test_replace_then_find_gives_the_new_values_and_keeps_the_rest():
    model, _ = onnx_builders.if_constants()
    records = onnx_io.find_float_tensors(model)
    new = {name: record.array + 1 for name, record in records.items()}
    replaced = onnx_io.replace_tensors(model, new)
    onnx.checker.check_model(replaced)
    for name, record in onnx_io.find_float_tensors(replaced).items():
        np.testing.assert_array_equal(record.array, new[name])
    # the original is untouched
    np.testing.assert_array_equal(onnx_io.find_float_tensors(model)["If_2/then_branch/then_w"].array,
                                  records["If_2/then_branch/then_w"].array)


def test_replace_rejects_unknown_names_and_shape_changes():
    model, _ = onnx_builders.conv_bn_gemm()
    with pytest.raises(ModelError, match="no tensor named"):
        onnx_io.replace_tensors(model, {"nope": np.zeros(1)})
    with pytest.raises(ModelError, match="shape"):
        onnx_io.replace_tensors(model, {"conv.bias": np.zeros(3, np.float32)})


def test_value_float_and_value_floats_constants():
    nodes = [onnx.helper.make_node("Constant", [], ["a"], value_float=0.5),
             onnx.helper.make_node("Constant", [], ["b"], value_floats=[1.0, 2.0, 3.0]),
             onnx.helper.make_node("Mul", ["x", "a"], ["xa"]),
             onnx.helper.make_node("Add", ["xa", "b"], ["y"])]
    graph = onnx.helper.make_graph(nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    records = onnx_io.find_float_tensors(model)
    assert records["a"].storage == onnx_io.CONSTANT_FLOAT and records["a"].array.shape == ()
    assert records["b"].storage == onnx_io.CONSTANT_FLOATS
    replaced = onnx_io.replace_tensors(model, {"a": np.float32(0.25), "b": np.array([4, 5, 6], np.float32)})
    found = onnx_io.find_float_tensors(replaced)
    assert float(found["a"].array) == 0.25 and found["b"].array.tolist() == [4, 5, 6]


def test_strip_removes_data_but_keeps_shapes():
    model, _ = onnx_builders.conv_bn_gemm()
    stripped = onnx_io.strip_tensors(model, {"conv.weight", "fc.bias"})
    assert len(stripped.SerializeToString()) < len(model.SerializeToString()) - 16 * 27 * 4
    assert onnx_io.slot_shapes(stripped)["conv.weight"] == ((16, 3, 3, 3), onnx.TensorProto.FLOAT, onnx_io.INITIALIZER)


def test_external_data_is_read(tmp_path):
    model, _ = onnx_builders.conv_bn_gemm()
    expected = onnx_io.find_float_tensors(model)
    path = tmp_path / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    loaded = onnx_io.load_model(path)
    for name, record in onnx_io.find_float_tensors(loaded).items():
        np.testing.assert_array_equal(record.array, expected[name].array)


@pytest.mark.parametrize("content, message", [(None, "no such file"), (b"not a model at all", "not an ONNX model")])
def test_load_errors_are_one_line(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message) as error:
        onnx_io.load_model(path)
    assert "\n" not in str(error.value)
