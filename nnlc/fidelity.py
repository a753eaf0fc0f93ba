"""Fidelity of a reconstructed ONNX network to its original, measured with onnxruntime (DESIGN §6).

Both networks run on the same seeded, offline inputs (`nnlc.data`); every metric compares their
outputs, no labels are involved. Each `evaluate_*` returns a JSON-ready dict with a boolean
`transparent`:
- classifier: top-1 agreement on confident crops (original max softmax > 0.5) >= 0.99 and mean
  KL(original || reconstructed) <= 0.01;
- vad / vad_stateful: agreement of the > 0.5 decision >= 0.99 and mean abs difference of the speech
  probability <= 0.01;
- embedding: mean cosine >= 0.995 and nearest-neighbour agreement >= 0.99.
Any non-finite output makes a reconstruction non-transparent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from nnlc.data import audio, images, text

ModelSource = str | os.PathLike | onnx.ModelProto | bytes | ort.InferenceSession

CONFIDENCE_THRESHOLD = 0.5
SPEECH_THRESHOLD = 0.5
CLASSIFIER_MIN_AGREEMENT, CLASSIFIER_MAX_KL = 0.99, 0.01
VAD_MIN_AGREEMENT, VAD_MAX_ABS_DIFF = 0.99, 0.01
EMBEDDING_MIN_COSINE, EMBEDDING_MIN_NEIGHBOUR_AGREEMENT = 0.995, 0.99
DEFAULT_N = {"classifier": 200, "vad": None, "vad_stateful": None, "embedding": 300}
KINDS = tuple(DEFAULT_N)


def default_vocab_path() -> Path:
    """../shared/models/minilm_l6_v2.vocab.txt next to the repository root."""
    shared_models = Path(__file__).resolve().parents[1].parent / "shared" / "models"
    return shared_models / "minilm_l6_v2.vocab.txt"


def make_session(model: ModelSource, threads: int = 2) -> ort.InferenceSession:
    """A CPU onnxruntime session for a path, ModelProto, serialized bytes or existing session."""
    if isinstance(model, ort.InferenceSession):
        return model
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        model = os.fspath(model)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _graph_input_names(model: ModelSource) -> list[str]:
    if isinstance(model, ort.InferenceSession):
        return [value.name for value in model.get_inputs()]
    if not isinstance(model, onnx.ModelProto):
        model = (onnx.load_from_string(model) if isinstance(model, bytes)
                 else onnx.load(os.fspath(model), load_external_data=False))
    initializers = {tensor.name for tensor in model.graph.initializer}
    return [value.name for value in model.graph.input if value.name not in initializers]


def guess_model_kind(model: ModelSource) -> str:
    """'embedding', 'vad_stateful', 'vad' or 'classifier', from the graph's input names."""
    names = set(_graph_input_names(model))
    if "input_ids" in names:
        return "embedding"
    if {"input", "state", "sr"} <= names:
        return "vad_stateful"
    if {"input", "h", "c"} <= names:
        return "vad"
    if len(names) == 1:
        return "classifier"
    raise ValueError(f"cannot tell the kind of a model with inputs {sorted(names)}")


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _all_finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.isfinite(array).all()) for array in arrays)


def classifier_metrics(original_logits: np.ndarray, reconstructed_logits: np.ndarray,
                       confidence: float = CONFIDENCE_THRESHOLD) -> dict[str, Any]:
    """Top-1 agreement (confident / all), mean KL(original || reconstructed), top-5 overlap."""
    log_p, log_q = _log_softmax(original_logits), _log_softmax(reconstructed_logits)
    p = np.exp(log_p)
    confident = p.max(axis=1) > confidence
    same_top1 = log_p.argmax(axis=1) == log_q.argmax(axis=1)
    kl = (p * (log_p - log_q)).sum(axis=1)
    top5_p = np.argsort(-log_p, axis=1, kind="stable")[:, :5]
    top5_q = np.argsort(-log_q, axis=1, kind="stable")[:, :5]
    overlap = [len(set(a) & set(b)) / 5.0
               for a, b in zip(top5_p.tolist(), top5_q.tolist(), strict=True)]
    finite = _all_finite(original_logits, reconstructed_logits)
    agreement_confident = float(same_top1[confident].mean()) if confident.any() else float("nan")
    mean_kl = float(kl.mean())
    return {
        "n": int(len(p)),
        "n_confident": int(confident.sum()),
        "top1_agreement_confident": agreement_confident,
        "top1_agreement_all": float(same_top1.mean()),
        "mean_kl": mean_kl,
        "max_kl": float(kl.max()),
        "top5_overlap": float(np.mean(overlap)),
        "finite": finite,
        "transparent": bool(finite and agreement_confident >= CLASSIFIER_MIN_AGREEMENT
                            and mean_kl <= CLASSIFIER_MAX_KL),
    }


