"""LeNet-style CNN trained from scratch on scikit-learn digits: labelled accuracy vs size for the learned
mode (several lambdas), the post-training mode and NNCodec (when its venv exists), on the same network.

    python -m benchmarks.learned_lenet [--lambdas=0.01,0.03,0.1,0.3,1] [--steps=1000] [--seeds=3] [--jobs=2]

Each lambda runs with several seeds (one run's accuracy can land a few points off: the last steps'
rounding is noisy on a 6 K-parameter network); the JSON keeps every run and the mean, and the plot
shows the mean with the min-max range. Writes benchmarks/results/learned_lenet.json (and a PNG plot
beside it when matplotlib is present). Needs nothing outside the project (digits ship with scikit-learn).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import tempfile

import numpy as np
import onnx
from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "benchmarks" / "results" / "learned_lenet.json"
FLAGS = flags.FLAGS
flags.DEFINE_list("lambdas", ["0.01", "0.03", "0.1", "0.3", "1.0"], "Rate-distortion trade-offs of the learned mode.")
flags.DEFINE_integer("steps", 1000, "Training steps per lambda.")
flags.DEFINE_integer("seeds", 3, "Runs (seeds 0, 1, ...) per lambda.")
flags.DEFINE_integer("jobs", 2, "Training runs at a time (separate processes).")
flags.DEFINE_list("qps", ["-20", "-16", "-12", "-8", "-4", "0"], "Post-training qps.")
flags.DEFINE_list("nncodec_qps", ["-20", "-16", "-12", "-8", "-4", "0"], "NNCodec qps.")
flags.DEFINE_string("workdir", None, "Where runs go (default: a temp dir).")


def main(argv):
    del argv
    import sys

    sys.path.insert(0, str(ROOT))
    from nnlc import encoder, onnx_io
    from nnlc.decoder import decode_bitstream
    from nnlc.zoo import digits

    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="nnlc-lenet-")
    _, _, x_test, y_test = digits.load_digits_split()
    results = {"learned": [], "post_training": [], "nncodec": [],
               "settings": {"steps": FLAGS.steps, "seeds": FLAGS.seeds, "learning_rate_decoder": 0.02}}
    runs = [(float(lmbda), seed) for lmbda in FLAGS.lambdas for seed in range(FLAGS.seeds)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=FLAGS.jobs,
                                                mp_context=multiprocessing.get_context("spawn")) as pool:
        finished = list(pool.map(_train_one, [(lmbda, seed, FLAGS.steps, workdir) for lmbda, seed in runs]))
    for lmbda in map(float, FLAGS.lambdas):
        mine = [run for run in finished if run["lmbda"] == lmbda]
        accuracies = [run["accuracy"] for run in mine]
        results["learned"].append({"lmbda": lmbda, "bytes": float(np.mean([run["bytes"] for run in mine])),
                                   "accuracy": float(np.mean(accuracies)), "accuracy_min": min(accuracies),
                                   "accuracy_max": max(accuracies), "runs": mine})
        print({k: v for k, v in results["learned"][-1].items() if k != "runs"}, flush=True)
    original = onnx.load(os.path.join(workdir, "lmbda=%s,seed=0" % runs[0][0], "original.onnx"))
    results["float"] = {"bytes": int(sum(r.array.nbytes for r in onnx_io.find_float_tensors(original).values())),
                        "accuracy": digits.onnx_accuracy(original, x_test, y_test)}
    for qp in map(int, FLAGS.qps):
        encoded = encoder.compress_model(original, qp=qp)
        accuracy = digits.onnx_accuracy(decode_bitstream(encoded.bitstream), x_test, y_test)
        results["post_training"].append({"qp": qp, "bytes": encoded.total_bytes, "accuracy": accuracy})
        print(results["post_training"][-1], flush=True)
    from benchmarks import nncodec_baseline

    if nncodec_baseline.nncodec_available():
        arrays = {k: r.array for k, r in onnx_io.find_float_tensors(original).items()}
        for qp in map(int, FLAGS.nncodec_qps):
            run = nncodec_baseline.run_nncodec(arrays, qp=qp)
            model = onnx_io.replace_tensors(original, run["decoded"])
            results["nncodec"].append({"qp": qp, "bytes": run["bytes"], "accuracy": digits.onnx_accuracy(model, x_test, y_test)})
            print(results["nncodec"][-1], flush=True)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps(results, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(6, 4))
        learned = sorted(results["learned"], key=lambda p: p["bytes"])
        axis.errorbar([p["bytes"] for p in learned], [p["accuracy"] for p in learned], fmt="o-",
                      yerr=[[p["accuracy"] - p["accuracy_min"] for p in learned],
                            [p["accuracy_max"] - p["accuracy"] for p in learned]],
                      capsize=3, label=f"learned (mean of {FLAGS.seeds} seeds, min-max)")
        for key, marker in (("post_training", "s--"), ("nncodec", "^:")):
            points = sorted((p["bytes"], p["accuracy"]) for p in results[key])
            if points:
                axis.plot(*zip(*points), marker, label=key.replace("_", "-"))
        axis.axhline(results["float"]["accuracy"], color="gray", lw=0.8, label="float32")
        axis.set_xscale("log")
        axis.set_xlabel("compressed size (bytes)")
        axis.set_ylabel("digits test accuracy")
        axis.legend()
        figure.tight_layout()
        figure.savefig(OUTPUT.with_suffix(".png"), dpi=120)
    except ImportError:
        pass
    print(f"wrote {OUTPUT}")


def _train_one(job: tuple[float, int, int, str]) -> dict:
    """One learned-mode run (in its own process); reuses a finished run's result.json."""
    import sys

    sys.path.insert(0, str(ROOT))
    from experiments.configs import lenet5_digits
    from nnlc.training.loop import train_and_evaluate

    lmbda, seed, steps, workdir = job
    config = lenet5_digits.get_config()
    config.lmbda, config.num_steps, config.learning_rate_decoder, config.log_every = lmbda, steps, 0.02, 250
    config.seed = seed
    run_dir = os.path.join(workdir, f"lmbda={lmbda},seed={seed}")
    finished = os.path.join(run_dir, "result.json")
    result = json.load(open(finished)) if os.path.exists(finished) else train_and_evaluate(config, run_dir)
    run = {"lmbda": lmbda, "seed": seed, "bytes": result["bytes"], "accuracy": result["evaluation"]["accuracy"]}
    print(run, flush=True)
    return run


if __name__ == "__main__":
    app.run(main)
