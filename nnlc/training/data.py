"""Batch sources for training, indexed by step so that a resumed run sees the same batches.

`make_batch_source(kind, problem_inputs, ...)` returns `batch(step) -> dict` with `inputs` (graph
input name -> array) and, by kind, `labels`. Kinds:
- `digits`: scikit-learn digits train split, labelled (for networks trained here).
- `images`: 224x224 crops from the train split of bundled photos (nnlc.data.images).
- `audio`: Silero-style [T, 576] frames of train clips (wav files or synthetic) + zero LSTM state.
- `text`: sentences of the train split, WordPiece-tokenised (MiniLM inputs).
- `gaussian`: standard normal values for every float input (unknown dims -> `gaussian_dim`).
The held-out splits of nnlc.data are never used here; they measure fidelity after training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

# kinds whose batch rows are the consecutive time steps of one sequence (a recurrent state runs
# through them), not independent examples: they cannot be split into gradient groups (step.py)
SEQUENTIAL_INPUTS = frozenset({"audio"})


def _graph_inputs(model: onnx.ModelProto) -> list[tuple[str, int, list]]:
    initializers = {init.name for init in model.graph.initializer}
    found = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        found.append((value.name, tensor_type.elem_type, dims))
    return found


def make_batch_source(kind: str, model: onnx.ModelProto, batch_size: int, seed: int = 0,
                      gaussian_dim: int = 16, pool_size: int = 256) -> Callable[[int], dict[str, Any]]:
    """batch(step) for the given input kind (see module docstring)."""
    if kind == "digits":
        from nnlc.zoo import digits

        x_train, y_train, _, _ = digits.load_digits_split(seed=0)
        name = _graph_inputs(model)[0][0]

        def digits_batch(step: int) -> dict:
            index = np.random.default_rng([seed, step]).integers(0, len(y_train), batch_size)
            return {"inputs": {name: x_train[index]}, "labels": y_train[index]}

        return digits_batch
    if kind == "images":
        from nnlc.data import images

        pool = images.image_crops(pool_size, seed=seed, split="train")
        name = _graph_inputs(model)[0][0]
        return _pooled({name: pool}, batch_size, seed)
    if kind == "audio":
        from nnlc.data import audio

        clips = audio.vad_clips(split="train")
        frames = np.concatenate([audio.sequence_input(clip.samples) for clip in clips])
        h, c = audio.initial_lstm_state()

        def audio_batch(step: int) -> dict:
            start = np.random.default_rng([seed, step]).integers(0, max(1, len(frames) - batch_size))
            return {"inputs": {"input": frames[start:start + batch_size], "h": h, "c": c}}

        return audio_batch
    if kind == "text":
        from nnlc.data import text

        tokenizer = text.WordPieceTokenizer(text.default_vocab_path() if hasattr(text, "default_vocab_path")
                                            else _minilm_vocab(), max_length=64)
        sentences = text.sentences(split="train", seed=seed)

        def text_batch(step: int) -> dict:
            index = np.random.default_rng([seed, step]).integers(0, len(sentences), batch_size)
            return {"inputs": dict(tokenizer([sentences[i] for i in index]))}

        return text_batch
    if kind == "gaussian":
        specs = _graph_inputs(model)

        def gaussian_batch(step: int) -> dict:
            rng = np.random.default_rng([seed, step])
            inputs = {}
            for name, elem_type, dims in specs:
                shape = [batch_size if i == 0 and d is None else (d or gaussian_dim) for i, d in enumerate(dims)]
                if elem_type != onnx.TensorProto.FLOAT:
                    raise ValueError(f"gaussian inputs: input {name!r} is not float; choose another input kind")
                inputs[name] = rng.standard_normal(shape).astype(np.float32)
            return {"inputs": inputs}

        return gaussian_batch
    raise ValueError(f"unknown input kind {kind!r}: digits, images, audio, text or gaussian")


def _pooled(pool: dict[str, np.ndarray], batch_size: int, seed: int) -> Callable[[int], dict]:
    size = len(next(iter(pool.values())))

    def batch(step: int) -> dict:
        index = np.random.default_rng([seed, step]).integers(0, size, batch_size)
        return {"inputs": {name: values[index] for name, values in pool.items()}}

    return batch


def _minilm_vocab() -> str:
    from nnlc import fidelity

    return str(fidelity.default_vocab_path())