def vad_metrics(original_probs: np.ndarray, reconstructed_probs: np.ndarray) -> dict[str, Any]:
    """Mean / max abs difference of speech probabilities and agreement of the > 0.5 decision."""
    original = np.asarray(original_probs, np.float64).ravel()
    reconstructed = np.asarray(reconstructed_probs, np.float64).ravel()
    difference = np.abs(original - reconstructed)
    agreement = float(((original > SPEECH_THRESHOLD) == (reconstructed > SPEECH_THRESHOLD)).mean())
    finite = _all_finite(original, reconstructed)
    mean_abs_diff = float(difference.mean())
    return {
        "n_frames": int(original.size),
        "speech_fraction": float((original > SPEECH_THRESHOLD).mean()),
        "decision_agreement": agreement,
        "mean_abs_diff": mean_abs_diff,
        "max_abs_diff": float(difference.max()),
        "finite": finite,
        "transparent": bool(finite and agreement >= VAD_MIN_AGREEMENT
                            and mean_abs_diff <= VAD_MAX_ABS_DIFF),
    }


def embedding_metrics(original: np.ndarray, reconstructed: np.ndarray) -> dict[str, Any]:
    """Mean / min cosine between paired unit embeddings and nearest-neighbour agreement."""
    original = np.asarray(original, np.float64)
    reconstructed = np.asarray(reconstructed, np.float64)
    cosines = (original * reconstructed).sum(axis=1)

    def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
        similarity = embeddings @ embeddings.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(axis=1)

    finite = _all_finite(original, reconstructed)
    agreement = float((nearest_neighbours(original) == nearest_neighbours(reconstructed)).mean())
    mean_cosine = float(cosines.mean())
    return {
        "n": int(len(original)),
        "mean_cosine": mean_cosine,
        "min_cosine": float(cosines.min()),
        "neighbour_agreement": agreement,
        "finite": finite,
        "transparent": bool(finite and mean_cosine >= EMBEDDING_MIN_COSINE
                            and agreement >= EMBEDDING_MIN_NEIGHBOUR_AGREEMENT),
    }


def run_classifier(session: ort.InferenceSession, batches: Sequence[np.ndarray]) -> np.ndarray:
    """Logits [n, classes] of the session's single input over `batches`."""
    input_name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {input_name: batch})[0] for batch in batches])


def run_vad_sequence(session: ort.InferenceSession, clips: Sequence[audio.AudioClip]) -> np.ndarray:
    """Speech probabilities of `silero_vad_16k_sequence`, one call per clip, concatenated."""
    probabilities = []
    for clip in clips:
        h, c = audio.initial_lstm_state()
        feeds = {"input": audio.sequence_input(clip.samples), "h": h, "c": c}
        probabilities.append(np.asarray(session.run(None, feeds)[0]).ravel())
    return np.concatenate(probabilities)


def run_vad_stateful(session: ort.InferenceSession, clips: Sequence[audio.AudioClip],
                     context: bool = True) -> np.ndarray:
    """Speech probabilities of `silero_vad`: frame by frame, `stateN` fed back, per clip."""
    sample_rate = audio.sample_rate_input()
    probabilities = []
    for clip in clips:
        state = audio.initial_state()
        for frame in audio.stateful_frames(clip.samples, context):
            output, state = session.run(None, {"input": frame, "state": state, "sr": sample_rate})
            probabilities.append(float(np.asarray(output).ravel()[0]))
    return np.asarray(probabilities)


