"""`make demo`: the lenet5_digits experiment at one rate point, end to end, with a summary table.

Float training of a LeNet-style CNN on scikit-learn digits -> rate-distortion training (learned mode)
-> bitstream -> standalone decoder (`nnlc-decode`, in a subprocess) -> labelled accuracy; and, for
comparison, the post-training mode at a similar size and the calibrated mode (`nnlc compress
--calibrate`, transparent on a hold-out of unlabelled training images). About two minutes on 2 CPU cores.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where to write everything (default: a new temporary directory).")
flags.DEFINE_float("lmbda", 0.1, "Rate-distortion trade-off (loss = distortion + lmbda * bits/param).")
flags.DEFINE_integer("steps", 800, "Rate-distortion training steps.")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    import onnx

    from experiments.configs import lenet5_digits
    from nnlc import encoder
    from nnlc.training.loop import train_and_evaluate
    from nnlc.zoo import digits

    workdir = FLAGS.workdir or tempfile.mkdtemp(prefix="nnlc-demo-")
    config = lenet5_digits.get_config()
    config.lmbda, config.num_steps = FLAGS.lmbda, FLAGS.steps
    start = time.perf_counter()
    print(f"[1/3] float training, then {FLAGS.steps} steps of rate-distortion training (lmbda={FLAGS.lmbda})", flush=True)
    result = train_and_evaluate(config, workdir)
    print("[2/3] decoding the bitstream with the standalone decoder (nnlc-decode)", flush=True)
    decoded_path = os.path.join(workdir, "nnlc_decode.onnx")
    subprocess.run([sys.executable, "-m", "nnlc.decoder", os.path.join(workdir, "model.nnlc"), "-o", decoded_path,
                    "--quiet"], check=True)
    _, _, x_test, y_test = digits.load_digits_split()
    learned_accuracy = digits.onnx_accuracy(onnx.load(decoded_path), x_test, y_test)
    original = onnx.load(os.path.join(workdir, "original.onnx"))
    float_accuracy = digits.onnx_accuracy(original, x_test, y_test)
    print("[3/3] post-training mode at similar sizes, for comparison", flush=True)
    post = []
    for qp in (-16, -12):
        encoded = encoder.compress_model(original, qp=qp)
        from nnlc.decoder import decode_bitstream

        post.append((qp, encoded.total_bytes, digits.onnx_accuracy(decode_bitstream(encoded.bitstream), x_test, y_test)))
    print("      and the calibrated mode: 256 unlabelled training images, target=transparent on a hold-out",
          flush=True)
    import numpy as np

    from nnlc.calibrated.api import compress_calibrated
    from nnlc.calibrated.compress import CalibratedOptions
    from nnlc.calibration import CalibrationOptions

    x_train = digits.load_digits_split()[0]
    calibration_path = os.path.join(workdir, "calibration.npz")
    np.savez(calibration_path, **{original.graph.input[0].name: x_train})
    calibrated = compress_calibrated(original, calibration_path, CalibrationOptions(samples=256),
                                     CalibratedOptions(kind="classifier", quiet=True), target="transparent")
    calibrated_accuracy = digits.onnx_accuracy(decode_bitstream(calibrated.bitstream), x_test, y_test)
    float_bytes = result["float_bytes"]
    print(f"\nLeNet on scikit-learn digits (test split, {len(y_test)} images), {time.perf_counter() - start:.0f} s")
    print(f"{'model':<26} {'bytes':>7} {'ratio':>7} {'accuracy':>9}")
    print(f"{'float32 original':<26} {float_bytes:>7} {1.0:>6.1f}x {float_accuracy:>9.4f}")
    print(f"{'nnlc learned, lmbda=' + str(FLAGS.lmbda):<26} {result['bytes']:>7} {float_bytes / result['bytes']:>6.1f}x "
          f"{learned_accuracy:>9.4f}")
    for qp, size, accuracy in post:
        print(f"{'nnlc post-training qp=' + str(qp):<26} {size:>7} {float_bytes / size:>6.1f}x {accuracy:>9.4f}")
    print(f"{'nnlc calibrated (OPTQ)':<26} {calibrated.encoded.total_bytes:>7} "
          f"{float_bytes / calibrated.encoded.total_bytes:>6.1f}x {calibrated_accuracy:>9.4f}")
    print(f"\nworkdir: {workdir} (model.nnlc, decoded.onnx, metrics.jsonl, result.json)")


if __name__ == "__main__":
    app.run(main)
