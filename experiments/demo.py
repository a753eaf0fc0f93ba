"""`make demo`: train a small CNN on scikit-learn digits, compress it, decode it standalone, compare.

Post-training mode for now (the learned mode will take over this demo). Runs in about a minute on
2 CPU cores and ends with a summary table.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where to write the ONNX, bitstreams and decoded models (default: a temp dir).")
flags.DEFINE_list("qps", ["-24", "-16", "-12", "-8"], "Quantization parameters to try.")
flags.DEFINE_integer("train_steps", 400, "Float training steps.")


def main(argv: list[str]) -> None:
    del argv
    import onnx

    from nnlc import encoder
    from nnlc.zoo import digits

    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="nnlc-demo-")
    os.makedirs(workdir, exist_ok=True)
    print(f"[1/3] training a LeNet-style CNN on scikit-learn digits ({FLAGS.train_steps} steps)", flush=True)
    start = time.perf_counter()
    params, _ = digits.train_lenet(steps=FLAGS.train_steps, log_every=100)
    model = digits.export_lenet(params)
    original_path = os.path.join(workdir, "lenet_digits.onnx")
    onnx.save(model, original_path)
    _, _, x_test, y_test = digits.load_digits_split()
    base_accuracy = digits.onnx_accuracy(model, x_test, y_test)
    float_bytes = sum(v.nbytes for v in params.values())
    print(f"      float accuracy {base_accuracy:.4f}, {float_bytes} bytes of weights, {time.perf_counter() - start:.1f} s")
    rows = []
    print("[2/3] compressing (post-training) and decoding with the standalone decoder (nnlc-decode)", flush=True)
    for qp in map(int, FLAGS.qps):
        result = encoder.compress_model(model, qp=qp)
        bitstream_path = os.path.join(workdir, f"lenet_qp{qp}.nnlc")
        decoded_path = os.path.join(workdir, f"lenet_qp{qp}.onnx")
        with open(bitstream_path, "wb") as handle:
            handle.write(result.bitstream)
        subprocess.run([sys.executable, "-m", "nnlc.decoder", bitstream_path, "-o", decoded_path, "--quiet"], check=True)
        accuracy = digits.onnx_accuracy(onnx.load(decoded_path), x_test, y_test)
        rows.append((qp, result.total_bytes, accuracy))
    print("[3/3] summary (test split of digits, 450 images)")
    print(f"{'model':<14} {'bytes':>8} {'ratio':>7} {'bits/param':>10} {'accuracy':>9}")
    params_count = sum(v.size for v in params.values())
    print(f"{'float32':<14} {float_bytes:>8} {1.0:>7.1f} {32.0:>10.2f} {base_accuracy:>9.4f}")
    for qp, size, accuracy in rows:
        print(f"{'nnlc qp ' + str(qp):<14} {size:>8} {float_bytes / size:>7.1f} {8 * size / params_count:>10.2f} {accuracy:>9.4f}")
    print(f"files in {workdir}")


if __name__ == "__main__":
    app.run(main)