def run_embedding(session: ort.InferenceSession, tokenizer: text.WordPieceTokenizer,
                  sentences: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit sentence embeddings: hidden states mean-pooled over the mask, L2-normalised.

    Sentences are batched by token length to limit padding; rows come back in input order.
    """
    encoded_lengths = np.array([len(tokenizer.encode(sentence)) for sentence in sentences])
    order = np.argsort(encoded_lengths, kind="stable")
    input_names = {value.name for value in session.get_inputs()}
    embeddings = None
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        feeds = tokenizer([sentences[row] for row in rows])
        feeds = {name: array for name, array in feeds.items() if name in input_names}
        hidden = np.asarray(session.run(None, feeds)[0])
        if hidden.ndim == 3:
            mask = feeds["attention_mask"][..., None].astype(hidden.dtype)
            hidden = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
        if embeddings is None:
            embeddings = np.empty((len(sentences), hidden.shape[-1]), np.float64)
        embeddings[rows] = hidden
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    return embeddings / np.where(norms > 0, norms, 1.0)


def _timed(metrics: dict[str, Any], start: float, **extra: Any) -> dict[str, Any]:
    return {**metrics, **extra, "seconds": round(time.perf_counter() - start, 3)}


def evaluate_classifier(original: ModelSource, reconstructed: ModelSource, n: int = 200,
                        seed: int = 0, split: str = "heldout", batch_size: int = 32,
                        threads: int = 2) -> dict[str, Any]:
    """Classifier fidelity on `n` seeded 224x224 crops of `split`."""
    start = time.perf_counter()
    original_session = make_session(original, threads)
    reconstructed_session = make_session(reconstructed, threads)
    original_logits, reconstructed_logits = [], []
    for batch in images.image_crop_batches(n, seed, split, batch_size):
        original_logits.append(run_classifier(original_session, [batch]))
        reconstructed_logits.append(run_classifier(reconstructed_session, [batch]))
    metrics = classifier_metrics(np.concatenate(original_logits),
                                 np.concatenate(reconstructed_logits))
    return _timed(metrics, start, kind="classifier", split=split, seed=seed)


def _evaluate_vad(runner: Callable[..., np.ndarray], kind: str, original: ModelSource,
                  reconstructed: ModelSource, n: int | None, seed: int, split: str,
                  source: str, audio_dir: str | os.PathLike | None, threads: int) -> dict[str, Any]:
    start = time.perf_counter()
    clips = audio.vad_clips(split, source, audio_dir, n, seed)
    original_probs = runner(make_session(original, threads), clips)
    reconstructed_probs = runner(make_session(reconstructed, threads), clips)
    return _timed(vad_metrics(original_probs, reconstructed_probs), start, kind=kind, split=split,
                  seed=seed, clips=[clip.name for clip in clips])


def evaluate_vad(original: ModelSource, reconstructed: ModelSource, n: int | None = None,
                 seed: int = 0, split: str = "heldout", source: str = "auto",
                 audio_dir: str | os.PathLike | None = None, threads: int = 2) -> dict[str, Any]:
    """VAD fidelity of sequence models (`input` [T, 576], `h`, `c`) on up to `n` clips of `split`.

    `source`: 'files' (wav clips in `audio_dir`), 'synthetic', or 'auto' (files when present).
    """
    return _evaluate_vad(run_vad_sequence, "vad", original, reconstructed, n, seed, split,
                         source, audio_dir, threads)


def evaluate_vad_stateful(original: ModelSource, reconstructed: ModelSource, n: int | None = None,
                          seed: int = 0, split: str = "heldout", source: str = "auto",
                          audio_dir: str | os.PathLike | None = None,
                          threads: int = 1) -> dict[str, Any]:
    """VAD fidelity of frame-by-frame models (`input`, `state`, `sr`), state fed back per clip."""
    return _evaluate_vad(run_vad_stateful, "vad_stateful", original, reconstructed, n, seed, split,
                         source, audio_dir, threads)


def evaluate_embedding(original: ModelSource, reconstructed: ModelSource, n: int = 300,
                       seed: int = 0, split: str = "heldout",
                       vocab_path: str | os.PathLike | None = None, batch_size: int = 64,
                       max_length: int = 128, threads: int = 2) -> dict[str, Any]:
    """Sentence-embedding fidelity on `n` seeded `pydoc_data.topics` sentences of `split`."""
    start = time.perf_counter()
    tokenizer = text.WordPieceTokenizer(vocab_path or default_vocab_path(), max_length)
    sentences = text.sentences(n, seed, split)
    original_embeddings = run_embedding(make_session(original, threads), tokenizer, sentences,
                                        batch_size)
    reconstructed_embeddings = run_embedding(make_session(reconstructed, threads), tokenizer,
                                             sentences, batch_size)
    metrics = embedding_metrics(original_embeddings, reconstructed_embeddings)
    return _timed(metrics, start, kind="embedding", split=split, seed=seed)


_EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "classifier": evaluate_classifier,
    "vad": evaluate_vad,
    "vad_stateful": evaluate_vad_stateful,
    "embedding": evaluate_embedding,
}


def evaluate_fidelity(kind: str, original: ModelSource, reconstructed: ModelSource,
                      n: int | None = None, seed: int = 0, split: str = "heldout",
                      **options: Any) -> dict[str, Any]:
    """Dispatches to `evaluate_<kind>`; kind 'auto' guesses it from the original's inputs.

    `n` (crops, clips or sentences) defaults per kind: 200 crops, all clips, 300 sentences.
    `options` go to the evaluator (e.g. `vocab_path`, `audio_dir`, `source`, `batch_size`).
    """
    if kind == "auto":
        kind = guess_model_kind(original)
    if kind not in _EVALUATORS:
        raise ValueError(f"kind must be one of {KINDS} or 'auto', got {kind!r}")
    count = DEFAULT_N[kind] if n is None else n
    if count is None:
        return _EVALUATORS[kind](original, reconstructed, seed=seed, split=split, **options)
    return _EVALUATORS[kind](original, reconstructed, n=count, seed=seed, split=split, **options)
