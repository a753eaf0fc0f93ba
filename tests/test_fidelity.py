"""Fidelity metrics on tiny ONNX models built here: perfect when identical, worse when perturbed."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnlc import fidelity
from nnlc.data import audio

OPSET = [helper.make_opsetid("", 17)]
STEEPNESS = 8.0  # logit slope of the tiny VADs around their loudness threshold
SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"


def _as_tensor_array(value):
    """int64 arrays stay int64 (shapes); everything else becomes float32."""
    if isinstance(value, np.ndarray) and value.dtype == np.int64:
        return value
    return np.asarray(value, np.float32)


def _model(nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, "tiny", inputs, outputs,
                              [numpy_helper.from_array(_as_tensor_array(v), k)
                               for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=OPSET)
    onnx.checker.check_model(model)
    return model


def tiny_classifier(seed=0, weight_noise=0.0):
    """Conv 16x16 stride 16 -> ReLU -> global average pool -> Gemm to 10 peaky logits."""
    rng = np.random.default_rng(seed)
    conv = rng.standard_normal((8, 3, 16, 16)) / 16
    dense = rng.standard_normal((8, 10)) * 60
    dense = dense + weight_noise * np.random.default_rng(99).standard_normal(dense.shape) * 60
    nodes = [helper.make_node("Conv", ["input", "conv"], ["features"], strides=[16, 16]),
             helper.make_node("Relu", ["features"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "dense"], ["logits"])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, 224, 224])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 10])]
    return _model(nodes, inputs, outputs, {"conv": conv, "dense": dense})


def _loudness_threshold():
    rows = np.concatenate([audio.sequence_input(clip.samples) for clip in audio.synthetic_clips()])
    return float(np.median(np.abs(rows).mean(axis=1)))


def tiny_sequence_vad(bias_shift=0.0):
    """speech_probs = sigmoid(gain * mean |input| - STEEPNESS); hn, cn pass h, c through."""
    gain = STEEPNESS / _loudness_threshold()
    weights = np.full((576, 1), gain / 576)
    nodes = [helper.make_node("Abs", ["input"], ["magnitude"]),
             helper.make_node("MatMul", ["magnitude", "weights"], ["score"]),
             helper.make_node("Add", ["score", "bias"], ["shifted"]),
             helper.make_node("Sigmoid", ["shifted"], ["probs"]),
             helper.make_node("Reshape", ["probs", "flat_shape"], ["speech_probs"]),
             helper.make_node("Identity", ["h"], ["hn"]),
             helper.make_node("Identity", ["c"], ["cn"])]
    state = [1, 1, 128]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["T", 576]),
              helper.make_tensor_value_info("h", TensorProto.FLOAT, state),
              helper.make_tensor_value_info("c", TensorProto.FLOAT, state)]
    outputs = [helper.make_tensor_value_info("speech_probs", TensorProto.FLOAT, ["T"]),
               helper.make_tensor_value_info("hn", TensorProto.FLOAT, state),
               helper.make_tensor_value_info("cn", TensorProto.FLOAT, state)]
    initializers = {"weights": weights, "bias": [-STEEPNESS + bias_shift],
                    "flat_shape": np.array([-1], np.int64)}
    return _model(nodes, inputs, outputs, initializers)


def tiny_stateful_vad(bias_shift=0.0):
    """output = sigmoid(gain * (mean |input| + mean(state)) - STEEPNESS);
    stateN = state / 2 + mean |input|."""
    gain = STEEPNESS / (3.0 * _loudness_threshold())
    nodes = [helper.make_node("Abs", ["input"], ["magnitude"]),
             helper.make_node("ReduceMean", ["magnitude"], ["loudness"], axes=[1], keepdims=1),
             helper.make_node("ReduceMean", ["state"], ["memory"], keepdims=0),
             helper.make_node("Add", ["loudness", "memory"], ["total"]),
             helper.make_node("Mul", ["total", "gain"], ["score"]),
             helper.make_node("Cast", ["sr"], ["sr_float"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["sr_float", "zero"], ["no_rate"]),
             helper.make_node("Sum", ["score", "no_rate", "bias"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["output"]),
             helper.make_node("Mul", ["state", "half"], ["decayed"]),
             helper.make_node("Add", ["decayed", "loudness"], ["stateN"])]
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 576]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 128]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
               helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, 128])]
    initializers = {"gain": [gain], "zero": [0.0], "half": [0.5], "bias": [-STEEPNESS + bias_shift]}
    return _model(nodes, inputs, outputs, initializers)


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *".,;:'\"()-*_"] + [
    piece for letter in "abcdefghijklmnopqrstuvwxyz0123456789" for piece in (letter, "##" + letter)]


def tiny_embedding(table_noise=0.0):
    """last_hidden_state = Gather(table, input_ids) @ projection; mask and type ids unused."""
    rng = np.random.default_rng(5)
    table = rng.standard_normal((len(TINY_VOCAB), 16))
    table = table + table_noise * np.random.default_rng(6).standard_normal(table.shape)
    projection = rng.standard_normal((16, 16))
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["embedded"]),
             helper.make_node("MatMul", ["embedded", "projection"], ["last_hidden_state"])]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["b", "s"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["b", "s", 16])]
    return _model(nodes, inputs, outputs, {"table": table, "projection": projection})


@pytest.fixture
def tiny_vocab(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n")
    return path


def test_identical_classifiers_agree_perfectly():
    pytest.importorskip("skimage")
    model = tiny_classifier()
    result = fidelity.evaluate_fidelity("classifier", model, model, n=12)
    assert result["n_confident"] >= 3
    assert result["top1_agreement_confident"] == result["top1_agreement_all"] == 1.0
    assert result["mean_kl"] == 0.0 and result["top5_overlap"] == 1.0
    assert result["transparent"] is True


def test_perturbed_classifier_is_not_transparent():
    pytest.importorskip("skimage")
    perturbed = tiny_classifier(weight_noise=1.0)
    result = fidelity.evaluate_classifier(tiny_classifier(), perturbed, n=12)
    assert result["mean_kl"] > 0.01 and result["transparent"] is False


def test_classifier_metrics_on_logits():
    original = np.array([[10.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 9.0]])
    swapped = np.array([[0.0, 10.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.0, 9.0]])
    metrics = fidelity.classifier_metrics(original, swapped)
    assert metrics["n_confident"] == 2 and metrics["top1_agreement_confident"] == 0.5
    assert metrics["top1_agreement_all"] == pytest.approx(1 / 3)
    nan_metrics = fidelity.classifier_metrics(original, np.full_like(original, np.nan))
    assert nan_metrics["finite"] is False and nan_metrics["transparent"] is False


@pytest.mark.parametrize("kind, build", [("vad", tiny_sequence_vad),
                                         ("vad_stateful", tiny_stateful_vad)])
def test_vad_metrics_are_perfect_when_identical_and_degrade_when_shifted(kind, build):
    model = build()
    options = {"source": "synthetic", "n": 4}
    identical = fidelity.evaluate_fidelity(kind, model, model, **options)
    assert identical["decision_agreement"] == 1.0 and identical["mean_abs_diff"] == 0.0
    assert identical["transparent"] is True
    assert 0.1 < identical["speech_fraction"] < 0.9
    shifted = fidelity.evaluate_fidelity(kind, model, build(bias_shift=2.0), **options)
    assert shifted["mean_abs_diff"] > 0.01 and shifted["decision_agreement"] < 0.99
    assert shifted["transparent"] is False


def test_stateful_vad_feeds_its_state_back():
    from nnlc.fidelity import make_session, run_vad_stateful

    session = make_session(tiny_stateful_vad())
    clip = audio.synthetic_clips(1)[0]
    probs = run_vad_stateful(session, [clip])
    loudness = np.abs(audio.stateful_frames(clip.samples)[:, 0]).mean(axis=1)
    memory, expected = 0.0, []
    gain = STEEPNESS / (3.0 * _loudness_threshold())
    for value in loudness:
        expected.append(1 / (1 + np.exp(-(gain * (value + memory) - STEEPNESS))))
        memory = memory / 2 + value
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)


def test_identical_embeddings_are_transparent_and_noisy_ones_are_not(tiny_vocab):
    model = tiny_embedding()
    identical = fidelity.evaluate_fidelity("embedding", model, model, n=60, vocab_path=tiny_vocab)
    assert identical["mean_cosine"] == pytest.approx(1.0, abs=1e-12)
    assert identical["neighbour_agreement"] == 1.0 and identical["transparent"] is True
    noisy = fidelity.evaluate_embedding(model, tiny_embedding(table_noise=0.5), n=60,
                                        vocab_path=tiny_vocab)
    assert noisy["mean_cosine"] < 0.995 and noisy["transparent"] is False


def test_embedding_metrics_catch_swapped_neighbours():
    base = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    metrics = fidelity.embedding_metrics(base, base[[0, 2, 1]])
    assert metrics["neighbour_agreement"] < 1.0 and metrics["transparent"] is False
    assert fidelity.embedding_metrics(base, base)["neighbour_agreement"] == 1.0


def test_kind_is_guessed_from_input_names():
    assert fidelity.guess_model_kind(tiny_classifier()) == "classifier"
    assert fidelity.guess_model_kind(tiny_sequence_vad()) == "vad"
    assert fidelity.guess_model_kind(tiny_stateful_vad()) == "vad_stateful"
    assert fidelity.guess_model_kind(tiny_embedding()) == "embedding"


def test_models_are_accepted_as_paths_and_bytes(tmp_path):
    model = tiny_sequence_vad()
    path = tmp_path / "vad.onnx"
    onnx.save(model, str(path))
    result = fidelity.evaluate_fidelity("auto", path, model.SerializeToString(),
                                        source="synthetic", n=2)
    assert result["kind"] == "vad" and result["transparent"] is True


def test_unknown_kind_is_rejected():
    model = tiny_sequence_vad()
    with pytest.raises(ValueError):
        fidelity.evaluate_fidelity("segmentation", model, model)


def test_fidelity_and_data_modules_do_not_import_jax():
    code = ("import sys, nnlc.fidelity, nnlc.data.images, nnlc.data.audio, nnlc.data.text; "
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason="../shared/models is absent")
def test_shared_minilm_reproduces_manifest_cosines():
    from nnlc.data.text import WordPieceTokenizer

    tokenizer = WordPieceTokenizer(SHARED_MODELS / "minilm_l6_v2.vocab.txt")
    session = fidelity.make_session(SHARED_MODELS / "minilm_l6_v2.onnx")
    guitar, instrument, market = fidelity.run_embedding(session, tokenizer, [
        "A man is playing a guitar.", "Someone plays an instrument.",
        "The stock market fell sharply today."])
    assert guitar @ instrument == pytest.approx(0.67, abs=0.01)
    assert guitar @ market == pytest.approx(-0.05, abs=0.01)


@pytest.mark.skipif(not SHARED_MODELS.is_dir(), reason="../shared/models is absent")
def test_shared_silero_models_agree_with_each_other():
    clips = audio.vad_clips("heldout", n=2)
    sequence = fidelity.run_vad_sequence(
        fidelity.make_session(SHARED_MODELS / "silero_vad_16k_sequence.onnx"), clips)
    stateful = fidelity.run_vad_stateful(
        fidelity.make_session(SHARED_MODELS / "silero_vad.onnx"), clips)
    np.testing.assert_allclose(stateful, sequence, atol=1e-5)
