"""nnlc.blockwise.partition: blocks whose composition reproduces the graph exactly."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import blockwise_models
from nnlc.blockwise.partition import block_models, partition, run_blocks


def _reference(model: onnx.ModelProto, feeds: dict) -> dict:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    return dict(zip(names, session.run(names, feeds), strict=True))


def _cases():
    rng = np.random.default_rng(0)
    mask = np.ones((2, 6), np.int64)
    mask[1, 4:] = 0
    return {
        "residual_cnn": (blockwise_models.residual_cnn(), {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}, 3),
        "transformer": (blockwise_models.transformer(layers=3),
                        {"input_ids": rng.integers(0, 50, (2, 6)).astype(np.int64), "attention_mask": mask}, 3),
        "lstm": (blockwise_models.lstm_stack(), {"x": rng.standard_normal((7, 1, 6)).astype(np.float32),
                                                  "h0": np.zeros((1, 1, 8), np.float32),
                                                  "c0": np.zeros((1, 1, 8), np.float32)}, 2),
    }


@pytest.mark.parametrize("name", ["residual_cnn", "transformer", "lstm"])
def test_composition_of_blocks_equals_the_graph_exactly(name):
    model, feeds, expected_blocks = _cases()[name]
    blocks = partition(model, target_blocks=8)
    assert len(blocks) >= expected_blocks, [b.describe() for b in blocks]
    assert sum(b.end - b.start for b in blocks) == len(model.graph.node)
    values = run_blocks(block_models(model, blocks), blocks, feeds)
    for output, value in _reference(model, feeds).items():
        np.testing.assert_array_equal(values[output], value)


def test_residual_blocks_and_attention_layers_stay_whole():
    model, _, _ = _cases()["residual_cnn"]
    nodes = model.graph.node
    for block in partition(model, target_blocks=8)[1:]:
        # every cut lies on the residual stream: the first node reads the previous block's output only
        assert block.inputs == [nodes[block.start].input[0]]
    owner = {node.output[0]: block.index for block in partition(model, target_blocks=8)
             for node in nodes[block.start:block.end]}
    for b in range(3):  # conv, relu, conv and the skip Add of each residual block share a block
        assert owner[f"b{b}.a"] == owner[f"b{b}.r"] == owner[f"b{b}.c"] == owner[f"b{b}.s"]
    model, _, _ = _cases()["transformer"]
    blocks = partition(model, target_blocks=8)
    for block in blocks[1:]:
        # one activation from before, plus graph inputs: the mask is recomputed from attention_mask
        assert len([n for n in block.inputs if n not in ("input_ids", "attention_mask")]) == 1
    owner = {node.output[0]: block.index for block in blocks for node in model.graph.node[block.start:block.end]}
    for i in range(3):  # an attention layer with its residual Add is never cut
        assert len({owner[f"l{i}.{name}"] for name in ("Q", "K", "V", "S", "A", "C", "O", "r1")}) == 1


def test_lstm_blocks_run_through_nnlc_graph():
    from nnlc.graph import from_onnx

    model, feeds, _ = _cases()["lstm"]
    blocks = partition(model, target_blocks=8)
    values = dict(feeds)
    for block_model, block in zip(block_models(model, blocks), blocks, strict=True):
        apply, weights = from_onnx(block_model)
        outputs = apply(weights, {name: values[name] for name in block.inputs})
        values.update({name: np.asarray(outputs[name]) for name in block.outputs})
    for output, value in _reference(model, feeds).items():
        np.testing.assert_allclose(values[output], value, rtol=1e-5, atol=1e-6)


def test_min_params_controls_the_block_size():
    model, _, _ = _cases()["residual_cnn"]
    few = partition(model, min_params=10 ** 9)
    many = partition(model, min_params=1)
    assert len(few) == 1 and len(many) > len(partition(model, target_blocks=2))
