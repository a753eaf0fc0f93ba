"""Small ONNX models built in code for the codec tests (no files, no ../shared)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _weights(rng, shape, scale=0.2):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes, inputs, outputs, initializers, opset=17, name="test"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def conv_bn_gemm(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Conv -> BatchNorm -> Relu -> GlobalAveragePool -> Flatten -> Gemm, plus an int64 shape tensor."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_weights(rng, (16, 3, 3, 3)), "conv.weight"),
        numpy_helper.from_array(_weights(rng, (16,), 0.1), "conv.bias"),
        numpy_helper.from_array((1 + 0.1 * rng.standard_normal(16)).astype(np.float32), "bn.scale"),
        numpy_helper.from_array(_weights(rng, (16,), 0.1), "bn.bias"),
        numpy_helper.from_array(_weights(rng, (16,), 0.1), "bn.mean"),
        numpy_helper.from_array((1 + rng.random(16)).astype(np.float32), "bn.var"),
        numpy_helper.from_array(_weights(rng, (10, 16)), "fc.weight"),
        numpy_helper.from_array(_weights(rng, (10,), 0.1), "fc.bias"),
        numpy_helper.from_array(np.array([-1, 16], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b"]),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Reshape", ["g", "flat_shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])], inits)
    return model, {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}


def depthwise(seed: int = 1) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Depthwise 3x3 conv (group = channels) followed by a pointwise conv and Clip (ReLU6)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_weights(rng, (8, 1, 3, 3), 0.3), "dw.weight"),
        numpy_helper.from_array(_weights(rng, (8,), 0.1), "dw.bias"),
        numpy_helper.from_array(_weights(rng, (12, 8, 1, 1), 0.3), "pw.weight"),
        numpy_helper.from_array(np.array(0.0, np.float32), "clip.min"),
        numpy_helper.from_array(np.array(6.0, np.float32), "clip.max"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "dw.weight", "dw.bias"], ["d"], group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["d", "clip.min", "clip.max"], ["c"]),
        helper.make_node("Conv", ["c", "pw.weight"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, 10, 10])], inits)
    return model, {"x": rng.standard_normal((1, 8, 10, 10)).astype(np.float32)}


def lstm(seed: int = 2, hidden: int = 16, features: int = 6) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Bidirectional LSTM with packed W, R, B and initial states given as inputs."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(_weights(rng, (2, 4 * hidden, features)), "lstm.W"),
        numpy_helper.from_array(_weights(rng, (2, 4 * hidden, hidden)), "lstm.R"),
        numpy_helper.from_array(_weights(rng, (2, 8 * hidden), 0.1), "lstm.B"),
    ]
    nodes = [helper.make_node("LSTM", ["x", "lstm.W", "lstm.R", "lstm.B", "", "h0", "c0"], ["y", "h", "c"],
                              hidden_size=hidden, direction="bidirectional")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, features]),
              helper.make_tensor_value_info("h0", TensorProto.FLOAT, [2, 1, hidden]),
              helper.make_tensor_value_info("c0", TensorProto.FLOAT, [2, 1, hidden])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 2, 1, hidden]),
               helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 1, hidden]),
               helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, 1, hidden])]
    model = _model(nodes, inputs, outputs, inits)
    feeds = {"x": rng.standard_normal((5, 1, features)).astype(np.float32),
             "h0": 0.1 * rng.standard_normal((2, 1, hidden)).astype(np.float32),
             "c0": 0.1 * rng.standard_normal((2, 1, hidden)).astype(np.float32)}
    return model, feeds


def attention(seed: int = 3, width: int = 16, length: int = 5) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Single-head self-attention + LayerNorm with a -inf mask constant and a 0-d scale constant."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(_weights(rng, (width, width)), name) for name in ("wq", "wk", "wv", "wo")]
    inits += [numpy_helper.from_array(_weights(rng, (width,), 0.05), "bo"),
              numpy_helper.from_array(np.ones(width, np.float32), "ln.scale"),
              numpy_helper.from_array(np.zeros(width, np.float32), "ln.bias")]
    mask = np.zeros((1, length, length), np.float32)
    mask[0][np.triu_indices(length, 1)] = -np.inf
    nodes = [
        helper.make_node("Constant", [], ["scale"], value=numpy_helper.from_array(np.array(0.25, np.float32))),
        helper.make_node("Constant", [], ["mask"], value=numpy_helper.from_array(mask)),
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["ss"]),
        helper.make_node("Add", ["ss", "mask"], ["sm"]),
        helper.make_node("Softmax", ["sm"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "v"], ["o"]),
        helper.make_node("MatMul", ["o", "wo"], ["p"]),
        helper.make_node("Add", ["p", "bo"], ["pb"]),
        helper.make_node("Add", ["pb", "x"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "ln.scale", "ln.bias"], ["y"], axis=-1),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, length, width])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, length, width])], inits)
    return model, {"x": rng.standard_normal((2, length, width)).astype(np.float32)}


def if_constants(seed: int = 4) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """All weights in Constant nodes inside the branches of an If (like silero_vad.onnx)."""
    rng = np.random.default_rng(seed)

    def branch(name, scale):
        nodes = [
            helper.make_node("Constant", [], [f"{name}_w"], value=numpy_helper.from_array(_weights(rng, (6, 4, 3), scale))),
            helper.make_node("Constant", [], [f"{name}_b"], value=numpy_helper.from_array(_weights(rng, (6,), 0.1))),
            helper.make_node("Constant", [], [f"{name}_two"], value=numpy_helper.from_array(np.array(2.0, np.float32))),
            helper.make_node("Conv", ["x", f"{name}_w", f"{name}_b"], [f"{name}_c"], pads=[1, 1]),
            helper.make_node("Pow", [f"{name}_c", f"{name}_two"], [f"{name}_y"]),
        ]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [1, 6, 12])])

    nodes = [
        helper.make_node("Constant", [], ["threshold"], value=numpy_helper.from_array(np.array(8000, np.int64))),
        helper.make_node("Greater", ["sr", "threshold"], ["is_16k"]),
        helper.make_node("If", ["is_16k"], ["y"], then_branch=branch("then", 0.3), else_branch=branch("else", 0.5)),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    model = _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 12])], [], opset=16)
    return model, {"x": rng.standard_normal((1, 4, 12)).astype(np.float32), "sr": np.array(16000, np.int64)}


def fft_basis(n_fft: int) -> np.ndarray:
    """The STFT basis of tacotron2-style modules (Silero VAD): float32(np.fft.fft(eye)) rows 0..n/2,
    real then imaginary, times a float32 periodic Hann window (scipy's get_window('hann', fftbins=True))."""
    fourier = np.fft.fft(np.eye(n_fft))
    bins = n_fft // 2 + 1
    basis = np.concatenate([fourier.real[:bins], fourier.imag[:bins]]).astype(np.float32)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    return (basis * window).reshape(2 * bins, 1, n_fft)


def stft_conv(weight: np.ndarray | None = None, seed: int = 3) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """An STFT as PyTorch exports it: Conv1d (stride n_fft / 4) with a DFT basis weight [2 bins, 1, n_fft]
    (default `fft_basis(64)`), then the power real**2 + imag**2 over 13 frames. Not in ALL_MODELS:
    its basis is coded exactly (mode 4), not within half a step."""
    weight = fft_basis(64) if weight is None else weight
    rows, _, n_fft = weight.shape
    bins = rows // 2
    nodes = [helper.make_node("Conv", ["x", "basis"], ["spectrum"], strides=[n_fft // 4]),
             helper.make_node("Slice", ["spectrum", "start_real", "end_real", "axis"], ["real"]),
             helper.make_node("Slice", ["spectrum", "end_real", "end_imag", "axis"], ["imag"]),
             helper.make_node("Mul", ["real", "real"], ["real2"]),
             helper.make_node("Mul", ["imag", "imag"], ["imag2"]),
             helper.make_node("Add", ["real2", "imag2"], ["power"])]
    inits = [numpy_helper.from_array(weight, "basis"),
             numpy_helper.from_array(np.array([0], np.int64), "start_real"),
             numpy_helper.from_array(np.array([bins], np.int64), "end_real"),
             numpy_helper.from_array(np.array([rows], np.int64), "end_imag"),
             numpy_helper.from_array(np.array([1], np.int64), "axis")]
    samples = 4 * n_fft
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, samples])],
                   [helper.make_tensor_value_info("power", TensorProto.FLOAT, [1, bins, 13])], inits)
    return model, {"x": np.random.default_rng(seed).standard_normal((1, 1, samples)).astype(np.float32)}


ALL_MODELS = {"conv_bn_gemm": conv_bn_gemm, "depthwise": depthwise, "lstm": lstm, "attention": attention,
              "if_constants": if_constants}


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)
