"""A LeNet-style CNN trained from scratch on scikit-learn's digits (8x8, 1,797 images), exported to ONNX.

Labelled data that ships offline (DESIGN.md §6), so accuracy before and after compression is a real
labelled figure. Training uses JAX + optax; the ONNX export uses onnx.helper only.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

INPUT_NAME, OUTPUT_NAME = "image", "logits"


def load_digits_split(test_fraction: float = 0.25, seed: int = 0):
    """(x_train, y_train, x_test, y_test); x float32 [n, 1, 8, 8] scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(len(labels) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def init_lenet(seed: int = 0, channels: tuple[int, int] = (8, 16), hidden: int = 64) -> dict[str, np.ndarray]:
    """He-initialised parameters, named as in the exported ONNX graph."""
    rng = np.random.default_rng(seed)
    c1, c2 = channels

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    return {
        "conv1.weight": he((c1, 1, 3, 3), 9), "conv1.bias": np.zeros(c1, np.float32),
        "conv2.weight": he((c2, c1, 3, 3), 9 * c1), "conv2.bias": np.zeros(c2, np.float32),
        "fc1.weight": he((hidden, 4 * c2), 4 * c2), "fc1.bias": np.zeros(hidden, np.float32),
        "fc2.weight": he((10, hidden), hidden), "fc2.bias": np.zeros(10, np.float32),
    }


def init_lenet300(seed: int = 0, hidden: tuple[int, int] = (300, 100)) -> dict[str, np.ndarray]:
    """LeNet-300-100 (an MLP 64-300-100-10 on 8x8 digits), named as in the exported graph."""
    rng = np.random.default_rng(seed)
    sizes = (64, *hidden, 10)
    params = {}
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"fc{index + 1}.weight"] = (rng.standard_normal((fan_out, fan_in)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        params[f"fc{index + 1}.bias"] = np.zeros(fan_out, np.float32)
    return params


def is_mlp(params) -> bool:
    return "conv1.weight" not in params


def mlp_apply(params, images):
    """LeNet-300-100 forward pass in JAX."""
    import jax

    x = images.reshape(images.shape[0], -1)
    layers = sum(1 for name in params if name.endswith(".weight"))
    for index in range(1, layers + 1):
        x = x @ params[f"fc{index}.weight"].T + params[f"fc{index}.bias"]
        if index < layers:
            x = jax.nn.relu(x)
    return x


def lenet_apply(params, images):
    """Forward pass in JAX (NCHW), identical in meaning to the exported ONNX graph."""
    import jax
    import jax.numpy as jnp

    if is_mlp(params):
        return mlp_apply(params, images)

    def conv(x, w, b):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    x = pool(jax.nn.relu(conv(images, params["conv1.weight"], params["conv1.bias"])))
    x = pool(jax.nn.relu(conv(x, params["conv2.weight"], params["conv2.bias"])))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(x @ params["fc1.weight"].T + params["fc1.bias"])
    return x @ params["fc2.weight"].T + params["fc2.bias"]


def train_lenet(steps: int = 400, batch_size: int = 128, learning_rate: float = 3e-3, seed: int = 0,
                log_every: int = 0, architecture: str = "lenet5") -> tuple[dict[str, np.ndarray], float]:
    """Trains `lenet5` (CNN) or `lenet300` (MLP) on the digits train split; returns (params, test accuracy)."""
    import jax
    import jax.numpy as jnp
    import optax

    x_train, y_train, x_test, y_test = load_digits_split(seed=seed)
    initial = {"lenet5": init_lenet, "lenet300": init_lenet300}[architecture](seed)
    params = {k: jnp.asarray(v) for k, v in initial.items()}
    optimizer = optax.adam(learning_rate)
    state = optimizer.init(params)

    def loss_fn(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(lenet_apply(p, x), y).mean()

    @jax.jit
    def step(p, s, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(seed)
    for index in range(steps):
        batch = rng.integers(0, len(y_train), batch_size)
        params, state, loss = step(params, state, x_train[batch], y_train[batch])
        if log_every and (index + 1) % log_every == 0:
            print(f"  step {index + 1}/{steps} loss {float(loss):.4f}", flush=True)
    params = {k: np.asarray(v) for k, v in params.items()}
    accuracy = float(np.mean(np.argmax(np.asarray(lenet_apply(params, x_test)), -1) == y_test))
    return params, accuracy


def export_lenet(params: dict[str, np.ndarray], opset: int = 17) -> onnx.ModelProto:
    """The LeNet as an ONNX model with input `image` [n,1,8,8] and output `logits` [n,10]."""
    if is_mlp(params):
        return _export_mlp(params, opset)
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc1.weight", "fc1.bias"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "fc2.weight", "fc2.bias"], ["logits"], transB=1),
    ]
    return _digits_model(nodes, "lenet_digits", params, opset)


def _digits_model(nodes: list, name: str, params: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    """A checked ONNX model: input `image` [n,1,8,8], output `logits` [n,10], params as initializers."""
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="nnlc.zoo")
    onnx.checker.check_model(model)
    return model


def _export_mlp(params: dict[str, np.ndarray], opset: int) -> onnx.ModelProto:
    layers = sum(1 for name in params if name.endswith(".weight"))
    nodes = [helper.make_node("Flatten", [INPUT_NAME], ["h0"], axis=1)]
    for index in range(1, layers + 1):
        output = OUTPUT_NAME if index == layers else f"z{index}"
        nodes.append(helper.make_node("Gemm", [f"h{index - 1}", f"fc{index}.weight", f"fc{index}.bias"], [output], transB=1))
        if index < layers:
            nodes.append(helper.make_node("Relu", [output], [f"h{index}"]))
    return _digits_model(nodes, "lenet300_digits", params, opset)


def onnx_accuracy(model: onnx.ModelProto | bytes, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX model under onnxruntime."""
    import onnxruntime

    data = model if isinstance(model, bytes) else model.SerializeToString()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    logits = session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    return float(np.mean(np.argmax(logits, -1) == labels))
