"""nnlc.graph on the real networks in ../shared/models against onnxruntime (skipped without them)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import graph_vs_onnxruntime as bench
from nnlc.data import audio
from nnlc.graph import from_onnx

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(not (MODELS / "mobilenet_v2.onnx").exists(), reason="../shared/models is absent")


def _short_clips() -> list[audio.AudioClip]:
    clips = audio.vad_clips("heldout")[:1]
    return [audio.AudioClip(clip.name, clip.samples[:16 * audio.CHUNK_SAMPLES]) for clip in clips]


def test_mobilenet_v2_matches_onnxruntime():
    errors = bench.compare_batches(MODELS / "mobilenet_v2.onnx", bench.mobilenet_inputs(4, batch_size=4))
    assert max(errors.values()) < TOLERANCE, errors


def test_silero_vad_sequence_matches_onnxruntime():
    errors = bench.compare_batches(MODELS / "silero_vad_16k_sequence.onnx",
                                   bench.silero_sequence_inputs(_short_clips()))
    assert max(errors.values()) < TOLERANCE, errors


def test_silero_vad_stateful_frames_match_onnxruntime():
    errors = bench.compare_silero_stateful(MODELS / "silero_vad.onnx", _short_clips(), max_frames=8)
    assert max(errors.values()) < TOLERANCE, errors


def test_silero_vad_weights_live_in_if_branches():
    apply, weights = from_onnx(MODELS / "silero_vad.onnx")
    assert weights and all("/then_branch/" in name or "/else_branch/" in name for name in weights)


def test_minilm_matches_onnxruntime():
    batches = bench.minilm_inputs(MODELS / "minilm_l6_v2.vocab.txt", count=4, batch_size=4)
    errors = bench.compare_batches(MODELS / "minilm_l6_v2.onnx", batches)
    assert max(errors.values()) < TOLERANCE, errors


def test_minilm_keeps_minus_infinity_constants():
    _, weights = from_onnx(MODELS / "minilm_l6_v2.onnx")
    assert sum(bool(np.any(np.isneginf(v))) for v in weights.values()) == 6


@pytest.mark.slow  # about a minute on 2 cores, most of it compiling the backward pass
def test_mobilenet_v2_gradients_are_finite_for_every_weight():
    batch = bench.mobilenet_inputs(2, batch_size=2)[0]["input"]
    result = bench.mobilenet_gradients(MODELS / "mobilenet_v2.onnx", batch)
    assert result["all_finite"]
    assert result["nonzero_tensors"] >= result["weights"] - 40  # Clip bounds get zero gradient where unclipped


def test_mobilenet_v2_vmap_over_examples():
    apply, weights = from_onnx(MODELS / "mobilenet_v2.onnx")
    batch = bench.mobilenet_inputs(2, batch_size=2)[0]["input"]
    per_example = jax.jit(jax.vmap(lambda x: apply(weights, {"input": x[None]})["logits"][0]))(jnp.asarray(batch))
    together = jax.jit(apply)(weights, {"input": batch})["logits"]
    np.testing.assert_allclose(np.asarray(per_example), np.asarray(together), rtol=1e-4, atol=1e-4)
