"""Writes the fuzzing seed corpus (fuzz/corpus/*.nnlc): small valid bitstreams covering every path.

Run from the repository root: `python fuzz/make_corpus.py`. The seeds come from the models of
tests/onnx_builders.py (several qps, topology on and off, quantized and lossless tensors, zlib raw
data, raw offset bits), latent tensors of the three decoders, integer tensors, escaped symbols,
Constant `value_float(s)` storage, an int8 QDQ conv, fp16 / bf16 weights and generated (mode 4) DFT
bases, with and without a residual, and a lookup table in row groups (mode 5).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import onnx_builders  # noqa: E402
from nnlc import encoder, onnx_io  # noqa: E402
from nnlc.coding.binning import Binning  # noqa: E402
from nnlc.coding.symbols import CodingPlan  # noqa: E402
from nnlc.coding.tables import table_from_counts  # noqa: E402
from nnlc.decoder import latents  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"


def _matmul_model(weight: np.ndarray | onnx.TensorProto, data_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    proto = weight if isinstance(weight, onnx.TensorProto) else numpy_helper.from_array(weight, "w")
    rows, columns = proto.dims
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", data_type, [1, rows])],
                              [helper.make_tensor_value_info("y", data_type, [1, columns])], [proto])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def constant_storage_model() -> onnx.ModelProto:
    """Constant nodes with `value_float` and `value_floats` attributes, and an int32 Gather table."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Constant", [], ["alpha"], value_float=0.5),
        helper.make_node("Constant", [], ["offsets"], value_floats=rng.standard_normal(24).astype(np.float32).tolist()),
        helper.make_node("Gather", ["table", "i"], ["g"]),
        helper.make_node("Cast", ["g"], ["gf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["gf", "alpha"], ["m"]),
        helper.make_node("Add", ["m", "offsets"], ["y"]),
    ]
    table = numpy_helper.from_array(rng.integers(-300, 300, (40, 24)).astype(np.int32), "table")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 24])], [table])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def qdq_model() -> onnx.ModelProto:
    """An already-quantized conv: int8 weights, per-channel scales and zero points (QDQ)."""
    rng = np.random.default_rng(9)
    initializers = [
        numpy_helper.from_array(rng.integers(-127, 128, (24, 4, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(rng.uniform(0.001, 0.02, 24).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(24, np.int8), "w_zero"),
    ]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 3, 3])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def latent_bitstream(kind: int) -> bytes:
    """conv_bn_gemm with conv.weight as a latent tensor of the given decoder (as in tests/test_codec.py)."""
    model, _ = onnx_builders.conv_bn_gemm()
    rng = np.random.default_rng(kind)
    planned = []
    for item in encoder.plan_tensors(model, qp=-30):
        if item.record.name == "conv.weight":
            shape = item.record.array.shape
            steps = rng.uniform(0.01, 0.05, latents.step_count(kind, shape)).astype(np.float32)
            symbols = rng.integers(-20, 21, shape).astype(np.int64)
            item = encoder.CodedTensor(item.record, encoder.LATENT, symbols=symbols.ravel(), latent_decoder=kind,
                                       steps=steps)
        planned.append(item)
    return encoder.write_bitstream(model, planned).bitstream


def escape_bitstream() -> bytes:
    """A quantized tensor coded with a table that misses its outliers, so they are escaped."""
    rng = np.random.default_rng(7)
    weight = rng.laplace(0, 0.05, (24, 32)).astype(np.float32)
    weight[0, :5] = [3.0, -4.0, 5.5, -2.5, 7.0]
    model = _matmul_model(weight)
    planned = []
    for item in encoder.plan_tensors(model, qp=-36):
        if item.record.name == "w":
            binning = Binning(3, 1)
            counts = np.ones(21, dtype=np.int64)
            counts[10] = 50
            table = table_from_counts(-10, counts, 12, escape_count=2)
            item.coding_plan = CodingPlan(binning, table, 0.0, 0, 0.0)
        planned.append(item)
    return encoder.write_bitstream(model, planned).bitstream


def half_precision_bitstreams() -> dict[str, bytes]:
    rng = np.random.default_rng(8)
    values = (rng.standard_normal((16, 24)) * 0.1).astype(np.float32)
    float16 = _matmul_model(values.astype(np.float16), TensorProto.FLOAT16)
    bfloat16 = _matmul_model(helper.make_tensor("w", TensorProto.BFLOAT16, [16, 24], values.ravel().tolist()),
                             TensorProto.BFLOAT16)
    return {
        "fp16_quantized": encoder.compress_model(float16, qp=-30).bitstream,
        "fp16_lossless": encoder.compress_model(float16, lossless_names=["w"]).bitstream,
        "bf16_quantized": encoder.compress_model(bfloat16, qp=-30).bitstream,
        "bf16_lossless": encoder.compress_model(bfloat16, lossless_names=["w"]).bitstream,
    }


def generated_bitstreams() -> dict[str, bytes]:
    """STFT convs whose basis is generated (mode 4): exactly (no residual), and built with numpy's
    float64 cos and sin, whose roundings and non-zero values at the zeros of cos and sin leave a residual."""
    n_fft = 32
    angles = 2 * np.pi * np.outer(np.arange(n_fft // 2 + 1), np.arange(n_fft)) / n_fft
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    noisy = (np.concatenate([np.cos(angles), -np.sin(angles)]) * window).astype(np.float32)[:, None, :]
    return {"generated_dft_basis": encoder.compress_model(onnx_builders.stft_conv(onnx_builders.fft_basis(n_fft))[0],
                                                          qp=-30).bitstream,
            "generated_dft_basis_residual": encoder.compress_model(onnx_builders.stft_conv(noisy)[0], qp=-30).bitstream}


def grouped_bitstream() -> bytes:
    """A lookup table whose rows fall into three step groups (mode 5, format 1.3), one group unused."""
    table = np.random.default_rng(5).normal(size=(24, 6)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "lookup",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 6])],
                              [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    steps = np.array([0.01, 0.2, 0.05, 1.5], np.float32)
    row_groups = np.array([0, 1, 3] * 8)
    integers = np.rint(table / steps[row_groups][:, None]).astype(np.int64)
    record = onnx_io.find_tensors(model)["table"]
    return encoder.write_bitstream(model, [encoder.CodedTensor(record, encoder.GROUPED, symbols=integers.ravel(),
                                                               steps=steps, row_groups=row_groups)]).bitstream


def dependent_bitstream() -> bytes:
    """A transposed MatMul weight with dependent quantization (mode 6, format 1.4), rows along its columns."""
    from nnlc.calibrated import dependent

    weight = np.random.default_rng(6).laplace(size=(12, 5)).astype(np.float32) * 0.3
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "dense",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5])],
                              [numpy_helper.from_array(weight, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    step = np.float32(0.05)
    integers = dependent.quantize_layer(weight.T[None].astype(np.float64), float(step), None)[0].T  # [12, 5]
    record = onnx_io.find_tensors(model)["W"]
    item = encoder.CodedTensor(record, encoder.DEPENDENT, step, np.ascontiguousarray(integers).ravel(), row_length=12,
                               transposed=True)
    return encoder.write_bitstream(model, [item]).bitstream


def seeds() -> dict[str, bytes]:
    """Name -> bitstream of every seed."""
    found: dict[str, bytes] = {}
    for name, build in sorted(onnx_builders.ALL_MODELS.items()):
        model, _ = build()
        for qp in (-40, -20):
            found[f"{name}_qp{-qp}"] = encoder.compress_model(model, qp=qp).bitstream
        found[f"{name}_no_topology"] = encoder.compress_model(model, qp=-30, carry_topology=False).bitstream
    conv, _ = onnx_builders.conv_bn_gemm()
    found["conv_bn_gemm_raw_bits_qp64"] = encoder.compress_model(conv, qp=-64).bitstream
    found["conv_bn_gemm_coarse_qp4"] = encoder.compress_model(conv, qp=4).bitstream
    found["conv_bn_gemm_lossless_zlib"] = encoder.compress_model(conv, lossless_names=[".*"]).bitstream
    for kind, kind_name in latents.KIND_NAMES.items():
        found[f"latent_{kind_name}"] = latent_bitstream(kind)
    found["escapes"] = escape_bitstream()
    found["constant_storage_and_integer"] = encoder.compress_model(constant_storage_model(), qp=-30).bitstream
    found["qdq_int8_conv"] = encoder.compress_model(qdq_model(), qp=-30).bitstream
    found.update(half_precision_bitstreams())
    found.update(generated_bitstreams())
    found["grouped_rows"] = grouped_bitstream()
    found["dependent_transposed"] = dependent_bitstream()
    return found


def regressions() -> dict[str, bytes]:
    """Inputs that made the decoder let another exception than BitstreamError escape, found by review
    (fuzz/crashes/review-*; the fuzzer's own findings are saved there under their signature)."""
    from nnlc.bitstream.container import read_container, write_container
    from nnlc.bitstream.syntax import read_exact, write_fields

    units = [(unit.type, bytes(unit.payload)) for unit in read_container(seeds()["constant_storage_and_integer"])]
    for position, (unit_type, payload) in enumerate(units):
        fields = read_exact("tensor", payload) if unit_type == 3 else None
        if fields is not None and fields["onnx_name"] == "alpha":  # a Constant value_float: 0-d
            fields["shape"] = [2]  # with 2 elements of raw data the old decoder failed in replace_tensors
            fields["body"] = write_fields("tensor_raw", {"compression": 0, "data": bytes(8)})
            units[position] = (unit_type, write_fields("tensor", fields))
    return {"review-value-float-with-two-elements": write_container(units)}


def main() -> None:
    CORPUS.mkdir(parents=True, exist_ok=True)
    for name, bitstream in seeds().items():
        (CORPUS / f"{name}.nnlc").write_bytes(bitstream)
        print(f"{name}: {len(bitstream)} bytes")
    crashes = CORPUS.parent / "crashes"
    crashes.mkdir(exist_ok=True)
    for name, bitstream in regressions().items():
        (crashes / name).write_bytes(bitstream)
        print(f"crashes/{name}: {len(bitstream)} bytes")


if __name__ == "__main__":
    main()
